"""Settling many tasks in one transaction (task_complete_many, ledger.entries.post_many): the same effects
as one by one, every task paid once, money summing to zero, and the drainer falling back when a batch
fails."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db.models import Count, Sum

from agents.models import Agent
from duke.models import TrainingData
from ledger.models import Account, LedgerEntry
from tasks.execution.drainer import Drainer
from tasks.models import Task
from tasks.services.lifecycle import Completion, Outcome, task_claim, task_complete, task_complete_many
from tests.factories import make_buyer, submit

pytestmark = pytest.mark.django_db

AGENT = "openai-gpt-4o-mini"


def _running(buyer, count: int, **kwargs) -> list[Task]:
    tasks = [submit(buyer, f"Batch item {i}", **kwargs) for i in range(count)]
    for task in tasks:
        task_claim(task_id=task.id)
    return tasks


def _payouts(tasks: list[Task]) -> dict:
    return dict(
        LedgerEntry.objects.filter(task__in=tasks, kind="payout", amount__lt=0)
        .values_list("task_id")
        .annotate(n=Count("id"))
    )


def test_it_completes_a_batch_once_skipping_final_and_repeated_tasks(buyer):
    first, second, third = _running(buyer, 3)
    assert task_complete(task_id=second.id, outcome=Outcome(result="earlier"))
    agent = Agent.objects.get(name=AGENT)
    successes, earnings = agent.success_count, agent.earnings

    results = task_complete_many(
        completions=[
            Completion(first.id, Outcome(result="one")),
            Completion(second.id, Outcome(result="late")),  # already final: changes nothing
            Completion(third.id, Outcome(result="three", prompt_tokens=7, latency_ms=12)),
            Completion(first.id, Outcome(result="again")),  # listed twice: completes once
        ]
    )

    assert results == [True, False, True, False]
    assert {t.pk: 1 for t in (first, second, third)} == _payouts([first, second, third])
    assert Task.objects.get(pk=first.pk).result == "one"
    assert Task.objects.get(pk=second.pk).result == "earlier"
    third.refresh_from_db()
    assert (third.status, third.result, third.prompt_tokens, third.latency_ms) == (
        "completed",
        "three",
        7,
        12,
    )
    agent.refresh_from_db()
    assert agent.success_count == successes + 2
    assert agent.earnings == earnings + first.price + third.price
    assert Account.objects.get(user=buyer, kind=Account.Kind.ESCROW).balance == 0
    assert TrainingData.objects.filter(task_id__in=[first.id, third.id]).count() == 2


def test_it_pays_each_executor_and_the_fee_of_a_batch_across_buyers(buyer, settings):
    settings.AICP_PLATFORM_FEE = Decimal("0.1")
    other = make_buyer("second-batch-buyer")
    mine, theirs = _running(buyer, 2), _running(other, 2)
    duke = Agent.objects.get(backend=Agent.Backend.DUKE)
    completions = [Completion(t.id, Outcome(result="ok")) for t in mine + theirs]
    completions[1] = Completion(mine[1].id, Outcome(result="ok", confidence=0.9), executed_by_id=duke.pk)

    assert task_complete_many(completions=completions) == [True] * 4

    tasks = mine + theirs
    fee = sum((t.price * Decimal("0.1") for t in tasks), Decimal(0)).quantize(Decimal("0.0001"))
    revenue = Account.objects.get(kind=Account.Kind.PLATFORM_REVENUE).balance
    assert revenue == fee
    agent_total = sum((t.price for t in tasks if t.pk != mine[1].pk), Decimal(0))
    llm = Account.objects.get(agent__name=AGENT).balance
    assert llm == agent_total - agent_total * Decimal("0.1")
    assert Account.objects.get(agent=duke).balance == mine[1].price * Decimal("0.9")
    assert Task.objects.get(pk=mine[1].pk).executed_by_id == duke.pk
    # Duke's own answer is never a training sample; the LLM's three are.
    assert set(TrainingData.objects.values_list("task_id", flat=True)) == {t.id for t in tasks} - {mine[1].id}
    for user in (buyer, other):
        assert Account.objects.get(user=user, kind=Account.Kind.ESCROW).balance == 0
    # Every transaction of the batch balances on its own.
    per_transaction = LedgerEntry.objects.values("transaction_id").annotate(total=Sum("amount"))
    assert {row["total"] for row in per_transaction} == {Decimal(0)}


def test_it_settles_one_by_one_when_settling_the_batch_together_fails(
    buyer, settings, make_llm_simulator, monkeypatch
):
    simulator = make_llm_simulator(latency_ms=50)
    settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = simulator.base_url, "test-key"
    tasks = [submit(buyer, f"Fallback item {i}") for i in range(12)]
    batches = []

    def broken_batch(**kwargs):
        batches.append(len(kwargs["completions"]))
        raise RuntimeError("bulk insert refused")

    monkeypatch.setattr("tasks.execution.settle.task_complete_many", broken_batch)
    stats = Drainer(concurrency=12).run()

    assert batches and max(batches) > 1  # the batch path was tried, and its failure rolled back
    assert stats.completed == 12 and stats.duplicates == 0
    assert set(Task.objects.filter(buyer=buyer).values_list("status", flat=True)) == {"completed"}
    assert _payouts(tasks) == {t.pk: 1 for t in tasks}
    assert Account.objects.get(user=buyer, kind=Account.Kind.ESCROW).balance == 0
