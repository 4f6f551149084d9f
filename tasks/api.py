"""Task and account endpoints. Views validate and delegate; nothing here decides business rules."""

from __future__ import annotations

import re

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from core.serializers import RejectUnknownKeysMixin, SharedFieldsMixin, StrictJSONTypesMixin
from tasks.models import Task
from tasks.selectors import task_get_visible, task_list_visible
from tasks.services.feedback import task_feedback
from tasks.services.idempotency import task_submit_idempotent
from tasks.services.limits import SubmitLimit
from tasks.services.submission import TaskRequest, task_submit
from tasks.webhooks.addresses import RefusedCallback, check_callback_url
from users.permissions import IsBuyerOrReadOnly

MAX_DESCRIPTION = 8000
MAX_LABELS = 100
MAX_LABEL_LENGTH = 200
MAX_TASK_TYPE = 64
MAX_AGENT_NAME = 64
MAX_CALLBACK_URL = 2000
MIN_COMPLEXITY, MAX_COMPLEXITY = 1, 10
IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_IDEMPOTENCY_KEY = 255
IDEMPOTENCY_KEY_RE = re.compile(rf"[\x21-\x7e]{{1,{MAX_IDEMPOTENCY_KEY}}}")


class SubmitRate(SimpleRateThrottle):
    """AICP_THROTTLE_SUBMIT, parsed as DRF parses a rate; task_submit enforces it (``SubmitLimit``).

    Not a throttle in front of the view: the limit is checked inside the transaction that writes the task,
    with the buyer's accounts locked, so concurrent submissions cannot pass it together, and it counts
    tasks created (the tasks table keeps each one's time under an index on (buyer, created_at)). Refused
    requests and idempotent replays create no task and do not count.
    """

    scope = "submit"

    def get_cache_key(self, request: Request, view: APIView) -> str | None:
        return None  # unused: the history is the tasks table

    def limit(self) -> SubmitLimit | None:
        return None if self.rate is None else SubmitLimit(count=self.num_requests, window_s=self.duration)


