"""GET /tasks/export: the caller's tasks read page by page (keyset pagination) and written as JSONL or CSV.

Constant memory at any size: the rows are read ``EXPORT_PAGE`` at a time in (created_at, id) order, each
page after the last row of the one before (no OFFSET, no ``.all()`` into memory), and each page is
rendered into one chunk of the streamed response as it is read. A task created while the export runs is
included if it sorts after the page being read (keyset pagination never repeats or skips a row that was
there when the export began).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db.models import Q, QuerySet
from django.utils.dateparse import parse_datetime
from rest_framework import serializers

from tasks.models import Task
from tasks.selectors import task_list_visible
from users.models import User

EXPORT_PAGE = 500
EXPORT_FORMATS = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}
EXPORT_TIME_FILTERS = {
    "created_after": "Tasks created at or after this time.",
    "created_before": "Tasks created before this time.",
    "completed_after": "Tasks finished (completed or failed: add status=completed for completed only) at or "
    "after this time; unfinished tasks are left out.",
    "completed_before": "Tasks finished before this time; unfinished tasks are left out.",
}

EXPORT_PARAMETERS = {"format", "status", "task_type", *EXPORT_TIME_FILTERS}


@dataclass(frozen=True)
class ExportFilters:
    status: str | None = None
    task_type: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    completed_after: datetime | None = None
    completed_before: datetime | None = None


def export_filters(params: Mapping[str, str]) -> ExportFilters:
    """The query's filters, checked (a ValidationError naming the parameter when one is malformed)."""
    errors: dict[str, list[str]] = {
        name: ["Unknown parameter."] for name in sorted(set(params) - EXPORT_PARAMETERS)
    }
    status = params.get("status")
    if status is not None and status not in Task.Status.values:
        errors["status"] = [f"Must be one of {', '.join(Task.Status.values)}."]
    times: dict[str, datetime | None] = {}
    for name in EXPORT_TIME_FILTERS:
        raw = params.get(name)
        if raw is None:
            times[name] = None
            continue
        try:
            # A "+" in a query string arrives as a space (an unencoded "+01:00" offset).
            value = parse_datetime(raw.replace(" ", "+")) if raw else None
            # In UTC: PostgreSQL refuses an offset beyond ±15:59 that Python accepts (up to ±23:59), and
            # a moment before year 1 or after 9999 in UTC (OverflowError) is no date-time at all.
            if value is not None:
                value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        except (ValueError, OverflowError):
            value = None
        if value is None:
            errors[name] = ["Must be an ISO 8601 date-time, e.g. 2026-01-31T12:00:00Z."]
            continue
        times[name] = value
    if errors:
        raise serializers.ValidationError(errors)
    return ExportFilters(status=status, task_type=params.get("task_type") or None, **times)


def task_export_queryset(*, user: User, filters: ExportFilters) -> QuerySet[Task]:
    """The tasks an export returns, oldest first: the buyer's own (an operator's: all), filtered."""
    tasks = task_list_visible(user=user, status=filters.status)
    if filters.task_type is not None:
        tasks = tasks.filter(task_type=filters.task_type)
    if filters.created_after is not None:
        tasks = tasks.filter(created_at__gte=filters.created_after)
    if filters.created_before is not None:
        tasks = tasks.filter(created_at__lt=filters.created_before)
    if filters.completed_after is not None:
        tasks = tasks.filter(finished_at__gte=filters.completed_after)
    if filters.completed_before is not None:
        tasks = tasks.filter(finished_at__lt=filters.completed_before)
    return tasks.order_by("created_at", "id")


def task_export_pages(
    *, user: User, filters: ExportFilters, page_size: int = EXPORT_PAGE
) -> Iterator[list[Task]]:
    """The export's tasks, ``page_size`` at a time, each page read after the previous one's last row."""
    tasks = task_export_queryset(user=user, filters=filters)
    last: Task | None = None
    while True:
        page_query = tasks
        if last is not None:
            page_query = tasks.filter(
                Q(created_at__gt=last.created_at) | Q(created_at=last.created_at, id__gt=last.id)
            )
        page = list(page_query[:page_size])
        if not page:
            return
        yield page
        if len(page) < page_size:
            return
        last = page[-1]


def export_stream(
    pages: Iterator[list[Task]],
    *,
    export_format: str,
    render: Callable[[Task], dict],
    columns: Sequence[str],
) -> tuple[str, Iterator[bytes]]:
    """The response's media type and body: one chunk per page (CSV: the header row first, in ``columns``,
    the keys ``render`` returns)."""
    if export_format == "csv":
        return EXPORT_FORMATS["csv"], _csv_chunks(pages, render, columns)
    return EXPORT_FORMATS["jsonl"], _jsonl_chunks(pages, render)


def _jsonl_chunks(pages: Iterator[list[Task]], render: Callable[[Task], dict]) -> Iterator[bytes]:
    for page in pages:
        yield "".join(
            json.dumps(render(task), ensure_ascii=False, separators=(",", ":")) + "\n" for task in page
        ).encode()


def _csv_cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return value


def _csv_chunks(
    pages: Iterator[list[Task]], render: Callable[[Task], dict], columns: Sequence[str]
) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    yield buffer.getvalue().encode()
    for page in pages:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        for task in page:
            row = render(task)
            writer.writerow([_csv_cell(row[column]) for column in columns])
        yield buffer.getvalue().encode()
