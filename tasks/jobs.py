"""django-q2 jobs for tasks: thin, they take ids and call one service or the batch executor.

Execution is by drainers (tasks.batch): a drainer job claims pending tasks in batches and keeps many LLM
calls in flight until no work is left. A submission does not enqueue one job per task: it makes sure a
drainer is queued or running (at most AICP_DRAINERS of them, through the drain slots); a running
drainer picks new tasks up by itself.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Collection
from datetime import UTC, datetime

from django.conf import settings
from django_q.models import Schedule
from django_q.tasks import async_task

# A queued drainer that has not started within this long is presumed lost; the next request enqueues again.
DRAIN_QUEUED_TTL_S = 30.0


def enqueue_execution(task_id: uuid.UUID, *, delay_s: float = 0.0) -> None:
    """The task can run now (or after ``delay_s``): make sure a drainer will pick it up."""
    request_drain(delay_s=delay_s)


def enqueue_executions(task_ids: Collection[uuid.UUID]) -> None:
    """These tasks can run now: one drainer request covers them all (a drainer claims every pending task)."""
    if task_ids:
        request_drain()


def request_drain(*, delay_s: float = 0.0) -> None:
    from tasks import batch
    from tasks.services import drain_slot_reserve

    if delay_s > 0:
        _schedule_drain(delay_s)
        return
    if batch.draining_here():
        return  # this thread is a drainer: it looks for claimable tasks before it stops
    lease = drain_slot_reserve(slots=settings.AICP_DRAINERS, ttl_s=DRAIN_QUEUED_TTL_S)
    if lease is not None:
        async_task("tasks.jobs.drain_tasks", lease.number, str(lease.token), group="tasks")


def _schedule_drain(delay_s: float) -> None:
    # A one-off schedule, so a backoff does not occupy a worker while it waits. Rounded up to the second
    # and named by it: a thousand retries due in the same second share one schedule.
    run_at = math.ceil(datetime.now(UTC).timestamp() + delay_s)
    name = f"drain-at-{run_at}"
    if not Schedule.objects.filter(name=name).exists():
        Schedule.objects.create(
            func="tasks.jobs.drain_tasks",
            schedule_type=Schedule.ONCE,
            repeats=-1,
            next_run=datetime.fromtimestamp(run_at, UTC),
            name=name,
        )


def drain_tasks(slot: int | None = None, token: str | None = None) -> int:
    """A drainer: runs claimable tasks until none are left (or its time slice ends); returns how many."""
    from tasks.batch import drain
    from tasks.services import SlotLease

    reserved = SlotLease(slot, uuid.UUID(token)) if slot is not None and token else None
    return drain(reserved=reserved)


def execute_task(task_id: str) -> None:
    """Runs one given task (kept for schedules and callers that name a task)."""
    from tasks.execution import run_task

    run_task(uuid.UUID(task_id))


def reap_expired_leases() -> int:
    from tasks.services import task_requeue_expired

    return len(task_requeue_expired())


def enqueue_duke_audit(task_id: uuid.UUID) -> None:
    async_task("tasks.jobs.audit_duke_answer", str(task_id), group="duke-audit")


def audit_duke_answer(task_id: str) -> None:
    from tasks.execution import run_duke_audit

    run_duke_audit(uuid.UUID(task_id))
