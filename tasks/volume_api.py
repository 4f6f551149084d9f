"""Buyers at volume: POST /tasks/batch (JSON or NDJSON, all-or-nothing) and GET /tasks/export (streamed
JSONL or CSV). Views validate and delegate, like tasks/api.py, whose single-task serializer they reuse."""

from __future__ import annotations

import json
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
from rest_framework.views import APIView

from core.exceptions import DomainError
from core.serializers import RejectUnknownKeysMixin
from tasks.api import (
    REPLAYED_HEADER,
    SubmitRate,
    TaskOutputSerializer,
    TaskSubmitInputSerializer,
    idempotency_header_parameter,
    idempotency_key,
    task_request_from,
)
from tasks.export import EXPORT_FORMATS, EXPORT_TIME_FILTERS, export_filters, export_stream, task_export_pages
from tasks.models import Task
from tasks.services.batch import (
    MAX_JSON_ITEMS,
    MAX_NDJSON_ITEMS,
    BatchInvalid,
    batch_fingerprint,
    batch_plan,
    batch_write,
)
from tasks.services.idempotency import idempotent
from tasks.services.submission import TaskRequest
from users.permissions import IsBuyerOrReadOnly

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
            idempotency_header_parameter(
                "Optional; covers the whole batch (same key space as POST /tasks). Repeating it with the "
                "same tasks replays the first response (the same ids; header Idempotent-Replayed: true) "
                "and charges nothing; with other tasks, 422."
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
