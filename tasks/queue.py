"""The queue's door: what services call (on commit) to have tasks run, and nothing that runs them.

Execution is by drainers (tasks.execution.drainer): a drainer job claims pending tasks in batches and
keeps many LLM calls in flight until no work is left. A submission does not enqueue one job per task: it
makes sure a drainer is queued or running (at most AICP_DRAINERS of them, through the drain slots); a
running drainer picks new tasks up by itself. The jobs themselves (tasks.jobs) are named by string, so
this module imports neither them nor the code they run.
"""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from django.conf import settings
from django_q.models import Schedule
from django_q.tasks import async_task

from tasks.execution.slots import drain_slot_reserve

# A queued drainer that has not started within this long is presumed lost; the next request enqueues again.
DRAIN_QUEUED_TTL_S = 30.0

_local = threading.local()


def draining_here() -> bool:
    """True inside a drainer: it polls for new tasks itself, so it needs no job to be enqueued for them."""
    return getattr(_local, "draining", False)


@contextmanager
def draining() -> Iterator[None]:
    """Marks this thread as a drainer while the block runs (nested drainers restore the outer mark)."""
    was_draining = draining_here()
    _local.draining = True
    try:
        yield
    finally:
        _local.draining = was_draining


def enqueue_execution(task_id: uuid.UUID, *, delay_s: float = 0.0) -> None:
    """The task can run now (or after ``delay_s``): make sure a drainer will pick it up."""
    request_drain(delay_s=delay_s)


def enqueue_executions(task_ids: Collection[uuid.UUID]) -> None:
    """These tasks can run now: one drainer request covers them all (a drainer claims every pending task)."""
    if task_ids:
        request_drain()


def request_drain(*, delay_s: float = 0.0) -> None:
    if delay_s > 0:
        _schedule_drain(delay_s)
        return
    if draining_here():
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


def enqueue_duke_audit(task_id: uuid.UUID) -> None:
    async_task("tasks.jobs.audit_duke_answer", str(task_id), group="duke-audit")
