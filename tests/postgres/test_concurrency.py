"""What only a real multi-connection database proves: money and watermarks under simultaneous writers.

Every test here runs its writers on separate PostgreSQL connections released by one barrier, so they
really contend for the same rows; `transaction=True` makes the rows they see committed ones.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from django.db.models import Sum

from agents.pricing import quote
from agents.selectors import agent_default_llm
from core.exceptions import InsufficientFunds
from duke.models import SampleCounter, TrainingData, TrainingTrigger
from duke.services import sample_record
from ledger.models import Account, LedgerEntry
from ledger.services import buyer_credit
from tasks.models import Task
from tasks.services.lifecycle import Outcome, task_complete
from tasks.services.submission import TaskRequest, task_submit
from tests.factories import authenticated_client, make_buyer
from tests.postgres.threads import run_concurrently

# serialized_rollback: the flush between transactional tests would otherwise drop the seeded agents.
pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


@pytest.fixture
def enqueued(monkeypatch) -> list:
    """Records execution jobs instead of running them inline, so only submission touches the money."""
    jobs: list = []
    monkeypatch.setattr("tasks.queue.enqueue_execution", lambda task_id, **kwargs: jobs.append(task_id))
    monkeypatch.setattr("tasks.queue.enqueue_executions", jobs.extend)
    return jobs


def _account(user, kind: str) -> Account:
    return Account.objects.get(user=user, kind=kind)


def _ledger_sum(account: Account) -> Decimal:
    return LedgerEntry.objects.filter(account=account).aggregate(total=Sum("amount"))["total"] or Decimal(0)


def test_it_never_overspends_one_balance_from_50_threads(settings, enqueued):
    settings.AICP_SIGNUP_CREDIT = Decimal("0")
    settings.AICP_DAILY_SPEND_CAP = None
    buyer = make_buyer("spender")
    agent = agent_default_llm()
    price = quote(
        price_per_unit=agent.price_per_unit,
        complexity=3,
        success_count=agent.success_count,
        failure_count=agent.failure_count,
    )
    affordable = 20
    # Room for 20 tasks and half of a 21st: exactly 20 of the 50 may succeed.
    buyer_credit(user_id=buyer.pk, amount=price * affordable + price / 2)

    def spend(index: int) -> Task:
        return task_submit(buyer=buyer, request=TaskRequest(description=f"Task {index}", complexity=3))

    results = run_concurrently(spend, 50)

    succeeded = [r for r in results if isinstance(r, Task)]
    refused = [r for r in results if isinstance(r, InsufficientFunds)]
    unexpected = [r for r in results if not isinstance(r, Task | InsufficientFunds)]
    assert unexpected == []
    assert (len(succeeded), len(refused)) == (affordable, 50 - affordable)
    assert all(task.price == price for task in succeeded)
    available, escrow = _account(buyer, Account.Kind.BUYER), _account(buyer, Account.Kind.ESCROW)
    assert available.balance == price / 2
    assert escrow.balance == price * affordable
    # The cached balances are exactly the sums of their append-only entries.
    assert _ledger_sum(available) == available.balance
    assert _ledger_sum(escrow) == escrow.balance
    assert Task.objects.filter(buyer=buyer).count() == affordable
    assert LedgerEntry.objects.filter(account=available, kind="hold").count() == affordable
    assert sorted(enqueued) == sorted(task.id for task in succeeded)


def test_it_creates_one_task_for_20_concurrent_submissions_with_one_key(enqueued):
    buyer = make_buyer("retrier")
    before = _account(buyer, Account.Kind.BUYER).balance
    body = {"description": "Translate 'bonjour' into English.", "complexity": 2}

    def post(index: int):
        client = authenticated_client(buyer)
        return client.post("/tasks", body, format="json", HTTP_IDEMPOTENCY_KEY="order-7731")

    responses = run_concurrently(post, 20)

    assert [r for r in responses if isinstance(r, BaseException)] == []
    assert [r.status_code for r in responses] == [201] * 20, [r.content[:200] for r in responses]
    bodies = [r.json() for r in responses]
    assert all(b == bodies[0] for b in bodies), "every replay returns the first response"
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == 19
    task = Task.objects.get(buyer=buyer)
    assert str(task.id) == bodies[0]["id"]
    assert LedgerEntry.objects.filter(task=task, kind="hold", amount__lt=0).count() == 1
    assert _account(buyer, Account.Kind.BUYER).balance == before - task.price
    assert enqueued == [task.id]


def test_it_pays_once_when_20_workers_complete_the_same_task(enqueued):
    buyer = make_buyer("payer")
    task = task_submit(buyer=buyer, request=TaskRequest(description="Say hello.", complexity=1))
    Task.objects.filter(pk=task.pk).update(status=Task.Status.RUNNING)

    def complete(index: int) -> bool:
        return task_complete(task_id=task.id, outcome=Outcome(result=f"answer from worker {index}"))

    results = run_concurrently(complete, 20)

    assert sorted(results, key=str) == [False] * 19 + [True]
    task.refresh_from_db()
    assert task.status == Task.Status.COMPLETED
    winner = results.index(True)
    assert task.result == f"answer from worker {winner}"
    assert LedgerEntry.objects.filter(task=task, kind="payout", amount__gt=0).count() == 1
    assert _account(buyer, Account.Kind.ESCROW).balance == 0
    agent = agent_default_llm()
    agent.refresh_from_db()
    assert agent.success_count == 1
    assert TrainingData.objects.filter(task_id=task.id).count() == 1


def test_it_triggers_exactly_one_training_per_watermark_under_concurrent_samples(settings, monkeypatch):
    settings.DUKE_TRAIN_EVERY = 10
    settings.DUKE_ENCODE_ON_RECORD = False
    trainings: list = []
    monkeypatch.setattr("duke.queue.enqueue_training", lambda *args, **kwargs: trainings.append(1))

    def record(index: int) -> TrainingData | None:
        return sample_record(
            task_id=uuid.uuid4(),
            text=f"sample text {index}",
            task_type="sentiment",
            complexity=1,
            labels=["positive", "negative"],
            output="positive" if index % 2 else "negative",
        )

    results = run_concurrently(record, 50)

    assert [r for r in results if not isinstance(r, TrainingData)] == []
    assert TrainingData.objects.count() == 50
    assert SampleCounter.objects.get().samples == 50
    assert sorted(TrainingTrigger.objects.values_list("sample_ordinal", flat=True)) == [10, 20, 30, 40, 50]
    assert len(trainings) == 5


def test_it_records_one_sample_when_the_same_task_is_recorded_concurrently(settings, monkeypatch):
    settings.DUKE_TRAIN_EVERY = 1
    settings.DUKE_ENCODE_ON_RECORD = False
    trainings: list = []
    monkeypatch.setattr("duke.queue.enqueue_training", lambda *args, **kwargs: trainings.append(1))
    task_id = uuid.uuid4()

    def record(index: int) -> TrainingData | None:
        return sample_record(
            task_id=task_id,
            text="one text",
            task_type="sentiment",
            complexity=1,
            labels=["positive", "negative"],
            output="positive",
        )

    results = run_concurrently(record, 20)

    assert [r for r in results if isinstance(r, BaseException)] == []
    assert sum(isinstance(r, TrainingData) for r in results) == 1
    assert TrainingData.objects.filter(task_id=task_id).count() == 1
    assert SampleCounter.objects.get().samples == 1
    assert TrainingTrigger.objects.count() == 1
    assert len(trainings) == 1
