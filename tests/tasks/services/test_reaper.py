"""The lease reaper: a task whose worker died goes back to pending exactly once and then runs.

It runs on the django-q2 schedule that migration tasks/0003 creates; these tests fire that schedule,
in-process (sync mode) and in a real `manage.py qcluster`.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.models import Schedule
from django_q.scheduler import scheduler
from django_q.tasks import async_task

from ledger.models import LedgerEntry
from tasks.execution.slots import drain_slot_reserve
from tasks.models import Task
from tasks.services.lifecycle import task_claim, task_requeue_expired
from tests.factories import submit
from tests.faults.harness import cluster_env, running_cluster, wait_for

LABELS = ["alpha", "beta"]


def _claimed_by_a_dead_worker(buyer, text: str = "Abandoned mid-call") -> Task:
    task = submit(buyer, text, labels=LABELS)
    assert task_claim(task_id=task.id) is not None
    Task.objects.filter(pk=task.id).update(lease_until=timezone.now() - timedelta(seconds=1))
    return task


def _fire_reaper_schedule() -> None:
    Schedule.objects.filter(name="reap-expired-leases").update(next_run=timezone.now() - timedelta(seconds=1))


def _payouts(task: Task) -> int:
    return LedgerEntry.objects.filter(task=task, kind="payout", amount__lt=0).count()


@pytest.mark.django_db
def test_it_is_scheduled_every_minute_by_the_migration():
    schedule = Schedule.objects.get(name="reap-expired-leases")
    assert (schedule.func, schedule.schedule_type, schedule.minutes, schedule.repeats) == (
        "tasks.jobs.reap_expired_leases",
        Schedule.MINUTES,
        1,
        -1,
    )


@pytest.mark.django_db
def test_it_requeues_an_expired_lease_once_through_the_schedule_and_the_task_then_runs(
    buyer, llm_settings, django_capture_on_commit_callbacks
):
    task = _claimed_by_a_dead_worker(buyer)
    alive = submit(buyer, "Still being worked on", labels=LABELS)
    task_claim(task_id=alive.id)  # its lease is valid: its worker is alive
    _fire_reaper_schedule()
    with django_capture_on_commit_callbacks(execute=True):
        scheduler(broker=get_broker())
    task.refresh_from_db()
    alive.refresh_from_db()
    assert task.status == Task.Status.COMPLETED and task.attempts == 2
    assert _payouts(task) == 1
    assert (alive.status, alive.attempts) == (Task.Status.RUNNING, 1)
    assert llm_settings.request_count == 1
    # The next run finds nothing to do; the schedule stays for the next minute.
    assert task_requeue_expired() == []
    assert Schedule.objects.get(name="reap-expired-leases").next_run > timezone.now()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_it_requeues_each_expired_lease_once_when_two_reapers_race():
    from tests.factories import make_buyer

    # Both drainer slots busy: the submissions below enqueue no drainer that would run the tasks.
    while drain_slot_reserve(slots=settings.AICP_DRAINERS, ttl_s=600) is not None:
        pass
    buyer = make_buyer("racing-reapers")
    tasks = [_claimed_by_a_dead_worker(buyer, f"Abandoned {i}") for i in range(20)]
    barrier = threading.Barrier(2)
    results: list[list] = []

    def reap() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(task_requeue_expired())
        finally:
            connection.close()

    threads = [threading.Thread(target=reap) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    first, second = results
    assert not set(first) & set(second)
    assert sorted(first + second) == sorted(t.id for t in tasks)
    assert set(Task.objects.values_list("status", "attempts")) == {(Task.Status.PENDING, 1)}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_it_requeues_an_expired_lease_in_a_real_cluster(llm_settings, monkeypatch, tmp_path):
    from django_q.conf import Conf

    from tests.factories import make_buyer

    monkeypatch.setattr(Conf, "SYNC", False)  # enqueue to the broker the cluster reads
    buyer = make_buyer("reaped-in-a-cluster")
    task = _claimed_by_a_dead_worker(buyer)
    log_path = tmp_path / "qcluster.log"
    with running_cluster(cluster_env(llm_settings.base_url), log_path):
        # What the schedule does every minute (its firing is django-q2's scheduler, tested in-process
        # above): put the reaper job on the queue the cluster reads.
        async_task("tasks.jobs.reap_expired_leases")

        def completed() -> bool:
            task.refresh_from_db()
            return task.status == Task.Status.COMPLETED

        wait_for(
            completed, 60, "the reaped task to complete", lambda: log_path.read_text(errors="replace")[-3000:]
        )
    log = log_path.read_text(errors="replace")
    assert task.status == Task.Status.COMPLETED, log[-3000:]
    assert task.attempts == 2 and _payouts(task) == 1
    assert log.count("Reaper re-queued 1 task(s) whose lease expired") == 1
    assert llm_settings.request_count == 1
