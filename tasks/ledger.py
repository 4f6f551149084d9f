"""Double-entry postings. Every posting is one transaction id whose entries sum to zero.

Callers are services that already hold a database transaction; these helpers lock the touched accounts
in id order (no deadlocks on PostgreSQL) and keep each account's cached balance in step with its entries.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction
from django.db.models import Case, IntegerField, Value, When

from aicp.exceptions import InsufficientFunds
from tasks.models import ZERO, Account, LedgerEntry, Task

CENT_HUNDREDTH = Decimal("0.0001")


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


def lock_accounts(accounts: Sequence[Account]) -> dict[int, Account]:
    """Locks accounts in the one global order every locker uses; returns the fresh, locked rows.

    The order is a buyer's accounts, then agents', then the platform's (each by id), not plain id order:
    a Duke-served submission holds (buyer accounts) and then pays (agent, platform) in one transaction,
    while a worker pays the same buyer's other task (escrow, agent, platform). With plain id order, an
    agent account older than the buyer's would be locked first by one and last by the other, and
    PostgreSQL would abort one of them as a deadlock.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("ledger.lock_accounts must run inside a database transaction")
    rank = Case(
        When(user__isnull=False, then=Value(0)),
        When(agent__isnull=False, then=Value(1)),
        default=Value(2),
        output_field=IntegerField(),
    )
    rows = (
        Account.objects.select_for_update()
        .filter(pk__in={account.pk for account in accounts})
        .annotate(lock_rank=rank)
        .order_by("lock_rank", "pk")
    )
    return {account.pk: account for account in rows}


def post(*, legs: Sequence[Leg], task: Task | None = None, memo: str = "") -> uuid.UUID:
    """Writes one balanced transaction; InsufficientFunds if a non-funding account would go negative."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("ledger.post must run inside a database transaction")
    for leg in legs:
        if (
            not isinstance(leg.amount, Decimal)
            or not leg.amount.is_finite()
            or leg.amount != leg.amount.quantize(CENT_HUNDREDTH)
        ):
            raise ValueError(f"ledger amounts are finite Decimals with at most 4 places, got {leg.amount!r}")
    legs = [leg for leg in legs if leg.amount != 0]
    if sum((leg.amount for leg in legs), ZERO) != 0:
        raise ValueError(f"unbalanced posting: {[(leg.kind, leg.amount) for leg in legs]}")
    if not legs:
        return uuid.uuid4()
    locked = lock_accounts([leg.account for leg in legs])
    deltas: dict[int, Decimal] = defaultdict(lambda: ZERO)
    for leg in legs:
        deltas[leg.account.pk] += leg.amount
    for account_id, delta in deltas.items():
        account = locked[account_id]
        if delta < 0 and account.kind != Account.Kind.FUNDING and account.balance + delta < 0:
            raise InsufficientFunds(
                f"Available balance {account.balance} is less than the {-delta} this needs.",
                fields={"balance": [str(account.balance)], "required": [str(-delta)]},
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
    # The new balance is computed here in Decimal from the locked row, not as `balance + x` in SQL: SQLite
    # has no decimal type and would add binary floats (0.06 - 0.054 - 0.006 < 0 there).
    for account_id, delta in deltas.items():
        Account.objects.filter(pk=account_id).update(balance=locked[account_id].balance + delta)
    return transaction_id
