"""Enqueueing webhook jobs (django-q2), on commit. Jobs are named by string: this module imports neither
them nor the code they run. A broker failure here is logged and never reaches the task's writer: the
task is already committed, and a lost webhook is a lost notification, not lost money."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from datetime import datetime

from django.db import transaction
from django_q.models import Schedule
from django_q.tasks import async_task

logger = logging.getLogger("tasks.webhooks")


def on_commit_notify(*, task_ids: Iterable[uuid.UUID], event: str) -> None:
    """After the current transaction commits, a delivery job for each task (those with a callback_url)."""
    ids = [str(task_id) for task_id in task_ids]
    if ids:
        transaction.on_commit(lambda: _enqueue_events(ids, event))


def _enqueue_events(task_ids: list[str], event: str) -> None:
    for task_id in task_ids:
        try:
            async_task("tasks.jobs.webhook_event", task_id, event, group="webhooks")
        except Exception:  # the broker is down: the task stays committed, the notification is lost
            logger.exception("Could not enqueue webhook %s for task %s", event, task_id)


def enqueue_attempt(delivery_id: uuid.UUID, *, at: datetime | None = None) -> None:
    """An attempt of the delivery now, or at ``at`` (a one-off schedule, so no worker waits meanwhile)."""
    try:
        if at is None:
            async_task("tasks.jobs.webhook_attempt", str(delivery_id), group="webhooks")
        else:
            Schedule.objects.create(
                func="tasks.jobs.webhook_attempt",
                args=repr(str(delivery_id)),
                schedule_type=Schedule.ONCE,
                repeats=-1,
                next_run=at,
                name=f"webhook-{delivery_id}-{at.timestamp():.0f}",
            )
    except Exception:
        logger.exception("Could not enqueue webhook delivery %s", delivery_id)
