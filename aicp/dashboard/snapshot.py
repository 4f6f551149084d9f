"""The operator dashboard: one page, and the JSON it polls to refresh its figures in place.

Both render the same view model (`dashboard_snapshot`): raw figures for API consumers and tests, plus
display strings, table rows, progress bars and chart geometry that the template and dashboard.js draw
identically. Every string derived from task or LLM text goes to the page through autoescaping or
`textContent`, never as markup.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from agents.pricing import reputation_multiplier
from agents.selectors import agent_list
from aicp.views import _check_database, _check_queue, llm_backend_status
from duke.models import ModelVersion
from duke.router import labeling_tasks_by_type, routing_status
from duke.selectors import (
    model_version_list,
    model_version_production,
    model_version_training,
    sample_progress,
)
from tasks.models import Task
from tasks.selectors import task_list_recent, task_stats

POLL_SECONDS = 3
RECENT_TASKS = 20
RESULT_PREVIEW_CHARS = 160
TITLE_CHARS = 1000
CHART_WIDTH = 520
CHART_HEIGHT = 240
CHART_MARGIN = {"left": 44, "right": 16, "top": 14, "bottom": 28}
CHART_MAX_X_LABELS = 12
DASH = "—"

View = Callable[[HttpRequest], HttpResponse]


def _is_operator(request: HttpRequest) -> bool:
    user = request.user
    return bool(user.is_authenticated and user.is_active and user.is_staff)


def operator_page(view: View) -> View:
    """Anyone but an operator goes to the admin login, which also explains a buyer's lack of access."""

    @wraps(view)
    def wrapper(request: HttpRequest) -> HttpResponse:
        if not _is_operator(request):
            return redirect_to_login(request.get_full_path(), settings.LOGIN_URL)
        return view(request)

    return wrapper


def operator_json(view: View) -> View:
    """A poll gets a JSON error it can show (a redirect would hand fetch() the login page's HTML)."""

    @wraps(view)
    def wrapper(request: HttpRequest) -> HttpResponse:
        if not request.user.is_authenticated:
            return JsonResponse(
                {"error": {"code": "not_authenticated", "message": "Log in as an operator."}}, status=401
            )
        if not _is_operator(request):
            return JsonResponse(
                {"error": {"code": "permission_denied", "message": "Operators only."}}, status=403
            )
        return view(request)

    return wrapper


# --- formatting (the page shows these strings; the JSON carries them beside the raw values) ------------


def _percent(value: float | None) -> str:
    return DASH if value is None else f"{value:.1%}"


def _number(value: int | None) -> str:
    return DASH if value is None else f"{value:,}"


def _money(value: Decimal | None) -> str:
    return DASH if value is None else f"{value:,.4f}"


def _clock(moment: datetime | None) -> str:
    if moment is None:
        return DASH
    local = timezone.localtime(moment)
    if timezone.localtime().date() == local.date():
        return local.strftime("%H:%M:%S")
    return local.strftime("%b %d %H:%M")


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cell(text: object, *, cls: str = "", badge: str = "", title: str = "") -> dict[str, str]:
    return {"text": str(text), "cls": cls, "badge": badge, "title": title}


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


# --- sections -------------------------------------------------------------------------------------------


def _system() -> dict[str, Any]:
    from django_q.models import Failure, Schedule

    database = _check_database()
    queue = _check_queue()
    if database["ok"]:
        # Failed and scheduled jobs live in the database whatever the broker; the admin lists them.
        queue["failed_jobs"] = Failure.objects.count()
        queue["scheduled_jobs"] = Schedule.objects.count()
    llm = llm_backend_status()
    return {
        "status": "ok" if database["ok"] and queue["ok"] else "degraded",
        "database": database,
        "queue": queue,
        "llm": {"simulated": llm["simulated"], "base_url": llm["base_url"]},
    }


def _tasks(now: datetime) -> dict[str, Any]:
    stats = task_stats(since=now - timedelta(hours=1))
    finished = stats["completed"] + stats["failed"]
    return {
        "total": stats["total"],
        "completed": stats["completed"],
        "failed": stats["failed"],
        "pending": stats["pending"],
        "running": stats["running"],
        "last_hour": stats["recent"],
        "success_rate": stats["completed"] / finished if finished else None,
    }


def _version_row(version: ModelVersion) -> dict[str, Any]:
    return {
        "number": version.number,
        "status": version.status,
        "accuracy": version.accuracy,
        "macro_f1": version.macro_f1,
        "train_samples": version.train_samples,
        "validation_samples": version.validation_samples,
        "training_seconds": version.training_seconds,
        "epoch": version.epoch,
        "epochs": version.epochs,
        "created_at": version.created_at,
        "promoted_at": version.promoted_at,
        "error": version.error,
    }


