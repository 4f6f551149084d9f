"""GET /tasks/{id}/deliveries: a task's webhook deliveries and every attempt, for its buyer."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tasks.models import WebhookAttempt, WebhookDelivery
from tasks.selectors import task_get_visible, webhook_deliveries_of


class WebhookAttemptOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookAttempt
        fields = ["number", "started_at", "status_code", "duration_ms", "error"]
        read_only_fields = fields


class WebhookDeliveryOutputSerializer(serializers.ModelSerializer):
    attempt_log = WebhookAttemptOutputSerializer(many=True, read_only=True)

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "event",
            "url",
            "status",
            "attempts",
            "next_attempt_at",
            "delivered_at",
            "created_at",
            "attempt_log",
        ]
        read_only_fields = fields


class TaskDeliveriesApi(APIView):
    @extend_schema(
        responses={
            200: WebhookDeliveryOutputSerializer(many=True),
            404: OpenApiResponse(description="No such task, or someone else's."),
        },
        description=(
            "The task's webhook deliveries (task.completed / task.failed to its callback_url), each with "
            "every attempt: the receiver's HTTP status (null: no answer), duration and error."
        ),
    )
    def get(self, request: Request, task_id: str) -> Response:
        task = task_get_visible(user=request.user, task_id=task_id)
        deliveries = webhook_deliveries_of(task_id=task.pk)
        return Response(WebhookDeliveryOutputSerializer(deliveries, many=True).data)
