"""The buyer's verdict on a completed labeling task: reputation, Duke's live agreement, corrections as
training labels."""

from __future__ import annotations

import logging
import uuid

from django.db import transaction
from django.utils import timezone

from agents.models import Agent
from agents.services import agent_record_correction
from core.exceptions import (
    Conflict,
    DomainError,
    NotFound,
)
from duke.services import audit as duke_audit
from duke.services import sample_correct
from tasks.models import Task
from tasks.services.lifecycle import task_record_sample
from users.models import User

logger = logging.getLogger("tasks")


class NotTaskOwner(DomainError):
    status_code = 403
    code = "not_task_owner"


@transaction.atomic
def task_feedback(*, user: User, task_id: uuid.UUID | str, accepted: bool, correct_label: str = "") -> Task:
    """The buyer's verdict on a completed labeling task, given once (an identical repeat changes nothing).

    A rejection (accepted false, or a correction) counts against the executing agent's reputation and,
    for Duke, against its live agreement; a correction becomes the task's training label.
    """
    try:
        task = Task.objects.select_related("executed_by").filter(pk=uuid.UUID(str(task_id))).first()
    except ValueError:
        task = None
    if task is None or task.buyer_id != user.pk:
        if task is not None and user.is_operator:
            raise NotTaskOwner("Only the buyer who submitted the task can give feedback on it.")
        raise NotFound("No such task.", code="task_not_found")
    if not task.is_labeling or task.status != Task.Status.COMPLETED:
        kind = "labeling task" if task.is_labeling else "free-form task"
        raise Conflict(
            f"Feedback is for completed labeling tasks; this is a {task.status} {kind}.",
            code="feedback_not_applicable",
        )
    correction = _validated_correction(task=task, accepted=accepted, correct_label=correct_label)
    now = timezone.now()
    given = Task.objects.filter(pk=task.pk, accepted__isnull=True).update(
        accepted=accepted, correct_label=correction, updated_at=now
    )
    if not given:
        task.refresh_from_db(fields=["accepted", "correct_label"])
        if task.accepted == accepted and task.correct_label == correction:
            return task
        raise Conflict("Feedback was already given for this task.", code="feedback_exists")
    executor = task.executed_by
    by_duke = executor is not None and executor.backend == Agent.Backend.DUKE
    if not accepted and executor is not None:
        agent_record_correction(agent_id=executor.pk)
    if by_duke:
        duke_audit.served_verdict(task_id=task.id, accepted=accepted)
    if correction:
        # Duke's own answers are never samples (unless an audit made one), so the correction is the label.
        task_record_sample(task=task, output=correction if by_duke else task.result)
        sample_correct(task_id=task.id, correct_label=correction)
    verdict = "accepted" if accepted else f"corrected to {correction!r}" if correction else "rejected"
    logger.info("Task %s FEEDBACK %s (executed by %s)", task.short_id, verdict, executor)
    task.refresh_from_db()
    return task


def _validated_correction(*, task: Task, accepted: bool, correct_label: str) -> str:
    """The correction to store: empty for an acceptance; a label of the task's, other than its result."""
    if not correct_label:
        return ""
    if correct_label not in task.labels:
        raise DomainError(
            f"{correct_label!r} is not one of this task's labels.",
            code="invalid_label",
            fields={"correct_label": [f"Must be one of: {', '.join(task.labels)}."]},
        )
    if correct_label == task.result:
        if not accepted:
            raise DomainError(
                "correct_label is the task's own result: a rejection must name another label.",
                code="contradictory_feedback",
                fields={"correct_label": ["Equals the result."]},
            )
        return ""  # naming the answer it already has confirms it
    if accepted:
        raise DomainError(
            "accepted is true but correct_label names a different label.",
            code="contradictory_feedback",
            fields={"accepted": ["Must be false when correct_label differs from the result."]},
        )
    return correct_label
