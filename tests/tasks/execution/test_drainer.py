"""The drainer (tasks.execution.drainer): many calls in flight, retries, limits, the breaker, exactly-once
effects.

Tasks are submitted inside the test transaction, so their on-commit enqueue never fires: they wait as
pending, and the test runs a drainer over them against the simulator with the real openai client.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import Count
from django.utils import timezone
from django_q.models import Schedule

from agents.models import Agent, CircuitBreakerState
from agents.ratelimit import limiter_from_settings
from agents.simulator import Answer, Delay, Drop, Fault
from duke.models import TrainingData
from ledger.models import Account, LedgerEntry
from tasks import queue
from tasks.execution.drainer import Drainer
from tasks.execution.single import run_task
from tasks.execution.slots import drain_slot_acquire, drain_slot_reserve
from tasks.models import DrainSlot, Task
from tests.factories import submit

LABELS = ["sports", "politics", "science"]
AGENT = "openai-gpt-4o-mini"


@pytest.fixture
def simulator(settings, make_llm_simulator):
    simulator = make_llm_simulator(latency_ms=300)
    settings.OPENAI_BASE_URL = simulator.base_url
    settings.OPENAI_API_KEY = "test-key"
    settings.AICP_LLM_TIMEOUT_S = 5.0
    settings.AICP_LLM_BACKOFF_S = 0.01
    settings.AICP_TASK_RETRY_DELAY_S = 0.0
    return simulator


def _submit_many(buyer, count: int) -> list[Task]:
    return [submit(buyer, f"Item number {i} for the batch", labels=LABELS) for i in range(count)]


def _assert_settled_once(tasks: list[Task]) -> None:
    """Every task is final with exactly one settlement out of escrow: a payout or a release, never both."""
    ids = [t.id for t in tasks]
    assert not Task.objects.filter(pk__in=ids).exclude(status__in=Task.FINAL_STATUSES).exists()
    settlements = dict(
        LedgerEntry.objects.filter(task_id__in=ids, kind__in=["payout", "release"], amount__lt=0)
        .values_list("task_id")
        .annotate(n=Count("id"))
    )
    assert settlements == {task_id: 1 for task_id in ids}
    for task in Task.objects.filter(pk__in=ids):
        kinds = set(task.ledger_entries.filter(amount__lt=0).values_list("kind", flat=True))
        assert kinds == ({"hold", "payout"} if task.status == Task.Status.COMPLETED else {"hold", "release"})


@pytest.mark.django_db
def test_it_completes_a_batch_where_some_calls_fail_and_some_time_out(buyer, simulator, settings):
    # A 300 ms answer must never pass for a timeout on a loaded 2-core box: 1.5 s of headroom.
    settings.AICP_LLM_TIMEOUT_S = 1.8
    settings.AICP_BREAKER_FAILURES = 1000  # the breaker has its own test; here every retry must go out
    tasks = _submit_many(buyer, 40)
    simulator.script(
        Fault(500),
        Delay(4.0),  # a timeout
        Fault(429, code="rate_limit_exceeded", retry_after=0.05),
        Fault(400, message="Unsupported parameter"),  # permanent: this task fails, refunded
        Drop(),
        Fault(503),
        Delay(4.0),
        Answer('{"label": "cooking"}'),  # not one of the labels: asked again
        Fault(400, message="Unsupported parameter"),
        Delay(4.0),
        Fault(500),
        Drop(),
    )
    stats = Drainer(concurrency=16).run()

    _assert_settled_once(tasks)
    statuses = dict(Task.objects.filter(buyer=buyer).values_list("status").annotate(n=Count("id")))
    assert statuses == {"completed": 38, "failed": 2}
    failed = Task.objects.filter(buyer=buyer, status=Task.Status.FAILED)
    assert set(failed.values_list("error_code", flat=True)) == {"bad_request"}
    # Every retryable fault cost exactly one more request, and no task was claimed twice.
    assert simulator.request_count == 40 + 10
    assert stats.claimed == 40 and stats.completed == 38 and stats.failed == 2
    assert set(Task.objects.filter(buyer=buyer).values_list("attempts", flat=True)) == {1}
    # Concurrency, not one call at a time: 16 requests were in flight together (no wall-clock bound, which
    # a loaded machine would break).
    assert stats.peak_inflight == 16
    assert set(Task.objects.filter(status=Task.Status.COMPLETED).values_list("result", flat=True)) <= set(
        LABELS
    )
    assert TrainingData.objects.count() == 38
    agent = Agent.objects.get(name=AGENT)
    assert (agent.success_count, agent.failure_count) == (38, 2)
    assert Account.objects.get(user=buyer, kind=Account.Kind.ESCROW).balance == 0
    paid = sum((t.price for t in Task.objects.filter(buyer=buyer, status="completed")), Decimal(0))
    assert Account.objects.get(user=buyer, kind=Account.Kind.BUYER).balance == Decimal("100") - paid


@pytest.mark.django_db
def test_it_gives_a_task_back_after_its_calls_are_exhausted_and_fails_it_after_its_attempts(
    buyer, simulator, settings
):
    settings.AICP_LLM_MAX_ATTEMPTS = 2
    settings.AICP_TASK_MAX_ATTEMPTS = 2
    settings.AICP_BREAKER_FAILURES = 1000
    task = submit(buyer, "Always failing", labels=LABELS)
    simulator.script(*[Fault(503)] * 4)
    Drainer(concurrency=4).run()
    task.refresh_from_db()
    assert task.status == Task.Status.FAILED and task.error_code == "server_error"
    assert task.attempts == 2 and simulator.request_count == 4
    assert "gave up after 2 attempts" in task.error
    _assert_settled_once([task])


@pytest.mark.django_db
def test_it_runs_one_given_task_and_leaves_the_others(buyer, simulator):
    first, second = _submit_many(buyer, 2)
    run_task(second.id)
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == ("pending", "completed")
    assert second.latency_ms >= 300 and second.prompt_tokens > 0 and second.cost > 0
    run_task(second.id)  # a repeat changes nothing
    assert simulator.request_count == 1


@pytest.mark.django_db
def test_it_leaves_tasks_pending_and_unbilled_while_the_breaker_is_open(buyer, simulator, settings):
    # Opening on the first failure makes the test independent of how the four answers are batched;
    # counting consecutive failures is tested on the breaker itself.
    settings.AICP_BREAKER_FAILURES = 1
    settings.AICP_BREAKER_COOLDOWN_S = 60.0
    tasks = _submit_many(buyer, 10)
    simulator.script(*[Fault(503)] * 4)
    before = time.time()
    stats = Drainer(concurrency=4).run()

    # Four calls failed: the breaker opened and every one of them went back, its attempt refunded.
    assert stats.released == 4 and stats.failed == 0 and stats.completed == 0
    breaker = CircuitBreakerState.objects.get(key=AGENT)
    assert breaker.state == "open" and breaker.open_until_ts >= before + 60
    assert Task.objects.filter(buyer=buyer, status=Task.Status.PENDING).count() == 10
    released = Task.objects.filter(buyer=buyer, error_code="circuit_open")
    assert released.count() == 4
    assert set(released.values_list("attempts", flat=True)) == {0}
    assert all(t.not_before.timestamp() >= before + 60 for t in released)
    assert not LedgerEntry.objects.filter(task__buyer=buyer, kind__in=["payout", "release"]).exists()
    assert Agent.objects.get(name=AGENT).failure_count == 0
    assert simulator.request_count == 4  # nothing else was sent while open
    # Someone comes back for them when the breaker may try again.
    assert Schedule.objects.filter(func="tasks.jobs.drain_tasks").exists()

    # The cooldown passes: one trial call, it succeeds, the breaker closes and everything runs.
    CircuitBreakerState.objects.filter(key=AGENT).update(open_until_ts=time.time() - 1)
    Task.objects.filter(buyer=buyer).update(not_before=timezone.now())
    stats = Drainer(concurrency=4).run()
    assert stats.completed == 10
    assert CircuitBreakerState.objects.get(key=AGENT).state == "closed"
    _assert_settled_once(tasks)
    assert set(Task.objects.filter(buyer=buyer).values_list("attempts", flat=True)) == {1}


@pytest.mark.django_db
def test_it_reopens_the_breaker_when_the_trial_fails(buyer, simulator, settings):
    settings.AICP_BREAKER_FAILURES = 1
    settings.AICP_BREAKER_COOLDOWN_S = 0.3
    tasks = _submit_many(buyer, 3)
    simulator.script(Fault(503), Fault(503), Fault(503))
    started = time.monotonic()
    Drainer(concurrency=1).run()  # waits out short cooldowns itself
    _assert_settled_once(tasks)
    assert Task.objects.filter(buyer=buyer, status="completed").count() == 3
    # Failure (open), trial fails (open again), trial fails, trial succeeds (closed), then the other two:
    # while open nothing went out but one trial per cooldown.
    assert simulator.request_count == 6
    assert time.monotonic() - started >= 3 * 0.3
    assert set(Task.objects.filter(buyer=buyer).values_list("attempts", flat=True)) == {1}


@pytest.mark.django_db
def test_it_honours_retry_after_for_every_worker(buyer, simulator):
    task = submit(buyer, "Rate limited", labels=LABELS)
    simulator.script(Fault(429, code="rate_limit_exceeded", retry_after=1.0))
    started = time.time()
    Drainer(concurrency=2).run()
    task.refresh_from_db()
    assert task.status == Task.Status.COMPLETED
    assert time.time() - started >= 1.0
    # The block is shared: other drainers (other processes) read it from the limiter's store.
    assert limiter_from_settings().state(AGENT).blocked_until >= started + 1.0


@pytest.mark.django_db
def test_it_keeps_to_the_requests_per_minute_limit(buyer, simulator, settings):
    settings.AICP_RPM_LIMIT = 120  # 2 requests/s, at most 2 at once
    settings.AICP_RATE_BURST_S = 1.0
    tasks = _submit_many(buyer, 6)
    started = time.monotonic()
    Drainer(concurrency=6).run()
    # Two go at once, then two per second: the last starts about 2 s in.
    assert time.monotonic() - started >= 1.9
    _assert_settled_once(tasks)
    finishes = sorted(Task.objects.filter(buyer=buyer).values_list("finished_at", flat=True))
    assert (finishes[-1] - finishes[0]).total_seconds() >= 1.5


@pytest.mark.django_db
def test_it_hands_over_to_a_successor_when_its_slice_ends(buyer, simulator, settings):
    settings.AICP_DRAINERS = 1
    tasks = _submit_many(buyer, 12)
    slot = drain_slot_acquire(slots=1, lease_s=60)
    first = Drainer(concurrency=4, slot=slot, slice_s=0.1).run()
    # The first drainer stopped claiming after its slice, finished what it had and queued a successor
    # (run inline in sync mode), which took the rest.
    assert 0 < first.claimed < 12
    _assert_settled_once(tasks)
    assert DrainSlot.objects.get(number=0).state == DrainSlot.State.IDLE


@pytest.mark.django_db
def test_it_enqueues_no_drainer_while_all_slots_are_busy(settings, monkeypatch):
    settings.AICP_DRAINERS = 2
    enqueued = []
    monkeypatch.setattr(queue, "async_task", lambda *args, **kwargs: enqueued.append(args))
    queue.request_drain()
    queue.request_drain()
    queue.request_drain()  # both slots are reserved by queued drainers: this one is not needed
    assert [args[0] for args in enqueued] == ["tasks.jobs.drain_tasks"] * 2
    assert drain_slot_reserve(slots=2, ttl_s=30) is None
    # A reservation nobody took up (the job was lost) expires, and the next request enqueues again.
    DrainSlot.objects.filter(number=0).update(lease_until=timezone.now())
    queue.request_drain()
    assert len(enqueued) == 3


@pytest.mark.django_db
def test_it_shares_one_schedule_between_retries_due_the_same_second():
    for _ in range(5):
        queue.enqueue_execution(None, delay_s=30)
    assert Schedule.objects.filter(func="tasks.jobs.drain_tasks").count() == 1


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_it_claims_each_task_once_between_two_drainers(simulator, settings):
    from tests.factories import make_buyer

    settings.AICP_DRAINERS = 2
    # Both slots busy: submissions enqueue no drainer, so the backlog waits for the two below.
    for _ in range(2):
        assert drain_slot_reserve(slots=2, ttl_s=600) is not None
    buyer = make_buyer("two-drainers")
    tasks = _submit_many(buyer, 60)
    assert not Task.objects.exclude(status=Task.Status.PENDING).exists()

    results = []

    def drain() -> None:
        try:
            results.append(Drainer(concurrency=8).run())
        finally:
            connection.close()

    threads = [threading.Thread(target=drain) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == 2
    assert sorted(r.claimed for r in results)[0] > 0, "both drainers took part"
    assert sum(r.claimed for r in results) == 60
    assert simulator.request_count == 60
    assert set(Task.objects.values_list("attempts", flat=True)) == {1}
    _assert_settled_once(tasks)