def _duke() -> dict[str, Any]:
    production = model_version_production()
    training = model_version_training()
    return {
        "production": _version_row(production) if production else None,
        "training": _version_row(training) if training else None,
        "samples": sample_progress(),
        "versions": [_version_row(version) for version in model_version_list()],
    }


def _routing() -> dict[str, Any]:
    """The router's own picture, plus the task types it does not list yet (labeling tasks, no threshold)."""
    status = routing_status()
    types = {task_type: dict(entry) for task_type, entry in status.get("task_types", {}).items()}
    for task_type, count in labeling_tasks_by_type().items():
        types.setdefault(
            task_type,
            {
                "threshold": None,
                "expected_coverage": None,
                "routing": False,
                "suspended": False,
                "suspended_reason": "",
                "live": None,
                "served_by_duke": 0,
                "labeling_tasks": count,
                "share": 0.0 if count else None,
                "money_saved": None,
            },
        )
    return {
        "production_version": status.get("production_version"),
        "target_agreement": status.get("target_agreement"),
        "task_types": [{"task_type": task_type, **types[task_type]} for task_type in sorted(types)],
        "totals": status.get("totals", {}),
    }


def _agents() -> list[dict[str, Any]]:
    return [
        {
            "name": agent.name,
            "backend": agent.backend,
            "model": agent.model,
            "price_per_unit": agent.price_per_unit,
            "tasks_done": agent.tasks_done,
            "success_rate": agent.success_rate,
            "reputation": reputation_multiplier(agent.success_count, agent.failure_count),
            "earnings": agent.earnings,
            "is_active": agent.is_active,
        }
        for agent in agent_list(include_inactive=True)
    ]


def _recent_tasks() -> list[dict[str, Any]]:
    return [
        {
            "id": str(task.id),
            "short_id": task.short_id,
            "created_at": task.created_at,
            "task_type": task.task_type,
            "status": task.status,
            "agent": task.agent.name,
            "executed_by": task.executed_by.name if task.executed_by else None,
            "confidence": task.confidence,
            "price": task.price,
            "latency_ms": task.latency_ms,
            "result": task.result,
            "error": task.error,
            "error_code": task.error_code,
        }
        for task in task_list_recent(limit=RECENT_TASKS)
    ]


# --- the chart ------------------------------------------------------------------------------------------


