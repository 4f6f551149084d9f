"""A task's life after submission: claimed (with a lease), completed (agent paid, sample recorded),
failed (hold released), retried later, released, re-queued by the reaper. Every state change is a
conditional update, so repeats change nothing."""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from agents.models import Agent
from agents.services import agent_record_outcome
from duke.services import sample_record
from ledger import entries
from ledger.services import (
    hold_release,
    payout_keys,
    payout_posting,
)
from tasks import queue
from tasks.models import Task, WebhookDelivery
from tasks.selectors import (
    claimable_tasks,
)
from tasks.webhooks import queue as webhooks

logger = logging.getLogger("tasks")


def task_record_sample(*, task: Task, output: str) -> None:
    """The task as one of Duke's training samples (plain values: duke never imports tasks)."""
    sample_record(
        task_id=task.id,
        text=task.description,
        task_type=task.task_type,
        complexity=task.complexity,
        labels=task.labels,
        output=output,
    )


@transaction.atomic
def task_claim_batch(
    *,
    limit: int,
    exclude_agent_ids: Collection[int] = (),
    task_ids: Collection[uuid.UUID] | None = None,
    only_agent_id: int | None = None,
) -> list[Task]:
    """Moves up to ``limit`` claimable tasks, oldest first, to running with a lease; each to one caller only.

    PostgreSQL locks the candidates with SKIP LOCKED, so concurrent claimers take different rows; SQLite's
    IMMEDIATE transactions serialise claimers, so nobody writes between our read and our update.
    """
    if limit <= 0:
        return []
    now = timezone.now()
    candidates = claimable_tasks(
        now=now, exclude_agent_ids=exclude_agent_ids, task_ids=task_ids, only_agent_id=only_agent_id
    )
    ids = list(
        candidates.order_by("created_at")
        .select_for_update(skip_locked=True)
        .values_list("pk", flat=True)[:limit]
    )
    return tasks_claim_locked(ids=ids, now=now)


def tasks_claim_locked(*, ids: Collection[uuid.UUID], now: datetime) -> list[Task]:
    """Moves the given pending tasks, locked by the caller's transaction, to running with a lease stamped
    ``now``; returns those this claim took, oldest first."""
    if not ids:
        return []
    # One statement for the batch. The candidates are ours alone (row locks, or SQLite's write lock), and
    # the status condition still guards the update; the rows stamped with this claim's instant are ours.
    Task.objects.filter(pk__in=ids, status=Task.Status.PENDING).update(
        status=Task.Status.RUNNING,
        lease_until=now + timedelta(seconds=settings.AICP_TASK_LEASE_S),
        started_at=now,
        updated_at=now,
        attempts=F("attempts") + 1,
    )
    return list(
        Task.objects.select_related("agent")
        .filter(pk__in=ids, status=Task.Status.RUNNING, started_at=now)
        .order_by("created_at")
    )


@transaction.atomic
def task_claim(*, task_id: uuid.UUID) -> Task | None:
    """Atomically moves a pending task to running with a lease; None if someone else has it or it is final."""
    claimed = task_claim_batch(limit=1, task_ids=[task_id])
    return claimed[0] if claimed else None


@transaction.atomic
def task_release_claims(
    *, task_ids: Collection[uuid.UUID], not_before: datetime | None, error: str = "", error_code: str = ""
) -> int:
    """Gives running tasks back to pending without counting the attempt: their call never had a fair try
    (the agent's circuit breaker is open). Nobody is billed; a drainer takes them again after not_before."""
    now = timezone.now()
    released = Task.objects.filter(pk__in=list(task_ids), status=Task.Status.RUNNING, attempts__gt=0).update(
        status=Task.Status.PENDING,
        attempts=F("attempts") - 1,
        lease_until=None,
        not_before=not_before,
        error=error[:4000],
        error_code=error_code[:32],
        updated_at=now,
    )
    if released:
        delay_s = max(0.0, (not_before - now).total_seconds()) if not_before else 0.0
        queue.request_drain_on_commit(delay_s=delay_s)
    return released


