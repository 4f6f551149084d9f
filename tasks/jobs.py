"""django-q2 jobs for tasks: thin entry points that take ids and call the drainer or one service.

Enqueueing them is tasks.queue's job (services call it on commit); these are what the workers run.
"""

from __future__ import annotations

import uuid

from tasks.execution import batches as llm_batches
from tasks.execution.drainer import drain
from tasks.execution.single import run_duke_audit, run_task
from tasks.execution.slots import SlotLease
from tasks.services.lifecycle import task_requeue_expired
from tasks.webhooks.delivery import deliver, deliver_event


def drain_tasks(slot: int | None = None, token: str | None = None) -> int:
    """A drainer: runs claimable tasks until none are left (or its time slice ends); returns how many."""
    reserved = SlotLease(slot, uuid.UUID(token)) if slot is not None and token else None
    return drain(reserved=reserved)


def execute_task(task_id: str) -> None:
    """Runs one given task (kept for schedules and callers that name a task)."""
    run_task(uuid.UUID(task_id))


def reap_expired_leases() -> int:
    return len(task_requeue_expired())


def audit_duke_answer(task_id: str) -> None:
    run_duke_audit(uuid.UUID(task_id))


def webhook_event(task_id: str, event: str) -> None:
    """A finished task's webhook: opens its delivery and makes the first attempt."""
    deliver_event(uuid.UUID(task_id), event)


def webhook_attempt(delivery_id: str) -> None:
    """A retry (or an operator's re-send) of a webhook delivery."""
    deliver(uuid.UUID(delivery_id))


def run_llm_batches() -> tuple[int, int]:
    """Batch-priority tasks: submit the pending ones as Batch API jobs, poll those in progress."""
    return llm_batches.run()
