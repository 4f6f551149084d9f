"""Task and account endpoints. Views validate and delegate; nothing here decides business rules."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from core.exceptions import DomainError
from core.serializers import RejectUnknownKeysMixin, SharedFieldsMixin, StrictJSONTypesMixin
from tasks.export import EXPORT_FORMATS, EXPORT_TIME_FILTERS, export_filters, export_stream, task_export_pages
from tasks.models import Task
from tasks.selectors import task_get_visible, task_list_visible
from tasks.services.batch import (
    MAX_JSON_ITEMS,
    MAX_NDJSON_ITEMS,
    BatchInvalid,
    batch_fingerprint,
    batch_plan,
    batch_write,
)
from tasks.services.feedback import task_feedback
from tasks.services.idempotency import idempotent, task_submit_idempotent
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
            OpenApiParameter(
                IDEMPOTENCY_HEADER,
                str,
                location=OpenApiParameter.HEADER,
                required=False,
                pattern=f"^{IDEMPOTENCY_KEY_RE.pattern}$",
                description=(
                    f"Optional, 1–{MAX_IDEMPOTENCY_KEY} printable ASCII characters, per user, kept "
                    "AICP_IDEMPOTENCY_TTL_H hours. Repeating a key with the same body replays the first "
                    "response (header Idempotent-Replayed: true) and charges nothing; with another body, 422."
                ),
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


# --- buyers at volume: POST /tasks/batch, GET /tasks/export (issue 21) -----------------------------------

MAX_BATCH_BODY_BYTES = 64 * 1024 * 1024
NDJSON_MEDIA_TYPE = "application/x-ndjson"


@dataclass(frozen=True)
class _BadLine:
    message: str


class BatchTooLarge(DomainError):
    status_code = 413
    code = "payload_too_large"


def _read_batch_body(stream: Any) -> bytes:
    """The raw body, at most MAX_BATCH_BODY_BYTES (413 beyond; a chunked body has no Content-Length)."""
    body = stream.read(MAX_BATCH_BODY_BYTES + 1) if stream is not None else b""
    if len(body) > MAX_BATCH_BODY_BYTES:
        raise BatchTooLarge(
            f"The request body is larger than the {MAX_BATCH_BODY_BYTES} bytes a batch may have."
        )
    return body


class BatchJSONParser(BaseParser):
    """``application/json`` for POST /tasks/batch: a batch body may be larger than AICP_MAX_BODY_BYTES (up to
    MAX_BATCH_BODY_BYTES), so it is read here rather than by DRF's JSONParser, which goes through
    ``request.body`` and its limit. JSON nested too deep is a 400, as core.parsers.JSONParser answers."""

    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        try:
            return json.loads(_read_batch_body(stream).decode("utf-8"))
        except (ValueError, RecursionError) as exc:
            raise ParseError(f"JSON parse error - {exc}") from exc


class NDJSONParser(BaseParser):
    """``application/x-ndjson``: one JSON value per line. Lines that do not parse are kept as ``_BadLine``
    so the view reports them by index with the other invalid items; one trailing newline is allowed."""

    media_type = NDJSON_MEDIA_TYPE

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        try:
            text = _read_batch_body(stream).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ParseError("NDJSON parse error - the body is not UTF-8") from exc
        lines = text.split("\n")
        while lines and not lines[-1].strip():
            lines.pop()
        items: list[object] = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                items.append(_BadLine(f"Line {number} is empty: one task per line."))
                continue
            try:
                items.append(json.loads(line))
            except (ValueError, RecursionError) as exc:
                items.append(_BadLine(f"Line {number} is not valid JSON: {exc}"))
        return _NDJSONItems(items)


class _NDJSONItems(list):
    """What NDJSONParser returns: the items, told apart from a JSON body's ``{"tasks": [...]}``."""


def _messages(errors: object, prefix: str = "") -> list[str]:
    """A serializer's errors as plain messages naming their field (`labels: 1: This field may not be
    blank.`)."""
    if isinstance(errors, dict):
        return [m for key, inner in errors.items() for m in _messages(inner, f"{prefix}{key}: ")]
    if isinstance(errors, list):
        return [m for inner in errors for m in _messages(inner, prefix)]
    return [f"{prefix}{errors}"]


