"""Enqueueing webhook jobs (django-q2), on commit. Jobs are named by string: this module imports neither
them nor the code they run. A broker failure here is logged and never reaches the task's writer: the
task is already committed, and the reaper's webhook sweep (tasks.services.webhooks.webhook_sweep_lost)
enqueues again what was lost."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

from django.db import transaction
from django_q.models import Schedule
from django_q.tasks import async_task

from core.after_commit import enqueue_guarded

_RECOVERY = "the reaper's webhook sweep enqueues it again"


def on_commit_notify(*, task_ids: Iterable[uuid.UUID], event: str) -> None:
    """After the current transaction commits, a delivery job for each task (those with a callback_url)."""
    ids = [str(task_id) for task_id in task_ids]
    if ids:
        transaction.on_commit(lambda: _enqueue_events(ids, event))


def _enqueue_events(task_ids: list[str], event: str) -> None:
    for task_id in task_ids:
        enqueue_event(task_id, event)


def enqueue_event(task_id: uuid.UUID | str, event: str) -> None:
    """The delivery job of a finished task's event. A broker failure is one log line: the task stays
    committed, and the reaper's webhook sweep enqueues the event again (tasks.services.webhooks)."""
    enqueue_guarded(
        lambda: async_task("tasks.jobs.webhook_event", str(task_id), event, group="webhooks"),
        what=f"webhook {event} for task {task_id}",
        recovery=_RECOVERY,
    )


def enqueue_attempt(delivery_id: uuid.UUID, *, at: datetime | None = None) -> None:
    """An attempt of the delivery now, or at ``at`` (a one-off schedule, so no worker waits meanwhile)."""

    def enqueue() -> object:
        if at is None:
            return async_task("tasks.jobs.webhook_attempt", str(delivery_id), group="webhooks")
        return Schedule.objects.create(
            func="tasks.jobs.webhook_attempt",
            args=repr(str(delivery_id)),
            schedule_type=Schedule.ONCE,
            repeats=-1,
            next_run=at,
            name=f"webhook-{delivery_id}-{at.timestamp():.0f}",
        )

    enqueue_guarded(enqueue, what=f"webhook delivery {delivery_id}", recovery=_RECOVERY)
