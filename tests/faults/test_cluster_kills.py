"""Kill -9 a worker mid-call, later the whole cluster; restart; every task ends once, paid at most once.

Exactly-once effects come from the database (conditional claims and settlements, unique ledger rows),
not from the queue: what a dead worker held goes back to pending when its lease runs out (the reaper),
and runs again.
"""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from django.db.models import Count, Q, Sum
from django.utils import timezone
from django_q.models import Schedule

from duke.models import TrainingData
from ledger.models import Account, LedgerEntry
from tasks.models import Task
from tests.factories import make_buyer, submit
from tests.faults.harness import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

LABELS = ["alpha", "beta", "gamma"]
LEASE_S = 5
CLUSTER_SETTINGS = {
    "AICP_TASK_LEASE_S": str(LEASE_S),
    "AICP_DRAINERS": "4",
    "AICP_LLM_CONCURRENCY": "4",
    "AICP_TASK_RETRY_DELAY_S": "0.2",
    "AICP_LLM_BACKOFF_S": "0.01",
}


def fire_reaper() -> None:
    """The reaper runs every minute on the cluster's scheduler; the harness makes it due now."""
    Schedule.objects.filter(name="reap-expired-leases").update(next_run=timezone.now())


def counts(task_ids: list) -> dict[str, int]:
    rows = Task.objects.filter(pk__in=task_ids).values("status").annotate(n=Count("id"))
    return {row["status"]: row["n"] for row in rows}


def wait_until_final(task_ids: list, timeout_s: float, cluster) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not Task.objects.filter(pk__in=task_ids).exclude(status__in=Task.FINAL_STATUSES).exists():
            return
        fire_reaper()
        time.sleep(1)
    raise AssertionError(f"not final after {timeout_s} s: {counts(task_ids)}\n{cluster.log()}")


def assert_settled_exactly_once(buyer, tasks: list[Task], start_balance: Decimal) -> dict[str, int]:
    ids = [task.id for task in tasks]
    per_task = {
        row["task"]: row
        for row in LedgerEntry.objects.filter(task__in=ids, amount__lt=0)
        .values("task")
        .annotate(
            holds=Count("id", filter=Q(kind="hold")),
            payouts=Count("id", filter=Q(kind="payout")),
            releases=Count("id", filter=Q(kind="release")),
        )
    }
    statuses = dict(Task.objects.filter(pk__in=ids).values_list("id", "status"))
    for task_id in ids:
        row = per_task[task_id]
        assert row["holds"] == 1, row
        if statuses[task_id] == Task.Status.COMPLETED:
            assert (row["payouts"], row["releases"]) == (1, 0), row
        else:
            assert (row["payouts"], row["releases"]) == (0, 1), row
    # No hold left dangling, and the buyer paid exactly the quotes of the completed tasks.
    assert Account.objects.get(user=buyer, kind=Account.Kind.ESCROW).balance == 0
    spent = Task.objects.filter(pk__in=ids, status=Task.Status.COMPLETED).aggregate(s=Sum("price"))["s"]
    assert Account.objects.get(user=buyer, kind=Account.Kind.BUYER).balance == start_balance - (spent or 0)
    return {
        "payouts": sum(row["payouts"] for row in per_task.values()),
        "releases": sum(row["releases"] for row in per_task.values()),
    }


def test_it_finishes_every_task_once_after_killing_a_worker_and_then_the_cluster(
    make_llm_simulator, start_cluster, broker_enqueue, settings, capsys
):
    settings.AICP_DRAINERS = 4
    simulator = make_llm_simulator(latency_ms=700)
    texts = [f"Fault drill text number {i}" for i in range(50)]
    expected = {text: LABELS[i % 3] for i, text in enumerate(texts[:40])}
    for text, label in expected.items():
        simulator.set_answer(text, label)
    cluster = start_cluster(simulator.base_url, workers=2, **CLUSTER_SETTINGS)
    buyer = make_buyer("fault-drill")
    start_balance = Account.objects.get(user=buyer, kind=Account.Kind.BUYER).balance
    started = time.monotonic()

    tasks = [submit(buyer, text, labels=LABELS if text in expected else None) for text in texts]
    ids = [task.id for task in tasks]

    # 1. SIGKILL one worker while it has calls in flight.
    calling = wait_for(
        lambda: cluster.workers_calling(simulator.port), 60, "a worker calling the LLM", cluster.log
    )
    running_at_worker_kill = counts(ids).get(Task.Status.RUNNING, 0)
    cluster.kill_worker(calling[0])

    # 2. Later, SIGKILL the whole cluster mid-run.
    wait_for(lambda: counts(ids).get(Task.Status.COMPLETED, 0) >= 15, 90, "15 completed tasks", cluster.log)
    before_cluster_kill = counts(ids)
    cluster.kill_all()
    assert before_cluster_kill.get(Task.Status.COMPLETED, 0) < len(ids), "the run ended before the kill"

    # 3. Restart; leases of the dead run out and the reaper gives their tasks back.
    restarted = start_cluster(simulator.base_url, workers=2, **CLUSTER_SETTINGS)
    wait_until_final(ids, 180, restarted)

    assert counts(ids) == {Task.Status.COMPLETED: 50}
    results = dict(Task.objects.filter(pk__in=ids).values_list("description", "result"))
    assert {text: results[text] for text in expected} == expected
    assert all(results[text].strip() for text in texts[40:])
    assert TrainingData.objects.filter(task_id__in=ids).count() == 50, "one sample per task"
    money = assert_settled_exactly_once(buyer, tasks, start_balance)
    figures = {
        "tasks": len(ids),
        "kills": cluster.kills,
        "running_at_worker_kill": running_at_worker_kill,
        "before_cluster_kill": before_cluster_kill,
        **money,
        "llm_requests": simulator.request_count,
        "seconds": round(time.monotonic() - started, 1),
    }
    with capsys.disabled():
        print(f"\nfault drill (kills): {figures}")
    assert money["payouts"] == 50
    assert simulator.request_count >= 50
