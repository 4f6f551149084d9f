"""Reads on tasks and money."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import UTC, datetime
from decimal import Decimal

from django.db.models import Count, Q, QuerySet, Sum
from django.utils import timezone

from agents.pricing import quantize_money
from core.exceptions import NotFound
from core.perf.db import count_rows, count_rows_each
from ledger.models import ZERO
from tasks.models import DrainSlot, Task, WebhookDelivery
from users.models import User


def task_list_visible(*, user: User, status: str | None = None) -> QuerySet[Task]:
    """Buyers see their own tasks; operators see all."""
    tasks = Task.objects.select_related("agent", "executed_by", "buyer")
    if not user.is_operator:
        tasks = tasks.filter(buyer=user)
    if status:
        tasks = tasks.filter(status=status)
    return tasks.order_by("-created_at", "-id")


def task_get_visible(*, user: User, task_id: str | uuid.UUID) -> Task:
    """Someone else's task is a 404, indistinguishable from a missing one."""
    try:
        task_uuid = task_id if isinstance(task_id, uuid.UUID) else uuid.UUID(str(task_id))
        return task_list_visible(user=user).get(pk=task_uuid)
    except (ValueError, Task.DoesNotExist) as exc:
        raise NotFound("No such task.", code="task_not_found") from exc


def buyer_submission_counts(*, user_ids: Collection[int], since: datetime, limit: int) -> dict[int, int]:
    """How many tasks each buyer created since `since`, each counted up to `limit` (the submit limit).

    One statement for a whole group of submissions: a capped count per buyer under the index on (buyer,
    created_at), through core.perf.db (building ORM queries cost ten times what the database spends counting).
    """
    return count_rows_each(Task, "buyer_id", sorted(user_ids), "created_at >= %s", [since], limit=limit)


def buyer_submission_time(*, user_id: int, since: datetime, newest_first_index: int) -> datetime | None:
    """When the buyer's `newest_first_index`-th newest task since `since` was created (0: the newest)."""
    times = (
        Task.objects.filter(buyer_id=user_id, created_at__gte=since)
        .order_by("-created_at")
        .values_list("created_at", flat=True)
    )
    return next(iter(times[newest_first_index : newest_first_index + 1]), None)


def drain_slots_busy(*, slots: int, now: datetime) -> int:
    """How many of the first `slots` drain slots hold a live lease (each group of submissions asks, when
    it commits: a raw count through core.perf.db, as above)."""
    return count_rows(DrainSlot, "number < %s AND lease_until > %s", [slots, now])


def utc_day_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def buyer_committed_today(
    *, user_id: int, now: datetime, exclude_task_id: uuid.UUID | None = None
) -> Decimal:
    """What counts against the daily spend cap: quotes of today's (UTC) tasks that were not refunded."""
    tasks = Task.objects.filter(buyer_id=user_id, created_at__gte=utc_day_start(now)).exclude(
        status=Task.Status.FAILED
    )
    if exclude_task_id is not None:
        tasks = tasks.exclude(pk=exclude_task_id)
    # Exact on every backend: an integer SUM of minor units (core.money).
    return quantize_money(tasks.aggregate(total=Sum("price"))["total"] or ZERO)


# --- operator dashboard ---------------------------------------------------------------------------------


def task_stats(*, since: datetime) -> dict[str, int]:
    """Counts by status over all tasks, and how many were submitted since `since`, in one query."""
    statuses = {status: Count("pk", filter=Q(status=status)) for status in Task.Status.values}
    return Task.objects.aggregate(
        total=Count("pk"), recent=Count("pk", filter=Q(created_at__gte=since)), **statuses
    )


def task_list_recent(*, limit: int) -> QuerySet[Task]:
    return Task.objects.select_related("agent", "executed_by", "buyer").order_by("-created_at", "-id")[:limit]


def claimable_tasks(
    *,
    now: datetime | None = None,
    exclude_agent_ids: Collection[int] = (),
    task_ids: Collection[uuid.UUID] | None = None,
    only_agent_id: int | None = None,
) -> QuerySet[Task]:
    """Pending tasks whose retry backoff has passed: what a claim may take (a read the drainer shares)."""
    now = now or timezone.now()
    tasks = Task.objects.filter(
        Q(not_before__isnull=True) | Q(not_before__lte=now), status=Task.Status.PENDING
    ).exclude(priority=Task.Priority.BATCH)  # the Batch API collector's (tasks.execution.batches)
    if only_agent_id is not None:
        tasks = tasks.filter(agent_id=only_agent_id)
    if exclude_agent_ids:
        tasks = tasks.exclude(agent_id__in=list(exclude_agent_ids))
    if task_ids is not None:
        tasks = tasks.filter(pk__in=list(task_ids))
    return tasks


def webhook_deliveries_of(*, task_id: uuid.UUID) -> QuerySet[WebhookDelivery]:
    """A task's webhook deliveries, oldest first, with their attempts."""
    return (
        WebhookDelivery.objects.filter(task_id=task_id).prefetch_related("attempt_log").order_by("created_at")
    )