class TaskBatchInputSerializer(RejectUnknownKeysMixin, serializers.Serializer):
    """For the schema: each item is validated by TaskSubmitInputSerializer, the batch by the view."""

    tasks = serializers.ListField(
        child=TaskSubmitInputSerializer(),
        min_length=1,
        max_length=MAX_JSON_ITEMS,
        help_text=f"1 to {MAX_JSON_ITEMS} tasks, as POST /tasks takes them.",
    )


class TaskBatchOutputSerializer(serializers.Serializer):
    tasks = TaskOutputSerializer(many=True, help_text="The tasks created, in input order.")


def _request_body_required(method: Any) -> Any:
    """Marks an @extend_schema'd view method's request body required: drf-spectacular leaves `required` off
    when one media type's schema is given raw (the NDJSON string), though the endpoint needs a body."""
    extended = method.kwargs["schema"]

    class RequiredBodySchema(extended):
        def _get_request_body(self, direction: str = "request") -> Any:
            body = super()._get_request_body(direction)
            if body is not None:
                body["required"] = True
            return body

    method.kwargs["schema"] = RequiredBodySchema
    return method


class TaskBatchApi(APIView):
    permission_classes = [IsAuthenticated, IsBuyerOrReadOnly]
    parser_classes = [BatchJSONParser, NDJSONParser]
    throttle_classes: list = []  # each task counts against the submit limit inside the write (SubmitRate)

    @_request_body_required
    @extend_schema(
        operation_id="tasks_batch_create",
        request={
            "application/json": TaskBatchInputSerializer,
            NDJSON_MEDIA_TYPE: {
                "type": "string",
                "description": (
                    f"One task per line (1 to {MAX_NDJSON_ITEMS} lines), each the JSON object POST /tasks "
                    "takes."
                ),
            },
        },
        parameters=[
            OpenApiParameter(
                IDEMPOTENCY_HEADER,
                str,
                location=OpenApiParameter.HEADER,
                required=False,
                pattern=f"^{IDEMPOTENCY_KEY_RE.pattern}$",
                description=(
                    "Optional; covers the whole batch (same key space as POST /tasks). Repeating it with the "
                    "same tasks replays the first response (the same ids; header Idempotent-Replayed: true) "
                    "and charges nothing; with other tasks, 422."
                ),
            )
        ],
        responses={
            201: TaskBatchOutputSerializer,
            400: OpenApiResponse(
                description=(
                    'Invalid batch, nothing created: error.fields maps each invalid item\'s index ("0", '
                    '"17", …) to its messages; or the batch itself (key `tasks`: empty, over '
                    f"{MAX_JSON_ITEMS} JSON items or {MAX_NDJSON_ITEMS} NDJSON lines)."
                )
            ),
            402: OpenApiResponse(
                description=(
                    "The total quote exceeds the available balance (code insufficient_funds) or what is "
                    "left of today's spend cap (code spend_cap_exceeded); error.fields.shortfall says by "
                    "how much. Nothing created or held."
                )
            ),
            403: OpenApiResponse(description="buyers_only: an operator account cannot submit tasks."),
            404: OpenApiResponse(
                description="agent_not_found: items name agents that do not exist (error.fields by index)."
            ),
            409: OpenApiResponse(description="The same Idempotency-Key is still being processed."),
            413: OpenApiResponse(description=f"Body over {MAX_BATCH_BODY_BYTES} bytes."),
            422: OpenApiResponse(description="The Idempotency-Key was used with a different body."),
            429: OpenApiResponse(description="The batch would pass the submit rate limit; nothing created."),
        },
    )
    def post(self, request: Request) -> Response:
        key = idempotency_key(request)
        if int(request.META.get("CONTENT_LENGTH") or 0) > MAX_BATCH_BODY_BYTES:
            raise BatchTooLarge(
                f"The request body is larger than the {MAX_BATCH_BODY_BYTES} bytes a batch may have."
            )
        items = self._items(request.data)
        requests: list[TaskRequest] = []
        errors: dict[str, list[str]] = {}
        for index, item in enumerate(items):
            if isinstance(item, _BadLine):
                errors[str(index)] = [item.message]
                continue
            if not isinstance(item, dict):
                errors[str(index)] = ["Must be a JSON object: a task as POST /tasks takes it."]
                continue
            serializer = TaskSubmitInputSerializer(data=item)
            if serializer.is_valid():
                requests.append(task_request_from(serializer.validated_data))
            else:
                errors[str(index)] = _messages(serializer.errors)
        if errors:
            raise BatchInvalid(
                f"{len(errors)} of {len(items)} tasks are invalid; nothing was submitted. "
                f"First: {next(iter(errors))}: {next(iter(errors.values()))[0]}",
                fields=errors,
            )
        limit = SubmitRate().limit()
        # Planned (agents, Duke, repeat answers, quotes) before the idempotency key's transaction, which on
        # SQLite holds the write lock from its BEGIN.
        plan = batch_plan(buyer=request.user, requests=requests)

        def create() -> tuple[Task, dict]:
            tasks = batch_write(buyer=request.user, plan=plan, limit=limit)
            return tasks[0], {"tasks": [TaskOutputSerializer.render(task) for task in tasks]}

        if key is None:
            return Response(create()[1], status=status.HTTP_201_CREATED)
        result = idempotent(
            buyer=request.user, key=key, fingerprint=batch_fingerprint(requests), create=create
        )
        response = Response(result.body, status=result.status_code)
        if result.replayed:
            response[REPLAYED_HEADER] = "true"
        return response

    @staticmethod
    def _items(data: object) -> list[object]:
        if isinstance(data, _NDJSONItems):
            items, most, unit = list(data), MAX_NDJSON_ITEMS, "NDJSON lines"
        else:
            if not isinstance(data, dict) or not isinstance(data.get("tasks"), list):
                raise serializers.ValidationError({"tasks": ['Send {"tasks": [<task>, …]} or NDJSON lines.']})
            unknown = sorted(set(data) - {"tasks"})
            if unknown:
                raise serializers.ValidationError({key: ["Unknown field."] for key in unknown})
            items, most, unit = data["tasks"], MAX_JSON_ITEMS, "tasks in a JSON batch"
        if not items:
            raise serializers.ValidationError({"tasks": ["At least one task."]})
        if len(items) > most:
            raise serializers.ValidationError(
                {"tasks": [f"At most {most} {unit} ({len(items)} sent); split the batch."]}
            )
        return items


