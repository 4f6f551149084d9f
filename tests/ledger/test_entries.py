"""Double-entry postings: balanced, append-only, one hold and one settlement per task at the database."""

from __future__ import annotations

from decimal import Decimal
from unittest import mock

import pytest
from django.db import IntegrityError, transaction

from agents.models import Agent
from core.exceptions import InsufficientFunds
from ledger import entries
from ledger.models import Account, LedgerEntry
from tests.factories import submit

pytestmark = pytest.mark.django_db


def _settlement_legs(task, kind):
    escrow = entries.account_for_user(user_id=task.buyer_id, kind=Account.Kind.ESCROW)
    if kind == "payout":
        target = entries.account_for_agent(agent_id=task.agent_id)
    else:
        target = entries.account_for_user(user_id=task.buyer_id, kind=Account.Kind.BUYER)
    return [entries.Leg(escrow, -task.price, kind), entries.Leg(target, task.price, kind)]


@pytest.mark.parametrize(
    ("first", "second"), [("payout", "payout"), ("payout", "release"), ("release", "payout")]
)
def test_it_refuses_a_second_settlement_at_the_database(buyer, first, second):
    task = submit(buyer, complexity=2)
    # Enough in escrow for a second settlement, so only the unique constraint can refuse it.
    submit(buyer, complexity=2)
    with transaction.atomic():
        entries.post(legs=_settlement_legs(task, first), task_id=task.id)
    with pytest.raises(IntegrityError), transaction.atomic():
        entries.post(legs=_settlement_legs(task, second), task_id=task.id)
    assert LedgerEntry.objects.filter(task=task, kind__in=["payout", "release"], amount__lt=0).count() == 1


def test_it_refuses_a_second_hold_at_the_database(buyer):
    task = submit(buyer, complexity=2)
    legs = [
        entries.Leg(entries.account_for_user(user_id=buyer.pk, kind=Account.Kind.BUYER), -task.price, "hold"),
        entries.Leg(entries.account_for_user(user_id=buyer.pk, kind=Account.Kind.ESCROW), task.price, "hold"),
    ]
    with pytest.raises(IntegrityError), transaction.atomic():
        entries.post(legs=legs, task_id=task.id)


def test_it_refuses_an_unbalanced_posting(buyer):
    account = entries.account_for_user(user_id=buyer.pk, kind=Account.Kind.BUYER)
    with pytest.raises(ValueError, match="unbalanced"), transaction.atomic():
        entries.post(legs=[entries.Leg(account, Decimal("1"), "credit")])


def test_it_refuses_to_post_outside_a_transaction(buyer):
    account = entries.account_for_user(user_id=buyer.pk, kind=Account.Kind.BUYER)
    with mock.patch("ledger.entries.transaction.get_connection") as connection:
        connection.return_value.in_atomic_block = False
        with pytest.raises(RuntimeError):
            entries.post(legs=[entries.Leg(account, Decimal("0"), "credit")])


def test_it_writes_nothing_of_a_batch_when_one_posting_would_overdraw(buyer):
    escrow = entries.account_for_user(user_id=buyer.pk, kind=Account.Kind.ESCROW)
    available = entries.account_for_user(user_id=buyer.pk, kind=Account.Kind.BUYER)
    entry_count = LedgerEntry.objects.count()
    balance = Account.objects.get(pk=available.pk).balance
    with pytest.raises(InsufficientFunds), transaction.atomic():
        entries.post_many(
            postings=[
                # Each posting is checked after the ones before it: the second finds escrow empty again.
                entries.Posting(
                    [entries.Leg(available, -balance, "hold"), entries.Leg(escrow, balance, "hold")]
                ),
                entries.Posting(
                    [entries.Leg(available, -balance, "hold"), entries.Leg(escrow, balance, "hold")]
                ),
            ]
        )
    assert LedgerEntry.objects.count() == entry_count
    assert Account.objects.get(pk=available.pk).balance == balance


def test_it_creates_an_account_it_is_asked_to_lock_by_owner(buyer):
    agent = Agent.objects.create(name="new-agent", backend="openai", model="m", price_per_unit=Decimal("1"))
    key = entries.agent_key(agent_id=agent.pk)
    with transaction.atomic():
        locked = entries.lock([key, entries.user_key(user_id=buyer.pk, kind=Account.Kind.BUYER)])
    assert locked[key].agent_id == agent.pk and locked[key].balance == 0
    assert Account.objects.filter(agent=agent, kind=Account.Kind.AGENT).count() == 1