@transaction.atomic
def task_extend_leases(*, task_ids: Collection[uuid.UUID]) -> int:
    """Renews the lease of tasks a live worker still holds, so the reaper leaves them alone."""
    now = timezone.now()
    return Task.objects.filter(pk__in=list(task_ids), status=Task.Status.RUNNING).update(
        lease_until=now + timedelta(seconds=settings.AICP_TASK_LEASE_S), updated_at=now
    )


@dataclass(frozen=True)
class Outcome:
    result: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: int = 0
    cost: Decimal = Decimal("0")
    confidence: float | None = None


@dataclass(frozen=True)
class Completion:
    task_id: uuid.UUID
    outcome: Outcome
    executed_by_id: int | None = None  # None: the assigned agent


@transaction.atomic
def task_complete(*, task_id: uuid.UUID, outcome: Outcome, executed_by_id: int | None = None) -> bool:
    """Stores the result and pays the agent, once. Returns False when the task was already final."""
    return _complete(completions=[Completion(task_id, outcome, executed_by_id)])[0]


@transaction.atomic
def task_complete_many(*, completions: Sequence[Completion]) -> list[bool]:
    """task_complete for several tasks in one transaction; per completion, whether it completed the task.

    The same effects as one task_complete each, with a few statements for the whole batch instead of a
    dozen per task: the tasks' rows are read (and, on PostgreSQL, locked) together, the accounts are
    found and locked together, the payouts are one INSERT and one balance UPDATE per account, and each
    agent's counters one UPDATE. Each task still goes final through its own conditional UPDATE, so a
    task another worker already settled is skipped (False), and the ledger's unique settlement constraint
    still refuses a second payout. A failure rolls back the whole batch (callers that must keep the rest
    retry task by task).
    """
    return _complete(completions=completions)


def _complete(*, completions: Sequence[Completion]) -> list[bool]:
    # Callers may name a task by its id's string, as a lookup by pk would accept.
    completions = [
        c
        if isinstance(c.task_id, uuid.UUID)
        else Completion(uuid.UUID(str(c.task_id)), c.outcome, c.executed_by_id)
        for c in completions
    ]
    ids = [c.task_id for c in completions]
    open_statuses = [Task.Status.PENDING, Task.Status.RUNNING]
    tasks = {
        task.pk: task
        for task in Task.objects.select_related("agent")
        .select_for_update(of=("self",))
        .filter(pk__in=ids, status__in=open_statuses)
        .order_by("pk")  # row locks in one order: concurrent batches cannot deadlock on PostgreSQL
    }
    now = timezone.now()
    finished: list[tuple[Task, Completion]] = []
    for completion in completions:
        task = tasks.pop(completion.task_id, None)  # popped: a task listed twice completes once
        if task is None:
            continue
        outcome = completion.outcome
        executor_id = completion.executed_by_id or task.agent_id
        # The status condition is the guarantee; the lock above only makes it the expected outcome.
        if Task.objects.filter(pk=task.pk, status__in=open_statuses).update(
            status=Task.Status.COMPLETED,
            result=outcome.result,
            executed_by_id=executor_id,
            confidence=outcome.confidence,
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
            latency_ms=outcome.latency_ms,
            cost=outcome.cost,
            error="",
            error_code="",
            lease_until=None,
            finished_at=now,
            updated_at=now,
        ):
            finished.append((task, Completion(task.pk, outcome, executor_id)))
    if not finished:
        return [False] * len(completions)

    others = {c.executed_by_id for t, c in finished if c.executed_by_id != t.agent_id}
    executors = {t.agent_id: t.agent for t, _ in finished} | Agent.objects.in_bulk(others)
    accounts = entries.lock(
        {
            key
            for t, c in finished
            for key in payout_keys(buyer_id=t.buyer_id, agent_id=c.executed_by_id, price=t.price)
        }
    )
    postings = []
    earnings: dict[int, list[Decimal]] = defaultdict(list)
    for task, completion in finished:
        posting, earned = payout_posting(
            accounts=accounts,
            buyer_id=task.buyer_id,
            agent_id=completion.executed_by_id,
            task_id=task.id,
            price=task.price,
        )
        postings.append(posting)
        earnings[completion.executed_by_id].append(earned)
    entries.post_many(postings=postings, locked=accounts.values())
    for agent_id, earned in earnings.items():
        agent_record_outcome(
            agent_id=agent_id, success=True, earned=sum(earned, Decimal(0)), count=len(earned)
        )
    for task, completion in finished:
        executor = executors[completion.executed_by_id]
        if executor.backend != Agent.Backend.DUKE:
            # Duke's own answers never become its training labels: it would learn its own mistakes.
            task_record_sample(task=task, output=completion.outcome.result)
        logger.info(
            "Task %s COMPLETED by %s in %s ms", task.short_id, executor.name, completion.outcome.latency_ms
        )
    webhooks.on_commit_notify(
        task_ids=[t.pk for t, _ in finished if t.callback_url], event=WebhookDelivery.Event.COMPLETED
    )
    done = {task.pk for task, _ in finished}
    results = []
    for completion in completions:
        results.append(completion.task_id in done)
        done.discard(completion.task_id)  # a task listed twice counts once, at its first listing
    return results