class TaskOutputSerializer(SharedFieldsMixin, serializers.ModelSerializer):
    agent = serializers.CharField(source="agent.name")
    executed_by = serializers.CharField(source="executed_by.name", allow_null=True, default=None)
    buyer = serializers.CharField(source="buyer.username")
    # A string, not a "uri": empty when the task has no webhook.
    callback_url = serializers.CharField(help_text="Signed webhook on completion or failure; empty: none.")

    class Meta:
        model = Task
        fields = [
            "id",
            "buyer",
            "description",
            "complexity",
            "task_type",
            "labels",
            "requested_agent",
            "agent",
            "executed_by",
            "status",
            "result",
            "confidence",
            "price",
            "cost",
            "attempts",
            "error",
            "error_code",
            "prompt_tokens",
            "completion_tokens",
            "latency_ms",
            "accepted",
            "correct_label",
            "callback_url",
            "priority",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    def to_representation(self, instance: Task) -> dict:
        return self.render(instance)

    @classmethod
    def render(cls, instance: Task) -> dict:
        """``TaskOutputSerializer(task).data``, without building a serializer (a DRF field) to get it.

        Building one per answer cost POST /tasks more than rendering the task did.
        """
        # DRF's loop resolves each field's source through get_attribute and its error handling on every
        # call; for every task answered that was the largest part of rendering it. The same fields, in the
        # same order, each converted by its own to_representation; None stays None, as DRF renders it.
        data = {}
        for name, field, path in cls._rendering_plan():
            value = instance
            for attribute in path:
                value = getattr(value, attribute)
                if value is None:
                    break
            data[name] = None if value is None else field.to_representation(value)
        return data

    @classmethod
    def _rendering_plan(cls) -> list[tuple[str, serializers.Field, tuple[str, ...]]]:
        plan = cls.__dict__.get("_plan")
        if plan is None:
            fields = cls().fields  # shared and bound once (SharedFieldsMixin)
            plan = [(name, field, tuple(field.source.split("."))) for name, field in fields.items()]
            cls._plan = plan
        return plan


class TaskSubmitInputSerializer(
    SharedFieldsMixin, RejectUnknownKeysMixin, StrictJSONTypesMixin, serializers.Serializer
):
    description = serializers.CharField(max_length=MAX_DESCRIPTION, trim_whitespace=True)
    complexity = serializers.IntegerField(min_value=MIN_COMPLEXITY, max_value=MAX_COMPLEXITY)
    task_type = serializers.SlugField(max_length=MAX_TASK_TYPE, required=False, allow_blank=True, default="")
    labels = serializers.ListField(
        child=serializers.CharField(max_length=MAX_LABEL_LENGTH, trim_whitespace=True),
        min_length=2,
        max_length=MAX_LABELS,
        required=False,
        allow_null=True,
        default=None,
    )
    agent = serializers.CharField(max_length=MAX_AGENT_NAME, required=False, default="auto")
    callback_url = serializers.URLField(
        max_length=MAX_CALLBACK_URL,
        required=False,
        allow_blank=True,
        default="",
        help_text=(
            "Signed webhook (AICP-Signature) POSTed when the task completes or fails: https to a public "
            "address, or a host listed in AICP_WEBHOOK_ALLOW_HOSTS."
        ),
    )
    priority = serializers.ChoiceField(
        choices=Task.Priority.values,
        required=False,
        default=Task.Priority.NORMAL,
        help_text="batch: run through the OpenAI Batch API within 24 h, at a discount (AICP_BATCH_DISCOUNT).",
    )

    def validate_callback_url(self, value: str) -> str:
        if value:
            try:
                check_callback_url(value)
            except RefusedCallback as refused:
                raise serializers.ValidationError(str(refused)) from refused
        return value

    def validate_complexity(self, value: int) -> int:
        # A JSON true/1.0/"3" would pass IntegerField's coercion; the contract says an integer.
        raw = self.initial_data.get("complexity")
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise serializers.ValidationError("Must be an integer from 1 to 10.")
        return value

    def validate_labels(self, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if len(set(value)) != len(value):
            raise serializers.ValidationError("Labels must be distinct.")
        return value

    def unknown_key_message(self, key: str) -> str:
        if key in TaskOutputSerializer.Meta.fields:
            # Price, status, result, buyer, executed_by … are the server's: say so, not just "unknown".
            return "This field is computed by the server and cannot be set."
        return super().unknown_key_message(key)


def idempotency_header_parameter(description: str) -> OpenApiParameter:
    """The schema of the Idempotency-Key header, as POST /tasks and POST /tasks/batch accept it."""
    return OpenApiParameter(
        IDEMPOTENCY_HEADER,
        str,
        location=OpenApiParameter.HEADER,
        required=False,
        pattern=f"^{IDEMPOTENCY_KEY_RE.pattern}$",
        description=description,
    )


def idempotency_key(request: Request) -> str | None:
    """The request's Idempotency-Key header, checked (400 when malformed); None without one."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is not None and not IDEMPOTENCY_KEY_RE.fullmatch(key):
        raise serializers.ValidationError(
            {
                IDEMPOTENCY_HEADER: [
                    f"Must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters without spaces."
                ]
            }
        )
    return key


def task_request_from(data: dict) -> TaskRequest:
    """The service's request from a TaskSubmitInputSerializer's validated data."""
    return TaskRequest(
        description=data["description"],
        complexity=data["complexity"],
        task_type=data["task_type"],
        labels=tuple(data["labels"]) if data["labels"] else None,
        agent=data["agent"],
        callback_url=data["callback_url"],
        priority=data["priority"],
    )


class TaskListApi(APIView):
    # Declared on the class so the schema documents the paginated envelope the list really returns.
    pagination_class = api_settings.DEFAULT_PAGINATION_CLASS
    permission_classes = [IsAuthenticated, IsBuyerOrReadOnly]

    throttle_classes: list = []  # POST /tasks is limited inside its write (SubmitRate)

    @extend_schema(
        parameters=[OpenApiParameter("status", str, enum=[choice for choice, _ in Task.Status.choices])],
        responses=TaskOutputSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        status_filter = request.query_params.get("status")
        if status_filter is not None and status_filter not in Task.Status.values:
            raise serializers.ValidationError(
                {"status": [f"Must be one of {', '.join(Task.Status.values)}."]}
            )
        tasks = task_list_visible(user=request.user, status=status_filter)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(tasks, request, view=self)
        return paginator.get_paginated_response(TaskOutputSerializer(page, many=True).data)

    @extend_schema(
        request=TaskSubmitInputSerializer,
        parameters=[
            idempotency_header_parameter(
                f"Optional, 1–{MAX_IDEMPOTENCY_KEY} printable ASCII characters, per user, kept "
                "AICP_IDEMPOTENCY_TTL_H hours. Repeating a key with the same body replays the first "
                "response (header Idempotent-Replayed: true) and charges nothing; with another body, 422."
            )
        ],
        responses={
            201: TaskOutputSerializer,
            402: OpenApiResponse(description="Available balance below the quote; no task created."),
            403: OpenApiResponse(description="buyers_only: an operator account cannot submit tasks."),
            404: OpenApiResponse(description="No active agent with the requested name."),
            409: OpenApiResponse(description="The same Idempotency-Key is still being processed."),
            422: OpenApiResponse(description="The Idempotency-Key was used with a different body."),
            429: OpenApiResponse(
                description=(
                    "Submit rate limit (code throttled; Retry-After: seconds until a place frees up) or "
                    "daily spend cap reached (code spend_cap_exceeded; Retry-After: seconds to midnight UTC)."
                )
            ),
        },
    )
    def post(self, request: Request) -> Response:
        key = idempotency_key(request)
        serializer = TaskSubmitInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        task_request = task_request_from(serializer.validated_data)
        limit = SubmitRate().limit()
        if key is None:
            task = task_submit(buyer=request.user, request=task_request, limit=limit)
            return Response(TaskOutputSerializer.render(task), status=status.HTTP_201_CREATED)
        result = task_submit_idempotent(
            buyer=request.user,
            request=task_request,
            key=key,
            render=TaskOutputSerializer.render,
            limit=limit,
        )
        response = Response(result.body, status=result.status_code)
        if result.replayed:
            response[REPLAYED_HEADER] = "true"
        return response


class TaskDetailApi(APIView):
    @extend_schema(responses=TaskOutputSerializer)
    def get(self, request: Request, task_id: str) -> Response:
        return Response(TaskOutputSerializer.render(task_get_visible(user=request.user, task_id=task_id)))


class TaskFeedbackApi(APIView):
    class InputSerializer(RejectUnknownKeysMixin, StrictJSONTypesMixin, serializers.Serializer):
        accepted = serializers.BooleanField()
        correct_label = serializers.CharField(
            max_length=MAX_LABEL_LENGTH, required=False, allow_blank=True, default="", trim_whitespace=True
        )

        def validate_accepted(self, value: bool) -> bool:
            # BooleanField would also take "yes", 1 or "false"; the contract says a JSON boolean.
            if not isinstance(self.initial_data.get("accepted"), bool):
                raise serializers.ValidationError("Must be true or false.")
            return value

    @extend_schema(
        request=InputSerializer,
        responses={
            200: TaskOutputSerializer,
            400: OpenApiResponse(description="correct_label is not one of the task's labels, or contradicts"),
            403: OpenApiResponse(description="An operator: only the task's buyer gives feedback."),
            404: OpenApiResponse(description="No such task, or someone else's."),
            409: OpenApiResponse(description="Not a completed labeling task, or feedback already given."),
        },
    )
    def post(self, request: Request, task_id: str) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        task = task_feedback(
            user=request.user,
            task_id=task_id,
            accepted=serializer.validated_data["accepted"],
            correct_label=serializer.validated_data["correct_label"],
        )
        return Response(TaskOutputSerializer.render(task))
