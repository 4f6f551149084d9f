"""Reads over time: tasks, Duke's share, cost per task against the all-LLM counterfactual, savings, and
training events, in time buckets over a chosen window (hour, day or week).

Bounded work whatever the history: three grouped queries over the window's rows (tasks by the indexed
`created_at`, Duke's served rows by theirs), one aggregate for the savings made before the window, and
the training events in the window. Buckets are truncated in UTC by the database (Trunc works alike on
SQLite and PostgreSQL) and filled with zeros in Python, so a quiet minute is a point at zero, not a gap.
Money stays Decimal; the caller renders it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import CharField, Count, F, Func, Q, Sum
from django.db.models.functions import Trunc

from duke.models import ModelVersion, RoutingState, ServedTask
from tasks.models import Task

ZERO = Decimal("0")
PLACES = Decimal("0.0001")


@dataclass(frozen=True)
class Window:
    name: str
    span: timedelta
    bucket: str  # Trunc kind
    step: timedelta
    label: str


WINDOWS: dict[str, Window] = {
    "hour": Window("hour", timedelta(hours=1), "minute", timedelta(minutes=1), "last hour, by minute"),
    "day": Window("day", timedelta(days=1), "hour", timedelta(hours=1), "last 24 hours, by hour"),
    "week": Window("week", timedelta(days=7), "hour", timedelta(hours=1), "last 7 days, by hour"),
}
DEFAULT_WINDOW = "hour"


def window_for(name: str | None) -> Window:
    """The named window; anything else (a typo, a missing parameter) is the default one."""
    return WINDOWS.get(name or "", WINDOWS[DEFAULT_WINDOW])


class _SqliteBucket(Func):
    """SQLite keeps datetimes as UTC text (`YYYY-MM-DD HH:MM:SS.ffffff`): a bucket is a prefix of it.

    Django's Trunc on SQLite calls a Python function per row (a second per 100k rows); a prefix is plain
    C. Used on SQLite only; other backends truncate natively.
    """

    function = "substr"
    output_field = CharField()


_PREFIX = {"minute": 16, "hour": 13}


def _bucket(field: str, kind: str, vendor: str) -> Func:
    if vendor == "sqlite":
        return _SqliteBucket(F(field), 1, _PREFIX[kind])
    return Trunc(field, kind, tzinfo=UTC)


def _bucket_key(value: datetime | str) -> datetime:
    if isinstance(value, str):  # SQLite's prefix: "2026-12-06 02" or "2026-12-06 02:15"
        fmt = "%Y-%m-%d %H" if len(value) == 13 else "%Y-%m-%d %H:%M"
        return datetime.strptime(value, fmt).replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _floor(moment: datetime, kind: str) -> datetime:
    moment = moment.astimezone(UTC).replace(second=0, microsecond=0)
    return moment.replace(minute=0) if kind == "hour" else moment


def _money(value: Any) -> Decimal:
    return Decimal(str(value or 0))


def task_timeline(*, window: Window, now: datetime) -> dict[str, Any]:
    """Per bucket: submitted, completed, failed, labeling completed, served by Duke, revenue (what buyers
    paid for completed tasks) and Duke's counterfactual (what the LLM would have charged for its tasks);
    plus the cumulative money saved, starting from what was saved before the window."""
    end = _floor(now, window.bucket)
    start = end - window.span + window.step
    since = start
    bucket = _bucket("created_at", window.bucket, connection.vendor)
    task_rows = (
        Task.objects.filter(created_at__gte=since)
        .annotate(bucket=bucket)
        .values("bucket")
        .annotate(
            submitted=Count("pk"),
            completed=Count("pk", filter=Q(status=Task.Status.COMPLETED)),
            failed=Count("pk", filter=Q(status=Task.Status.FAILED)),
            labeling=Count("pk", filter=Q(status=Task.Status.COMPLETED, labels__isnull=False)),
            revenue=Sum("price", filter=Q(status=Task.Status.COMPLETED)),
        )
        .order_by()
    )
    served_rows = (
        ServedTask.objects.filter(created_at__gte=since)
        .annotate(bucket=bucket)
        .values("bucket")
        .annotate(served=Count("pk"), paid=Sum("price"), llm=Sum("llm_price"))
        .order_by()
    )
    before = ServedTask.objects.filter(created_at__lt=since).aggregate(
        paid=Sum("price"), llm=Sum("llm_price")
    )
    saved = _money(before["llm"]) - _money(before["paid"])
    tasks = {_bucket_key(row["bucket"]): row for row in task_rows}
    served = {_bucket_key(row["bucket"]): row for row in served_rows}

    buckets: list[dict[str, Any]] = []
    moment = start
    while moment <= end:
        t = tasks.get(moment, {})
        s = served.get(moment, {})
        completed = int(t.get("completed") or 0)
        labeling = int(t.get("labeling") or 0)
        n_served = int(s.get("served") or 0)
        revenue = _money(t.get("revenue"))
        paid, llm = _money(s.get("paid")), _money(s.get("llm"))
        saved += llm - paid
        counterfactual = revenue - paid + llm
        buckets.append(
            {
                "start": moment,
                "submitted": int(t.get("submitted") or 0),
                "completed": completed,
                "failed": int(t.get("failed") or 0),
                "labeling_completed": labeling,
                "served_by_duke": n_served,
                "duke_share": min(1.0, n_served / labeling) if labeling else None,
                "revenue": revenue.quantize(PLACES),
                "llm_counterfactual": counterfactual.quantize(PLACES),
                "cost_per_task": (revenue / completed).quantize(PLACES) if completed else None,
                "llm_cost_per_task": (counterfactual / completed).quantize(PLACES) if completed else None,
                "saved_cumulative": saved.quantize(PLACES),
            }
        )
        moment += window.step
    return {
        "window": window.name,
        "bucket": window.bucket,
        "step_seconds": int(window.step.total_seconds()),
        "start": start,
        "end": end + window.step,
        "buckets": buckets,
    }


def training_events(*, since: datetime) -> list[dict[str, Any]]:
    """Versions trained (or failed), promotions and suspensions since `since`, oldest first."""
    events: list[dict[str, Any]] = []
    versions = ModelVersion.objects.filter(Q(created_at__gte=since) | Q(promoted_at__gte=since)).values(
        "number", "status", "created_at", "finished_at", "promoted_at", "accuracy"
    )
    for v in versions:
        if v["created_at"] >= since:
            kind = {"failed": "failed", "training": "training"}.get(v["status"], "trained")
            at = v["finished_at"] or v["created_at"]
            events.append({"kind": kind, "at": at, "version": v["number"], "accuracy": v["accuracy"]})
        if v["promoted_at"] and v["promoted_at"] >= since:
            events.append(
                {
                    "kind": "promoted",
                    "at": v["promoted_at"],
                    "version": v["number"],
                    "accuracy": v["accuracy"],
                }
            )
    for state in RoutingState.objects.filter(suspended=True, suspended_at__gte=since).values(
        "task_type", "model_version", "suspended_at", "reason"
    ):
        events.append(
            {
                "kind": "suspended",
                "at": state["suspended_at"],
                "version": state["model_version"],
                "task_type": state["task_type"],
                "reason": state["reason"],
            }
        )
    events.sort(key=lambda e: e["at"])
    return events