@transaction.atomic
def task_fail(*, task_id: uuid.UUID, error: str, error_code: str = "error") -> bool:
    """Marks the task failed and releases the buyer's hold, once. Returns False when already final."""
    task = Task.objects.select_related("agent").get(pk=task_id)
    now = timezone.now()
    finished = Task.objects.filter(pk=task_id, status__in=[Task.Status.PENDING, Task.Status.RUNNING]).update(
        status=Task.Status.FAILED,
        error=error[:4000],
        error_code=error_code[:32],
        lease_until=None,
        finished_at=now,
        updated_at=now,
    )
    if not finished:
        return False
    hold_release(buyer_id=task.buyer_id, task_id=task.id, price=task.price)
    agent_record_outcome(agent_id=task.agent_id, success=False)
    logger.info("Task %s FAILED on %s: %s", task.short_id, task.agent.name, error_code)
    webhooks.on_commit_notify(
        task_ids=[task.pk] if task.callback_url else [], event=WebhookDelivery.Event.FAILED
    )
    return True


@transaction.atomic
def task_retry_later(*, task_id: uuid.UUID, error: str, error_code: str, delay_s: float) -> bool:
    """Gives a running task back to the queue after a retryable error; it stays billed to nobody."""
    now = timezone.now()
    released = Task.objects.filter(pk=task_id, status=Task.Status.RUNNING).update(
        status=Task.Status.PENDING,
        error=error[:4000],
        error_code=error_code[:32],
        lease_until=None,
        not_before=now + timedelta(seconds=delay_s),
        updated_at=now,
    )
    if released:
        queue.enqueue_execution_on_commit(task_id, delay_s=delay_s)
    return bool(released)


@transaction.atomic
def task_requeue_expired() -> list[uuid.UUID]:
    """The reaper: running tasks whose lease ran out (their worker died) go back to pending, once."""
    now = timezone.now()
    expired = list(
        Task.objects.filter(status=Task.Status.RUNNING, lease_until__lt=now).values_list("pk", flat=True)[
            :1000
        ]
    )
    requeued = [
        task_id
        for task_id in expired
        if Task.objects.filter(pk=task_id, status=Task.Status.RUNNING, lease_until__lt=now).update(
            status=Task.Status.PENDING, lease_until=None, updated_at=now
        )
    ]
    # Claimable work with no drainer (a crash between commit and enqueue, a purged queue, a drainer that
    # died) must not wait for the next submission: ask for one; the drain slots make a spare request free.
    if requeued or claimable_tasks(now=now).exists():
        queue.request_drain_on_commit()
    if requeued:
        logger.warning("Reaper re-queued %d task(s) whose lease expired", len(requeued))
    return requeued
