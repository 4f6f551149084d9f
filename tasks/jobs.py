"""django-q2 jobs for tasks: thin, they take ids and call one service."""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.utils import timezone
from django_q.models import Schedule
from django_q.tasks import async_task


def enqueue_execution(task_id: uuid.UUID, *, delay_s: float = 0.0) -> None:
    if delay_s > 0:
        # A one-off schedule, so the backoff does not occupy a worker while it waits.
        Schedule.objects.create(
            func="tasks.jobs.execute_task",
            args=repr(str(task_id)),
            schedule_type=Schedule.ONCE,
            repeats=-1,
            next_run=timezone.now() + timedelta(seconds=delay_s),
            name=f"retry-{task_id}-{timezone.now().timestamp()}",
        )
        return
    async_task("tasks.jobs.execute_task", str(task_id), group="tasks")


def execute_task(task_id: str) -> None:
    from tasks.execution import run_task

    run_task(uuid.UUID(task_id))


def reap_expired_leases() -> int:
    from tasks.services import task_requeue_expired

    return len(task_requeue_expired())
