"""The queue's door: what services call (on commit) to have tasks run, and nothing that runs them.

Execution is by drainers (tasks.execution.drainer): a drainer job claims pending tasks in batches and
keeps many LLM calls in flight until no work is left. A submission does not enqueue one job per task: it
makes sure a drainer is queued or running (at most AICP_DRAINERS of them, through the drain slots); a
running drainer picks new tasks up by itself. The jobs themselves (tasks.jobs) are named by string, so
this module imports neither them nor the code they run.

Services enqueue on commit through the ``*_on_commit`` functions here: a broker that refuses the job
(Redis down, the ORM broker's table locked) is logged as one line and never fails the committed write
(core.after_commit). The tasks stay pending, and claimable pending tasks are never left without a drainer
for long: the lease reaper (the ``reap-expired-leases`` schedule, every minute; django-q2's scheduler looks
every 30 s) asks for one whenever any wait, so once the broker answers again they start within about
90 s (RECOVERY_BOUND_S). A running drainer takes them sooner: it polls the database, not the broker.
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

from core.after_commit import enqueue_after_commit
from tasks.execution.slots import drain_slot_release, drain_slot_reserve

# A queued drainer that has not started within this long is presumed lost; the next request enqueues again.
DRAIN_QUEUED_TTL_S = 30.0
# The longest a claimable task waits for a drainer after the broker is back (the reaper's one-minute
# schedule plus the scheduler's 30 s look), when the enqueue on its commit failed.
RECOVERY_BOUND_S = 90
_RECOVERY = f"the tasks stay pending and the reaper asks for a drainer within {RECOVERY_BOUND_S} s"

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
        try:
            async_task("tasks.jobs.drain_tasks", lease.number, str(lease.token), group="tasks")
        except BaseException:
            # No job will take the slot: free it, so the next request (the reaper's) need not wait for
            # the reservation to expire.
            drain_slot_release(lease=lease)
            raise


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


# --- on commit: what services call -------------------------------------------------------------------
# The functions above are looked up when the transaction commits (not bound now), so tests can replace them.


def enqueue_executions_on_commit(task_ids: Collection[uuid.UUID]) -> None:
    enqueue_after_commit(
        lambda: enqueue_executions(task_ids),
        what=f"a drainer for {len(task_ids)} task(s)",
        recovery=_RECOVERY,
    )


def enqueue_execution_on_commit(task_id: uuid.UUID, *, delay_s: float = 0.0) -> None:
    enqueue_after_commit(
        lambda: enqueue_execution(task_id, delay_s=delay_s),
        what=f"a drainer for task {task_id}",
        recovery=_RECOVERY,
    )


def request_drain_on_commit(*, delay_s: float = 0.0) -> None:
    enqueue_after_commit(lambda: request_drain(delay_s=delay_s), what="a drainer", recovery=_RECOVERY)


def enqueue_duke_audit_on_commit(task_id: uuid.UUID) -> None:
    # Duke's answer is served and paid; an audit lost to a broker failure is one sample fewer, not owed.
    enqueue_after_commit(
        lambda: enqueue_duke_audit(task_id),
        what=f"the Duke audit of task {task_id}",
        recovery="this answer goes unaudited (audits are a sample)",
    )