def accuracy_chart(versions: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Geometry of the accuracy-by-version line chart, in SVG user units (the page scales the viewBox)."""
    scored = [v for v in versions if v["accuracy"] is not None]
    left, right = CHART_MARGIN["left"], CHART_WIDTH - CHART_MARGIN["right"]
    top, bottom = CHART_MARGIN["top"], CHART_HEIGHT - CHART_MARGIN["bottom"]
    chart: dict[str, Any] = {
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "plot": {"left": left, "right": right, "top": top, "bottom": bottom},
        "grid": [],
        "series": [],
        "x_labels": [],
        "center": {"x": round((left + right) / 2, 1), "y": round((top + bottom) / 2, 1)},
        "empty": not scored,
    }
    if not scored:
        return chart
    values = [v["accuracy"] for v in scored] + [v["macro_f1"] for v in scored if v["macro_f1"] is not None]
    # Zoom to the data in whole grid steps, so a gain of a few points shows while the axis stays honest.
    step = 0.05 if max(values) - min(values) < 0.25 else 0.1
    # At least four steps of axis, so a flat line at the top still reads against a scale.
    steps = min(math.floor((min(values) - 1e-6) / step), round(1 / step) - 4)
    low = max(0.0, steps * step)
    high = 1.0
    span = high - low

    def x_at(index: int) -> float:
        if len(scored) == 1:
            return round((left + right) / 2, 1)
        return round(left + (right - left) * index / (len(scored) - 1), 1)

    def y_at(value: float) -> float:
        return round(bottom - (bottom - top) * (value - low) / span, 1)

    for index in range(max(0, steps), round(high / step) + 1):
        level = index * step
        chart["grid"].append({"y": y_at(level), "label": f"{level:.0%}", "label_x": left - 6})
    every = max(1, -(-len(scored) // CHART_MAX_X_LABELS))
    for index, version in enumerate(scored):
        if index % every == 0 or index == len(scored) - 1:
            chart["x_labels"].append(
                {"x": x_at(index), "y": CHART_HEIGHT - 8, "text": f"v{version['number']}"}
            )
    for name, key, cls in (
        ("accuracy", "accuracy", "series-accuracy"),
        ("macro-F1", "macro_f1", "series-f1"),
    ):
        points = [(i, v) for i, v in enumerate(scored) if v[key] is not None]
        dots = [
            {
                "x": x_at(i),
                "y": y_at(v[key]),
                "r": 4.5 if v["status"] == "production" else 3,
                "cls": f"dot {cls}" + (" dot-production" if v["status"] == "production" else ""),
                "title": f"v{v['number']} ({v['status']}): {name} {v[key]:.1%}",
            }
            for i, v in points
        ]
        chart["series"].append(
            {
                "name": name,
                "cls": cls,
                "points": " ".join(f"{d['x']},{d['y']}" for d in dots),
                "dots": dots,
            }
        )
    return chart


# --- the view model -------------------------------------------------------------------------------------


def _task_row(task: dict[str, Any]) -> dict[str, Any]:
    executor = task["executed_by"] or f"{task['agent']} (assigned)"
    if task["confidence"] is not None:
        executor = f"{executor} · {task['confidence']:.0%}"
    if task["status"] == Task.Status.FAILED:
        text = f"{task['error_code'] or 'error'}: {task['error']}"
        result = _cell(_truncate(text, RESULT_PREVIEW_CHARS), cls="result error", title=text[:TITLE_CHARS])
    elif task["result"]:
        text = task["result"]
        result = _cell(_truncate(text, RESULT_PREVIEW_CHARS), cls="result", title=text[:TITLE_CHARS])
    else:
        result = _cell(DASH, cls="result muted")
    latency = DASH if task["latency_ms"] is None else f"{task['latency_ms']:,} ms"
    return {
        "cls": f"status-{task['status']}",
        "cells": [
            _cell(_clock(task["created_at"]), cls="nowrap", title=task["id"]),
            _cell(task["task_type"] or DASH, cls="muted" if not task["task_type"] else ""),
            _cell(task["status"], badge=f"badge badge-{task['status']}"),
            _cell(executor),
            _cell(_money(task["price"]), cls="num"),
            _cell(latency, cls="num"),
            result,
        ],
    }


def _agent_row(agent: dict[str, Any]) -> dict[str, Any]:
    return {
        "cls": "" if agent["is_active"] else "inactive",
        "cells": [
            _cell(agent["name"], title=agent["model"]),
            _cell(agent["backend"], badge=f"badge badge-{agent['backend']}"),
            _cell(_money(agent["price_per_unit"]), cls="num"),
            _cell(_number(agent["tasks_done"]), cls="num"),
            _cell(_percent(agent["success_rate"]), cls="num"),
            _cell(f"×{agent['reputation']}", cls="num"),
            _cell(_money(agent["earnings"]), cls="num"),
        ],
    }


def _version_table_row(version: dict[str, Any]) -> dict[str, Any]:
    if version["status"] == "training":
        seconds = f"epoch {version['epoch']}/{version['epochs'] or '?'}"
    elif version["training_seconds"] is not None:
        seconds = f"{version['training_seconds']:.1f} s"
    else:
        seconds = DASH
    status = _cell(
        version["status"], badge=f"badge badge-{version['status']}", title=version["error"][:TITLE_CHARS]
    )
    return {
        "cls": f"version-{version['status']}",
        "cells": [
            _cell(f"v{version['number']}"),
            status,
            _cell(_percent(version["accuracy"]), cls="num"),
            _cell(_percent(version["macro_f1"]), cls="num"),
            _cell(_number(version["train_samples"]), cls="num"),
            _cell(_number(version["validation_samples"]), cls="num"),
            _cell(seconds, cls="num"),
            _cell(_clock(version["created_at"]), cls="nowrap"),
        ],
    }


def _routing_row(row: dict[str, Any], *, has_production: bool) -> dict[str, Any]:
    if row["suspended"]:
        reason = row.get("suspended_reason") or "Live agreement fell below the target."
        state = _cell("suspended", badge="badge badge-failed", title=reason)
    elif row["threshold"] is not None:
        state = _cell("routing", badge="badge badge-completed")
    elif has_production:
        state = _cell("LLM only", badge="badge badge-pending", title="No threshold meets the target yet.")
    else:
        state = _cell("no model", badge="badge badge-pending")
    live = row.get("live") or {}
    if live.get("agreement") is not None:
        agreement = _cell(
            f"{live['agreement']:.1%} (n={live['observations']})",
            cls="num",
            title=(
                f"lower bound {live['lower_bound']:.1%}; audits {live['audits']} "
                f"({live['audits_pending']} pending); buyer rejections {live['buyer_rejected']}"
            ),
        )
    else:
        agreement = _cell(DASH, cls="num")
    threshold = DASH if row["threshold"] is None else f"{row['threshold']:.3f}"
    saved = row.get("money_saved")
    return {
        "cls": "",
        "cells": [
            _cell(row["task_type"] or "(untyped)", cls="" if row["task_type"] else "muted"),
            state,
            _cell(_number(row["labeling_tasks"]), cls="num"),
            _cell(_number(row["served_by_duke"]), cls="num"),
            _cell(_percent(row["share"]), cls="num"),
            _cell(threshold, cls="num"),
            _cell(_percent(row["expected_coverage"]), cls="num"),
            agreement,
            _cell(DASH if saved is None else _money(Decimal(saved)), cls="num"),
        ],
    }


def dashboard_snapshot() -> dict[str, Any]:
    now = timezone.now()
    system = _system()
    tasks = _tasks(now)
    duke = _duke()
    routing = _routing()
    agents = _agents()
    recent = _recent_tasks()
    production, training, samples = duke["production"], duke["training"], duke["samples"]
    queue = system["queue"]
    totals = routing["totals"]
    figures = {
        "generated_at": _clock(now),
        "system_status": system["status"],
        "database": f"{system['database']['engine']} · {'ok' if system['database']['ok'] else 'down'}",
        "queue": f"{queue.get('broker', DASH)} · {'ok' if queue['ok'] else 'down'}",
        "queue_backlog": _number(queue.get("backlog")),
        "queue_clusters": _number(queue.get("clusters")),
        "queue_failed": _number(queue.get("failed_jobs")),
        "queue_scheduled": _number(queue.get("scheduled_jobs")),
        "llm": "simulator" if system["llm"]["simulated"] else "real API",
        "llm_base_url": system["llm"]["base_url"],
        "tasks_total": _number(tasks["total"]),
        "tasks_completed": _number(tasks["completed"]),
        "tasks_failed": _number(tasks["failed"]),
        "tasks_in_flight": _number(tasks["pending"] + tasks["running"]),
        "tasks_last_hour": _number(tasks["last_hour"]),
        "success_rate": _percent(tasks["success_rate"]),
        "production_version": f"v{production['number']}" if production else "none yet",
        "production_accuracy": _percent(production["accuracy"] if production else None),
        "production_macro_f1": _percent(production["macro_f1"] if production else None),
        "versions_count": _number(len(duke["versions"])),
        "samples_total": _number(samples["total"]),
        "samples_split": f"({samples['train']:,} train · {samples['validation']:,} validation)",
        "samples_progress": f"{samples['since_last_training']} / {samples['train_every']}",
        "samples_until_next": _number(samples["until_next_training"]),
        "training_version": f"v{training['number']}" if training else DASH,
        "training_epoch": f"{training['epoch']} / {training['epochs'] or '?'}" if training else DASH,
        "duke_share": _percent(totals.get("share")),
        "duke_served": _number(totals.get("served_by_duke", 0)),
        "money_saved": _money(Decimal(totals["money_saved"]) if "money_saved" in totals else None),
        "llm_cost_avoided": _money(
            Decimal(totals["llm_cost_avoided"]) if "llm_cost_avoided" in totals else None
        ),
    }
    flags = {
        "system_ok": system["status"] == "ok",
        "database_ok": system["database"]["ok"],
        "queue_ok": queue["ok"],
        "llm_simulated": system["llm"]["simulated"],
        "has_production": production is not None,
        "training": training is not None,
        "has_versions": bool(duke["versions"]),
    }
    bars = {
        "samples": {"value": samples["since_last_training"], "max": samples["train_every"]},
        "training": {
            "value": training["epoch"] if training else 0,
            "max": (training["epochs"] or 1) if training else 1,
        },
    }
    versions_newest_first = sorted(duke["versions"], key=lambda v: -v["number"])
    tables = {
        "recent_tasks": [_task_row(task) for task in recent],
        "agents": [_agent_row(agent) for agent in agents],
        "versions": [_version_table_row(version) for version in versions_newest_first],
        "routing": [
            _routing_row(row, has_production=production is not None) for row in routing["task_types"]
        ],
    }
    raw = {
        "system": system,
        "tasks": tasks,
        "duke": duke,
        "routing": routing,
        "agents": agents,
        "recent_tasks": recent,
    }
    empty = {
        "routing": "No labeling tasks yet. Duke serves a task type once its production version is confident.",
        "versions": f"No version yet: Duke trains after every {samples['train_every']} labeling samples.",
        "agents": "No agents configured.",
        "recent_tasks": "No tasks yet.",
    }
    return {
        "generated_at": now.isoformat(),
        "poll_seconds": POLL_SECONDS,
        "empty": empty,
        "figures": figures,
        "flags": flags,
        "bars": bars,
        "tables": tables,
        "chart": accuracy_chart(duke["versions"]),
        **_jsonable(raw),
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return _json_value(value)


# --- views ----------------------------------------------------------------------------------------------


@require_GET
@never_cache
@operator_page
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard.html", {"snapshot": dashboard_snapshot()})


@require_GET
@never_cache
@operator_json
def dashboard_data(request: HttpRequest) -> JsonResponse:
    return JsonResponse(dashboard_snapshot())
