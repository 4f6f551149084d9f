"""Writes on money: credits, holds, payouts and releases, as balanced postings (ledger.entries).

A task is named by its id and its price; nothing here imports tasks. Callers hold the transaction of
the task change the money goes with, so the two commit or roll back together.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from agents.pricing import quantize_money
from core.exceptions import DomainError, NotFound
from core.money import plain
from ledger import entries
from ledger.entries import AccountKey, Leg, Posting
from ledger.models import Account

# A typo guard, not a business limit: nobody means to add a billion in one credit.
MAX_CREDIT = Decimal("1000000000")


def _valid_credit_amount(amount: Decimal) -> Decimal:
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise DomainError(f"{amount!r} is not a decimal amount.", code="invalid_amount")
    if amount <= 0:
        raise DomainError(f"A credit must be a positive amount, got {plain(amount)}.", code="invalid_amount")
    if quantize_money(amount) != amount:
        # Rounding would silently credit something other than what the operator typed.
        raise DomainError(f"{plain(amount)} has more than 4 decimal places.", code="invalid_amount")
    if amount > MAX_CREDIT:
        raise DomainError(
            f"{plain(amount)} is more than the {MAX_CREDIT} a single credit may add.", code="invalid_amount"
        )
    return quantize_money(amount)


@transaction.atomic
def buyer_credit(*, user_id: int, amount: Decimal, memo: str = "operator credit") -> uuid.UUID:
    """Money enters the system: the funding account pays the buyer's available balance."""
    amount = _valid_credit_amount(amount)
    # The user model by setting, not by import: users build on the ledger (sign-up credit), not back.
    if not get_user_model().objects.filter(pk=user_id).exists():
        raise NotFound(f"No user with id {user_id}.", code="user_not_found")
    return entries.post(
        legs=[
            Leg(entries.platform_account(kind=Account.Kind.FUNDING), -amount, "credit"),
            Leg(entries.account_for_user(user_id=user_id, kind=Account.Kind.BUYER), amount, "credit"),
        ],
        memo=memo,
    )


@transaction.atomic
def buyer_accounts_open(*, user_id: int) -> None:
    """A new buyer's available balance and escrow, so the first submission finds them."""
    entries.account_for_user(user_id=user_id, kind=Account.Kind.BUYER)
    entries.account_for_user(user_id=user_id, kind=Account.Kind.ESCROW)


def buyer_accounts_lock(*, user_id: int) -> None:
    """Locks the buyer's accounts until the transaction ends: serialises this buyer's money changes."""
    entries.lock_accounts(
        [
            entries.account_for_user(user_id=user_id, kind=Account.Kind.BUYER),
            entries.account_for_user(user_id=user_id, kind=Account.Kind.ESCROW),
        ]
    )


def hold_keys(buyer_id: int) -> tuple[AccountKey, AccountKey]:
    """The buyer's available balance and escrow: where a hold takes the quote from and puts it."""
    return (
        entries.user_key(user_id=buyer_id, kind=Account.Kind.BUYER),
        entries.user_key(user_id=buyer_id, kind=Account.Kind.ESCROW),
    )


def hold_posting(
    *, accounts: dict[AccountKey, Account], buyer_id: int, task_id: uuid.UUID, price: Decimal
) -> Posting:
    """The quote moved from the buyer's available balance to escrow; ``accounts``: locked ``hold_keys``."""
    available_key, escrow_key = hold_keys(buyer_id)
    return Posting(
        [Leg(accounts[available_key], -price, "hold"), Leg(accounts[escrow_key], price, "hold")],
        task_id,
        f"hold for task {task_id}",
    )


def fee(price: Decimal) -> Decimal:
    """The platform's cut of a payout (AICP_PLATFORM_FEE, a fraction of the price)."""
    return quantize_money(price * settings.AICP_PLATFORM_FEE) if settings.AICP_PLATFORM_FEE else Decimal(0)


def payout_keys(*, buyer_id: int, agent_id: int, price: Decimal) -> list[AccountKey]:
    keys = [
        entries.user_key(user_id=buyer_id, kind=Account.Kind.ESCROW),
        entries.agent_key(agent_id=agent_id),
    ]
    if fee(price):
        keys.append(entries.platform_key(kind=Account.Kind.PLATFORM_REVENUE))
    return keys


def payout_posting(
    *,
    accounts: dict[AccountKey, Account],
    buyer_id: int,
    agent_id: int,
    task_id: uuid.UUID,
    price: Decimal,
) -> tuple[Posting, Decimal]:
    """Settles the hold to the executing agent (less the platform fee): the posting, what the agent earned.

    ``accounts``: the locked accounts of ``payout_keys``.
    """
    cut = fee(price)
    earned = price - cut
    escrow = accounts[entries.user_key(user_id=buyer_id, kind=Account.Kind.ESCROW)]
    legs = [
        Leg(escrow, -earned, "payout"),
        Leg(accounts[entries.agent_key(agent_id=agent_id)], earned, "payout"),
    ]
    if cut:
        legs += [
            Leg(escrow, -cut, "fee"),
            Leg(accounts[entries.platform_key(kind=Account.Kind.PLATFORM_REVENUE)], cut, "fee"),
        ]
    return Posting(legs, task_id, f"payout for task {task_id}"), earned


def hold_release(*, buyer_id: int, task_id: uuid.UUID, price: Decimal) -> None:
    """A failed task's hold goes back from escrow to the buyer's available balance."""
    escrow_key = entries.user_key(user_id=buyer_id, kind=Account.Kind.ESCROW)
    available_key = entries.user_key(user_id=buyer_id, kind=Account.Kind.BUYER)
    locked = entries.lock([escrow_key, available_key])
    entries.post(
        legs=[
            Leg(locked[escrow_key], -price, "release"),
            Leg(locked[available_key], price, "release"),
        ],
        task_id=task_id,
        memo=f"release for task {task_id}",
        locked=locked.values(),
    )
