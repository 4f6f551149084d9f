"""The lease watchdog's one look (reap_once) and the drainer's heartbeat, in-process.

A real cluster runs both in tests/faults/test_recovery_time.py; here a drainer runs a call slower than two
leases while another thread plays the watchdog of another worker, looking every 0.2 s.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import close_old_connections
from django.utils import timezone

from tasks import queue
from tasks.execution.drainer import Drainer
from tasks.execution.watchdog import reap_once, start_lease_watchdog
from tasks.models import Task
from tasks.services.lifecycle import task_claim
from tests.factories import make_buyer, submit

LABELS = ["alpha", "beta"]


@pytest.mark.django_db
def test_one_look_requeues_only_leases_that_ran_out():
    buyer = make_buyer("watchdog-look")
    expired, live = (
        submit(buyer, "Held by a dead worker", labels=LABELS),
        submit(buyer, "Live", labels=LABELS),
    )
    for task in (expired, live):
        assert task_claim(task_id=task.id) is not None
    Task.objects.filter(pk=expired.id).update(lease_until=timezone.now() - timedelta(seconds=1))

    assert reap_once() == 1
    assert reap_once() == 0  # nothing else ran out: the live lease stays
    statuses = dict(Task.objects.filter(pk__in=[expired.id, live.id]).values_list("pk", "status"))
    assert statuses == {expired.id: Task.Status.PENDING, live.id: Task.Status.RUNNING}


def test_no_watchdog_thread_where_jobs_run_inline(settings):
    # Sync mode (tests, AICP_Q_SYNC=1) runs jobs in the caller, which is no queue worker to watch from.
    assert settings.Q_CLUSTER["sync"] is True
    assert start_lease_watchdog() is False
    assert not [t for t in threading.enumerate() if t.name == "aicp-lease-watchdog"]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_call_slower_than_two_leases_is_renewed_and_never_reaped(make_llm_simulator, settings, monkeypatch):
    simulator = make_llm_simulator(latency_ms=11_000)
    settings.OPENAI_BASE_URL = simulator.base_url
    settings.OPENAI_API_KEY = "test-key"
    settings.AICP_LLM_TIMEOUT_S = 30.0
    settings.AICP_TASK_LEASE_S = 5
    monkeypatch.setattr(queue, "async_task", lambda *args, **kwargs: None)  # the drainer below runs it
    buyer = make_buyer("heartbeat")
    simulator.set_answer("A slow but live call", "beta")
    task = submit(buyer, "A slow but live call", labels=LABELS)

    stop = threading.Event()
    requeued: list[int] = []

    def other_workers_watchdog() -> None:
        try:
            while not stop.wait(0.2):
                requeued.append(reap_once())
        finally:
            close_old_connections()

    watchdog = threading.Thread(target=other_workers_watchdog)
    watchdog.start()
    try:
        stats = Drainer(concurrency=1, task_ids=[task.id]).run()
    finally:
        stop.set()
        watchdog.join(timeout=30)

    task.refresh_from_db()
    assert task.status == Task.Status.COMPLETED and task.result == "beta"
    assert task.attempts == 1 and stats.completed == 1
    assert simulator.request_count == 1
    assert len(requeued) > 2 * 5 / 0.2 and sum(requeued) == 0  # it looked all along, and found nothing
