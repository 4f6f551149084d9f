"""`manage.py credit USERNAME AMOUNT [--memo TEXT]`: an operator adds money to a buyer's available balance."""

from __future__ import annotations

from argparse import ArgumentParser
from decimal import Decimal, InvalidOperation
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from core.exceptions import DomainError
from core.money import plain
from ledger.models import Account
from ledger.selectors import balance_for
from ledger.services import buyer_credit


class Command(BaseCommand):
    help = "Credit a buyer's available balance (money entering the system, recorded in the ledger)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("username", help="The buyer to credit.")
        parser.add_argument("amount", help="Positive, at most 4 decimal places, e.g. 25.50")
        parser.add_argument("--memo", default="operator credit", help="Stored on the ledger entries.")

    def handle(self, *args: Any, **options: Any) -> None:
        username: str = options["username"]
        raw_amount: str = options["amount"]
        try:
            amount = Decimal(raw_amount.strip())
        except InvalidOperation:
            raise CommandError(f"{raw_amount!r} is not a decimal amount (e.g. 25 or 12.50).") from None
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        try:
            buyer_credit(user_id=user.pk, amount=amount, memo=f"{options['memo']} (manage.py credit)"[:200])
        except DomainError as exc:
            raise CommandError(exc.message) from None
        balance = balance_for(user_id=user.pk, kind=Account.Kind.BUYER)
        self.stdout.write(
            self.style.SUCCESS(f"Credited {plain(amount, 4)} to {username}; available: {plain(balance, 4)}.")
        )