class TaskExportApi(APIView):
    """The caller's tasks streamed as JSONL or CSV; operators export every buyer's tasks (as GET /tasks
    lists them)."""

    def perform_content_negotiation(self, request: Request, force: bool = False) -> tuple[Any, str]:
        # ``format`` is this endpoint's own parameter (jsonl/csv), not DRF's renderer override; errors
        # are JSON.
        renderer = JSONRenderer()
        return renderer, renderer.media_type

    @extend_schema(
        operation_id="tasks_export",
        parameters=[
            OpenApiParameter("format", str, enum=list(EXPORT_FORMATS), description="jsonl (default) or csv."),
            OpenApiParameter("status", str, enum=[choice for choice, _ in Task.Status.choices]),
            OpenApiParameter("task_type", str),
            *[
                OpenApiParameter(
                    name,
                    OpenApiTypes.DATETIME,
                    description=f"ISO 8601 (no zone: UTC). {text}",
                )
                for name, text in EXPORT_TIME_FILTERS.items()
            ],
        ],
        responses={
            (200, "application/x-ndjson"): OpenApiResponse(
                OpenApiTypes.STR, description="One task per line, each the body GET /tasks/{id} returns."
            ),
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR,
                description="A header row, then one task per row; labels as a JSON array, null as empty.",
            ),
            400: OpenApiResponse(description="An unknown format or status, or a malformed time."),
        },
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        params = request.query_params
        export_format = params.get("format", "jsonl")
        if export_format not in EXPORT_FORMATS:
            raise serializers.ValidationError({"format": [f"Must be one of {', '.join(EXPORT_FORMATS)}."]})
        filters = export_filters(params)
        pages = task_export_pages(user=request.user, filters=filters)
        media_type, body = export_stream(
            pages,
            export_format=export_format,
            render=TaskOutputSerializer.render,
            columns=TaskOutputSerializer.Meta.fields,
        )
        response = StreamingHttpResponse(body, content_type=media_type)
        response["Content-Disposition"] = f'attachment; filename="tasks.{export_format}"'
        response["Cache-Control"] = "no-store"
        return response
