"""Reads on tasks and money."""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.db.models import QuerySet

from aicp.exceptions import NotFound
from tasks.models import ZERO, Account, Task
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


def balance_for(*, user_id: int, kind: str) -> Decimal:
    account = Account.objects.filter(kind=kind, user_id=user_id).only("balance").first()
    return account.balance if account else ZERO
