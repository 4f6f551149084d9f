"""A delivery job's work: claim the delivery, check the URL again, sign and POST the event, record it.

The body is ``{"event": ..., "task": <the GET /tasks/{id} body>}`` rendered when the attempt is made.
"""

from __future__ import annotations

import json
import time
import uuid

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

from tasks.api import TaskOutputSerializer
from tasks.models import Task, WebhookDelivery
from tasks.services.webhooks import (
    AttemptOutcome,
    webhook_attempt_claim,
    webhook_attempt_record,
    webhook_delivery_open,
)
from tasks.webhooks import sender
from tasks.webhooks.addresses import RefusedCallback, check_callback_url
from tasks.webhooks.signing import header_value


def event_body(*, task: Task, event: str) -> bytes:
    payload = {"event": event, "task": TaskOutputSerializer.render(task)}
    return json.dumps(payload, cls=DjangoJSONEncoder, separators=(",", ":")).encode()


def deliver_event(task_id: uuid.UUID, event: str) -> WebhookDelivery | None:
    """The first attempt of a task's event (opening its delivery record)."""
    delivery = webhook_delivery_open(task_id=task_id, event=event)
    if delivery is None:
        return None
    return deliver(delivery.pk)


def deliver(delivery_id: uuid.UUID) -> WebhookDelivery | None:
    """One attempt of the delivery if it is due and nobody else is sending it; the delivery as recorded."""
    delivery = webhook_attempt_claim(delivery_id=delivery_id)
    if delivery is None:
        return None
    task = Task.objects.select_related("agent", "executed_by", "buyer").get(pk=delivery.task_id)
    started_at = timezone.now()
    started = time.monotonic()
    try:
        target = check_callback_url(delivery.url)
    except RefusedCallback as refused:
        outcome = AttemptOutcome(
            started_at=started_at,
            status_code=None,
            duration_ms=round((time.monotonic() - started) * 1000),
            error=f"refused: {refused}",
            ok=False,
        )
    else:
        body = event_body(task=task, event=delivery.event)
        signature = header_value(secret=task.buyer.webhook_secret, timestamp=int(time.time()), body=body)
        sent = sender.post(
            target=target, body=body, signature=signature, timeout_s=settings.AICP_WEBHOOK_TIMEOUT_S
        )
        outcome = AttemptOutcome(
            started_at=started_at,
            status_code=sent.status_code,
            duration_ms=sent.duration_ms,
            error=sent.error,
            ok=sent.ok,
        )
    return webhook_attempt_record(delivery_id=delivery.pk, outcome=outcome)
