"""Webhook deliveries' records: opened for a finished task's event, claimed for an attempt, each attempt
written with its outcome and the next try scheduled (or given up), re-sent by an operator.

The sending itself (network I/O) is tasks.webhooks.delivery's; these writes are short transactions
around it, never inside the task's completing transaction.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.exceptions import DomainError
from tasks.models import Task, WebhookAttempt, WebhookDelivery
from tasks.webhooks import queue as webhook_queue

logger = logging.getLogger("tasks.webhooks")

# Longer than an attempt can take (connect + send + answer, each bounded by the timeout), so a lease runs
# out only when its worker died.
_LEASE_MARGIN_S = 60.0


def retry_delay_s(*, attempt: int, jitter: Callable[[], float] = random.random) -> float:
    """Seconds before attempt ``attempt + 1``: exponential from AICP_WEBHOOK_BACKOFF_S, capped at
    AICP_WEBHOOK_BACKOFF_MAX_S, with jitter (half to all of it) so receivers that failed together are not
    retried in lockstep.

    Not agents.retry's policy: that one bounds a call's retries to seconds (a 10 s cap, a few attempts);
    a webhook is retried for up to a day.
    """
    ceiling = min(
        settings.AICP_WEBHOOK_BACKOFF_S * 2 ** max(0, attempt - 1), settings.AICP_WEBHOOK_BACKOFF_MAX_S
    )
    return ceiling * (0.5 + 0.5 * jitter())


@transaction.atomic
def webhook_delivery_open(*, task_id: uuid.UUID, event: str) -> WebhookDelivery | None:
    """The task's delivery of ``event``, created on first call (a repeated job finds the same one);
    None when the task has no callback_url."""
    task = Task.objects.only("pk", "callback_url").get(pk=task_id)
    if not task.callback_url:
        return None
    existing = WebhookDelivery.objects.filter(task_id=task_id, event=event).first()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            return WebhookDelivery.objects.create(
                task_id=task_id,
                event=event,
                url=task.callback_url,
                next_attempt_at=timezone.now(),
                window_started_at=timezone.now(),
            )
    except IntegrityError:  # a concurrent job created it first
        return WebhookDelivery.objects.get(task_id=task_id, event=event)


@transaction.atomic
def webhook_attempt_claim(*, delivery_id: uuid.UUID, now: datetime | None = None) -> WebhookDelivery | None:
    """Takes the pending delivery for one attempt (a lease), or None: delivered, given up, not due yet, or
    another worker is sending it now."""
    now = now or timezone.now()
    lease = now + timedelta(seconds=3 * settings.AICP_WEBHOOK_TIMEOUT_S + _LEASE_MARGIN_S)
    claimed = (
        WebhookDelivery.objects.filter(pk=delivery_id, status=WebhookDelivery.Status.PENDING)
        .exclude(lease_until__gt=now)
        .exclude(next_attempt_at__gt=now)
        .update(lease_until=lease, updated_at=now)
    )
    if not claimed:
        return None
    return WebhookDelivery.objects.select_related("task__buyer").get(pk=delivery_id)


@dataclass(frozen=True)
class AttemptOutcome:
    started_at: datetime
    status_code: int | None
    duration_ms: int
    error: str
    ok: bool


@transaction.atomic
def webhook_attempt_record(
    *, delivery_id: uuid.UUID, outcome: AttemptOutcome, jitter: Callable[[], float] = random.random
) -> WebhookDelivery:
    """Writes the attempt; the delivery is delivered, or retried after a backoff, or (past the retry
    window) given up. A retry is scheduled when this transaction commits."""
    delivery = WebhookDelivery.objects.select_for_update().get(pk=delivery_id)
    number = delivery.attempts + 1
    WebhookAttempt.objects.create(
        delivery=delivery,
        number=number,
        started_at=outcome.started_at,
        status_code=outcome.status_code,
        duration_ms=outcome.duration_ms,
        error=outcome.error[:2000],
    )
    now = timezone.now()
    delivery.attempts = number
    delivery.lease_until = None
    if outcome.ok:
        delivery.status = WebhookDelivery.Status.DELIVERED
        delivery.delivered_at = now
        delivery.next_attempt_at = None
        logger.info("Webhook %s for task %s delivered (attempt %d)", delivery.event, delivery.task_id, number)
    else:
        retry_at = now + timedelta(seconds=retry_delay_s(attempt=number, jitter=jitter))
        window_ends = delivery.window_started_at + timedelta(seconds=settings.AICP_WEBHOOK_RETRY_WINDOW_S)
        if retry_at > window_ends:
            delivery.status = WebhookDelivery.Status.GAVE_UP
            delivery.next_attempt_at = None
            logger.warning(
                "Webhook %s for task %s GAVE UP after %d attempts: %s",
                delivery.event,
                delivery.task_id,
                number,
                outcome.error,
            )
        else:
            delivery.next_attempt_at = retry_at
            delivery_pk = delivery.pk
            transaction.on_commit(lambda: webhook_queue.enqueue_attempt(delivery_pk, at=retry_at))
    delivery.save(
        update_fields=["attempts", "lease_until", "status", "delivered_at", "next_attempt_at", "updated_at"]
    )
    return delivery


@transaction.atomic
def webhook_resend(*, delivery_id: uuid.UUID) -> WebhookDelivery:
    """An operator's re-send: the delivery is pending again, tried now, with a fresh retry window."""
    delivery = WebhookDelivery.objects.select_for_update().get(pk=delivery_id)
    if delivery.lease_until is not None and delivery.lease_until > timezone.now():
        raise DomainError("An attempt of this delivery is being sent right now.", code="delivery_in_progress")
    now = timezone.now()
    delivery.status = WebhookDelivery.Status.PENDING
    delivery.next_attempt_at = now
    delivery.window_started_at = now
    delivery.save(update_fields=["status", "next_attempt_at", "window_started_at", "updated_at"])
    delivery_pk = delivery.pk
    transaction.on_commit(lambda: webhook_queue.enqueue_attempt(delivery_pk))
    return delivery
