"""Double-entry postings. Every posting is one transaction id whose entries sum to zero.

Callers are services that already hold a database transaction; these helpers lock the touched accounts
in id order (no deadlocks on PostgreSQL) and keep each account's cached balance in step with its entries.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction
from django.db.models import F

from aicp.exceptions import InsufficientFunds
from tasks.models import ZERO, Account, LedgerEntry, Task


@dataclass(frozen=True)
class Leg:
    account: Account
    amount: Decimal
    kind: str


def account_for_user(*, user_id: int, kind: str) -> Account:
    account, _ = Account.objects.get_or_create(kind=kind, user_id=user_id, agent=None)
    return account


def account_for_agent(*, agent_id: int) -> Account:
    account, _ = Account.objects.get_or_create(kind=Account.Kind.AGENT, agent_id=agent_id, user=None)
    return account


def platform_account(*, kind: str) -> Account:
    account, _ = Account.objects.get_or_create(kind=kind, user=None, agent=None)
    return account


def post(*, legs: Sequence[Leg], task: Task | None = None, memo: str = "") -> uuid.UUID:
    """Writes one balanced transaction. Raises InsufficientFunds if a non-funding account would go negative."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("ledger.post must run inside a database transaction")
    legs = [leg for leg in legs if leg.amount != 0]
    if sum((leg.amount for leg in legs), ZERO) != 0:
        raise ValueError(f"unbalanced posting: {[(leg.kind, leg.amount) for leg in legs]}")
    if not legs:
        return uuid.uuid4()
    account_ids = sorted({leg.account.pk for leg in legs})
    locked = {a.pk: a for a in Account.objects.select_for_update().filter(pk__in=account_ids).order_by("pk")}
    for leg in legs:
        account = locked[leg.account.pk]
        if leg.amount < 0 and account.kind != Account.Kind.FUNDING and account.balance + leg.amount < 0:
            raise InsufficientFunds(
                f"Available balance {account.balance} is less than the {-leg.amount} this needs.",
                fields={"balance": [str(account.balance)], "required": [str(-leg.amount)]},
            )
    transaction_id = uuid.uuid4()
    LedgerEntry.objects.bulk_create(
        LedgerEntry(
            transaction_id=transaction_id,
            account_id=leg.account.pk,
            amount=leg.amount,
            kind=leg.kind,
            task=task,
            memo=memo[:200],
        )
        for leg in legs
    )
    for leg in legs:
        Account.objects.filter(pk=leg.account.pk).update(balance=F("balance") + leg.amount)
    return transaction_id
