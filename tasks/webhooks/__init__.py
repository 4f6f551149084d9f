"""Signed webhooks for finished tasks (issue 21 item 2).

``addresses`` (which callback URLs may be called: no SSRF), ``signing`` (the AICP-Signature header),
``queue`` (enqueue on commit), ``sender`` (one POST, pinned to the checked address), ``delivery`` (a
delivery job: claim, send, record), ``api`` (GET /tasks/{id}/deliveries). The records are
tasks.models.WebhookDelivery / WebhookAttempt, written by tasks.services.webhooks.
"""
