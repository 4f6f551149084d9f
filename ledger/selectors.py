"""Reads on money."""

from __future__ import annotations

from decimal import Decimal

from ledger.models import ZERO, Account


def balance_for(*, user_id: int, kind: str) -> Decimal:
    account = Account.objects.filter(kind=kind, user_id=user_id).only("balance").first()
    return account.balance if account else ZERO
