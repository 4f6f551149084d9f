from decimal import Decimal

import pytest

from agents.models import Agent
from duke.models import TrainingData
from ledger.models import Account, LedgerEntry
from tasks.models import Task
from tasks.services.lifecycle import Outcome, task_claim, task_complete, task_fail, task_requeue_expired
from tests.factories import submit

pytestmark = pytest.mark.django_db


def _balance(user, kind):
    return Account.objects.get(user=user, kind=kind).balance


def test_it_holds_the_quote_in_escrow_at_submission(buyer):
    task = submit(buyer, complexity=3)
    assert task.price == Decimal("0.0600")
    assert _balance(buyer, Account.Kind.BUYER) == Decimal("99.9400")
    assert _balance(buyer, Account.Kind.ESCROW) == Decimal("0.0600")


def test_it_claims_a_task_once(buyer):
    task = submit(buyer)
    assert task_claim(task_id=task.id) is not None
    assert task_claim(task_id=task.id) is None
    task.refresh_from_db()
    assert task.status == Task.Status.RUNNING and task.attempts == 1 and task.lease_until is not None


def test_it_completes_pays_the_agent_and_records_a_sample(buyer):
    task = submit(buyer, labels=["a", "b"], task_type="t")
    task_claim(task_id=task.id)
    assert task_complete(task_id=task.id, outcome=Outcome(result="a", latency_ms=5))
    task.refresh_from_db()
    agent = Agent.objects.get(name="openai-gpt-4o-mini")
    assert task.status == Task.Status.COMPLETED and task.result == "a" and task.executed_by == agent
    assert _balance(buyer, Account.Kind.ESCROW) == 0
    assert agent.success_count == 1 and agent.earnings == task.price
    sample = TrainingData.objects.get(task_id=task.id)
    assert sample.output == "a" and sample.labels == ["a", "b"] and sample.split in {"train", "validation"}


def test_it_pays_once_when_completion_runs_twice(buyer):
    task = submit(buyer)
    task_claim(task_id=task.id)
    assert task_complete(task_id=task.id, outcome=Outcome(result="x"))
    assert not task_complete(task_id=task.id, outcome=Outcome(result="y"))
    assert not task_fail(task_id=task.id, error="late failure")
    assert LedgerEntry.objects.filter(task=task, kind="payout").count() == 2
    task.refresh_from_db()
    assert task.result == "x"


def test_it_fails_releases_the_hold_and_counts_against_the_agent(buyer):
    task = submit(buyer)
    task_claim(task_id=task.id)
    assert task_fail(task_id=task.id, error="boom", error_code="auth")
    assert _balance(buyer, Account.Kind.BUYER) == Decimal("100.0000")
    assert _balance(buyer, Account.Kind.ESCROW) == 0
    assert Agent.objects.get(name="openai-gpt-4o-mini").failure_count == 1
    assert not TrainingData.objects.filter(task_id=task.id).exists()


def test_it_stores_free_form_results_as_samples_too(buyer):
    task = submit(buyer, "Write a haiku")
    task_claim(task_id=task.id)
    task_complete(task_id=task.id, outcome=Outcome(result="An old silent pond"))
    assert TrainingData.objects.get(task_id=task.id).labels is None


def test_it_requeues_an_expired_lease_exactly_once(buyer):
    from django.utils import timezone

    task = submit(buyer)
    task_claim(task_id=task.id)
    Task.objects.filter(pk=task.id).update(lease_until=timezone.now() - timezone.timedelta(seconds=1))
    assert task_requeue_expired() == [task.id]
    assert task_requeue_expired() == []
    task.refresh_from_db()
    assert task.status == Task.Status.PENDING


def test_every_ledger_transaction_sums_to_zero(buyer):
    from django.db.models import Sum

    for outcome in ["ok", "fail"]:
        task = submit(buyer)
        task_claim(task_id=task.id)
        if outcome == "ok":
            task_complete(task_id=task.id, outcome=Outcome(result="r"))
        else:
            task_fail(task_id=task.id, error="e")
    sums = LedgerEntry.objects.values("transaction_id").annotate(total=Sum("amount"))
    assert sums and all(row["total"] == 0 for row in sums)
    for account in Account.objects.all():
        assert account.balance == sum((entry.amount for entry in account.entries.all()), Decimal(0))
