"""A failure after commit never re-runs the committed write and never fails its caller (issue 20, item 1).

Fast checks of each piece; tests/faults/test_broker_down.py runs the whole path with a real Redis stopped.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import redis
from django.db import transaction

from core.after_commit import enqueue_after_commit
from core.perf.group_commit import Committed, GroupCommit
from duke import queue as duke_queue
from ledger.models import LedgerEntry
from tasks import queue as tasks_queue
from tasks.models import DrainSlot, Task
from tests.core.perf.test_group_commit import Recorder, _call_concurrently
from tests.factories import make_buyer, submit
from tests.postgres.threads import run_concurrently

REPO = Path(__file__).resolve().parents[2]


def _refused(*args: object, **kwargs: object) -> None:
    raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6399. Connection refused.")


def _failures(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "after commit" in r.getMessage()]


# --- the guarded helper ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_logs_one_line_without_a_traceback_and_runs_the_other_callbacks_when_an_enqueue_fails(
    caplog, django_capture_on_commit_callbacks
):
    ran: list[str] = []
    with caplog.at_level(logging.WARNING), django_capture_on_commit_callbacks(execute=True):
        enqueue_after_commit(_refused, what="a drainer for 3 task(s)", recovery="the reaper asks again")
        transaction.on_commit(lambda: ran.append("next"))

    assert ran == ["next"]
    (record,) = _failures(caplog)
    assert record.exc_info is None
    assert record.getMessage() == (
        "Could not enqueue a drainer for 3 task(s) after commit (ConnectionError: Error 111 connecting to "
        "127.0.0.1:6399. Connection refused.); it stays recorded, the reaper asks again"
    )


ON_COMMIT_ENQUEUES: dict[str, Callable[[], None]] = {
    "tasks: drainer for new tasks": lambda: tasks_queue.enqueue_executions_on_commit([Task().id]),
    "tasks: drainer for a retry": lambda: tasks_queue.enqueue_execution_on_commit(Task().id),
    "tasks: drainer": lambda: tasks_queue.request_drain_on_commit(),
    "tasks: Duke audit": lambda: tasks_queue.enqueue_duke_audit_on_commit(Task().id),
    "duke: training": lambda: duke_queue.enqueue_training_on_commit(),
    "duke: operator's training": lambda: duke_queue.enqueue_training_on_commit("operator"),
    "duke: encoding": lambda: duke_queue.enqueue_encoding_on_commit(),
}


@pytest.mark.django_db
@pytest.mark.parametrize("enqueue", ON_COMMIT_ENQUEUES.values(), ids=ON_COMMIT_ENQUEUES.keys())
def test_every_enqueue_on_commit_survives_a_broker_that_refuses(
    enqueue, monkeypatch, caplog, django_capture_on_commit_callbacks
):
    monkeypatch.setattr("tasks.queue.async_task", _refused)
    monkeypatch.setattr("duke.queue.async_task", _refused)
    with caplog.at_level(logging.WARNING), django_capture_on_commit_callbacks(execute=True) as callbacks:
        enqueue()
    assert len(callbacks) == 1
    assert len(_failures(caplog)) == 1


@pytest.mark.django_db
def test_a_drainer_that_could_not_be_enqueued_frees_its_slot_for_the_next_request(monkeypatch, settings):
    settings.AICP_DRAINERS = 1
    monkeypatch.setattr("tasks.queue.async_task", _refused)
    with pytest.raises(redis.ConnectionError):
        tasks_queue.request_drain()
    assert not DrainSlot.objects.exclude(state=DrainSlot.State.IDLE).exists()

    enqueued: list[tuple] = []
    monkeypatch.setattr("tasks.queue.async_task", lambda *args, **kwargs: enqueued.append(args))
    tasks_queue.request_drain()  # not blocked for DRAIN_QUEUED_TTL_S by the failed reservation
    assert [args[0] for args in enqueued] == ["tasks.jobs.drain_tasks"]


def test_no_service_enqueues_on_commit_without_the_guard():
    """Every post-commit enqueue goes through the guarded ``*_on_commit`` functions (core.after_commit)."""
    unguarded = re.compile(r"on_commit\((?:lambda[^:]*:\s*)?queue\.")
    offenders = [
        f"{path.relative_to(REPO)}:{number}"
        for app in ("tasks", "duke", "ledger", "agents", "users", "core")
        for path in (REPO / app).rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if unguarded.search(line)
    ]
    assert offenders == []


# --- group commit ---------------------------------------------------------------------------------------


class CommittedThenFailed(Recorder):
    """A write whose group commits, then fails in a commit callback (reported as ``Committed``)."""

    def __call__(self, items: Sequence[object]) -> list[object]:
        results = super().__call__(items)
        if "after-commit-failure" in items:
            raise Committed(results) from redis.ConnectionError("Connection refused.")
        return results


def test_a_group_that_committed_and_then_failed_is_answered_and_never_written_again(caplog):
    recorder = CommittedThenFailed()
    commit = GroupCommit(recorder, max_group=lambda: 32)
    with caplog.at_level(logging.WARNING):
        outcomes = _call_concurrently(commit, recorder, "first", ["a", "after-commit-failure", "b"])

    assert [len(group) for group in recorder.groups] == [1, 3]  # no item written a second time
    assert outcomes == {item: f"done {item}" for item in ["first", "a", "after-commit-failure", "b"]}
    (record,) = [r for r in caplog.records if "not written again" in r.getMessage()]
    assert "ConnectionError" in record.getMessage() and record.exc_info is None


def test_a_group_whose_transaction_failed_is_still_written_again_item_by_item():
    recorder = Recorder()
    commit = GroupCommit(recorder, max_group=lambda: 32)
    outcomes = _call_concurrently(commit, recorder, "first", ["a", "poison", "b"])
    assert [len(group) for group in recorder.groups] == [1, 3, 1, 1, 1]
    assert outcomes["a"] == "done a" and isinstance(outcomes["poison"], Exception)


# --- submissions: the second line (a commit callback that is not guarded) --------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_submissions_are_written_once_when_an_unguarded_commit_callback_fails(monkeypatch, settings, caplog):
    """Should a commit callback that is not guarded ever raise in the submission's transaction (the
    guard's first line missing), group commit still answers each caller once and writes nothing again."""
    settings.AICP_SUBMIT_GROUP_MAX = 4

    def unguarded(task_ids: object) -> None:
        transaction.on_commit(lambda: _refused())

    monkeypatch.setattr("tasks.queue.enqueue_executions_on_commit", unguarded)
    buyer = make_buyer("unguarded-callback")
    with caplog.at_level(logging.WARNING):
        results = run_concurrently(lambda index: submit(buyer, f"Unguarded {index}"), 16)

    assert all(isinstance(task, Task) for task in results), results
    assert Task.objects.filter(buyer=buyer).count() == 16
    assert LedgerEntry.objects.filter(task__buyer=buyer, kind="hold", amount__lt=0).count() == 16
    assert {task.id for task in results} == set(Task.objects.filter(buyer=buyer).values_list("pk", flat=True))
