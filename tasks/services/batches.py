"""Batch-priority tasks' writes: claimed for an OpenAI Batch API job, the job recorded, its answers
settled like any task's (tasks.services.lifecycle), or the tasks given back to normal execution."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection, Sequence
from datetime import timedelta

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from agents.models import Agent
from tasks import queue
from tasks.models import LLMBatch, Task
from tasks.services.lifecycle import tasks_claim_locked

logger = logging.getLogger("tasks")

# A claimed batch task's lease: the provider's 24 h window and a margin; the reaper leaves it alone so long.
BATCH_LEASE = timedelta(hours=25)


@transaction.atomic
def batch_tasks_claim(*, limit: int) -> list[Task]:
    """Up to ``limit`` pending batch-priority tasks of LLM agents, oldest first, moved to running under the
    usual lease, each to one caller only (the same conditional update as any claim). Recording their batch
    extends the lease to the batch's window; a collector that dies before that leaves them to the reaper."""
    now = timezone.now()
    ids = list(
        Task.objects.filter(Q(not_before__isnull=True) | Q(not_before__lte=now), status=Task.Status.PENDING)
        .filter(priority=Task.Priority.BATCH)
        .exclude(agent__backend=Agent.Backend.DUKE)
        .order_by("created_at")
        .select_for_update(skip_locked=True, of=("self",))
        .values_list("pk", flat=True)[:limit]
    )
    return tasks_claim_locked(ids=ids, now=now)


@transaction.atomic
def llm_batch_record(*, agent_id: int, provider_batch_id: str, task_ids: Sequence[uuid.UUID]) -> LLMBatch:
    batch = LLMBatch.objects.create(
        agent_id=agent_id,
        provider_batch_id=provider_batch_id,
        task_ids=[str(task_id) for task_id in task_ids],
    )
    # The provider has them now, for up to its 24 h window: the reaper must not run them a second time.
    Task.objects.filter(pk__in=list(task_ids), status=Task.Status.RUNNING).update(
        lease_until=timezone.now() + BATCH_LEASE, updated_at=timezone.now()
    )
    logger.info("Batch %s SUBMITTED with %d task(s)", provider_batch_id, len(task_ids))
    return batch


@transaction.atomic
def llm_batch_finish(*, batch_id: uuid.UUID, status: str, provider_status: str = "", error: str = "") -> None:
    LLMBatch.objects.filter(pk=batch_id, status=LLMBatch.Status.IN_PROGRESS).update(
        status=status, provider_status=provider_status[:16], error=error[:4000], finished_at=timezone.now()
    )


@transaction.atomic
def batch_tasks_fall_back(*, task_ids: Collection[uuid.UUID], reason: str) -> int:
    """The tasks run the normal way after all (no Batch API, or the batch failed or lost them): back to
    pending at normal priority, their claim not counted as an attempt; a drainer is asked for on commit.
    The price stays the discounted quote that is held."""
    now = timezone.now()
    moved = Task.objects.filter(
        pk__in=list(task_ids),
        status__in=[Task.Status.PENDING, Task.Status.RUNNING],
        priority=Task.Priority.BATCH,
    ).update(
        status=Task.Status.PENDING,
        priority=Task.Priority.NORMAL,
        attempts=F("attempts") - 1,
        lease_until=None,
        updated_at=now,
    )
    if moved:
        logger.warning(
            "Batch API unavailable for %d task(s), falling back to normal execution: %s", moved, reason
        )
        queue.request_drain_on_commit()
    return moved
