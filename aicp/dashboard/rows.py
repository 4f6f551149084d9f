"""The table rows of the dashboard: display cells (text, class, badge, tooltip) for each raw figure.

Task and LLM text goes into a cell's text or title only; the page puts both through autoescaping or
`textContent`, never as markup.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from aicp.dashboard.formatting import DASH, cell, clock, money, number, percent, truncate
from tasks.models import Task

RESULT_PREVIEW_CHARS = 160
TITLE_CHARS = 1000


def task_row(task: dict[str, Any]) -> dict[str, Any]:
    executor = task["executed_by"] or f"{task['agent']} (assigned)"
    if task["confidence"] is not None:
        executor = f"{executor} · {task['confidence']:.0%}"
    if task["status"] == Task.Status.FAILED:
        text = f"{task['error_code'] or 'error'}: {task['error']}"
        result = cell(truncate(text, RESULT_PREVIEW_CHARS), cls="result error", title=text[:TITLE_CHARS])
    elif task["result"]:
        text = task["result"]
        result = cell(truncate(text, RESULT_PREVIEW_CHARS), cls="result", title=text[:TITLE_CHARS])
    else:
        result = cell(DASH, cls="result muted")
    latency = DASH if task["latency_ms"] is None else f"{task['latency_ms']:,} ms"
    return {
        "cls": f"status-{task['status']}",
        "cells": [
            cell(clock(task["created_at"]), cls="nowrap", title=task["id"]),
            cell(task["task_type"] or DASH, cls="muted" if not task["task_type"] else ""),
            cell(task["status"], badge=f"badge badge-{task['status']}"),
            cell(executor),
            cell(money(task["price"]), cls="num"),
            cell(latency, cls="num"),
            result,
        ],
    }


def agent_row(agent: dict[str, Any]) -> dict[str, Any]:
    return {
        "cls": "" if agent["is_active"] else "inactive",
        "cells": [
            cell(agent["name"], title=agent["model"]),
            cell(agent["backend"], badge=f"badge badge-{agent['backend']}"),
            cell(money(agent["price_per_unit"]), cls="num"),
            cell(number(agent["tasks_done"]), cls="num"),
            cell(percent(agent["success_rate"]), cls="num"),
            cell(f"×{agent['reputation']}", cls="num"),
            cell(money(agent["earnings"]), cls="num"),
        ],
    }


def version_table_row(version: dict[str, Any]) -> dict[str, Any]:
    if version["status"] == "training":
        seconds = f"epoch {version['epoch']}/{version['epochs'] or '?'}"
    elif version["training_seconds"] is not None:
        seconds = f"{version['training_seconds']:.1f} s"
    else:
        seconds = DASH
    status = cell(
        version["status"], badge=f"badge badge-{version['status']}", title=version["error"][:TITLE_CHARS]
    )
    return {
        "cls": f"version-{version['status']}",
        "cells": [
            cell(f"v{version['number']}"),
            status,
            cell(percent(version["accuracy"]), cls="num"),
            cell(percent(version["macro_f1"]), cls="num"),
            cell(number(version["train_samples"]), cls="num"),
            cell(number(version["validation_samples"]), cls="num"),
            cell(seconds, cls="num"),
            cell(clock(version["created_at"]), cls="nowrap"),
        ],
    }


def routing_row(row: dict[str, Any], *, has_production: bool) -> dict[str, Any]:
    if row["suspended"]:
        reason = row.get("suspended_reason") or "Live agreement fell below the target."
        state = cell("suspended", badge="badge badge-failed", title=reason)
    elif row["threshold"] is not None:
        state = cell("routing", badge="badge badge-completed")
    elif has_production:
        state = cell("LLM only", badge="badge badge-pending", title="No threshold meets the target yet.")
    else:
        state = cell("no model", badge="badge badge-pending")
    live = row.get("live") or {}
    if live.get("agreement") is not None:
        agreement = cell(
            f"{live['agreement']:.1%} (n={live['observations']})",
            cls="num",
            title=(
                f"lower bound {live['lower_bound']:.1%}; audits {live['audits']} "
                f"({live['audits_pending']} pending); buyer rejections {live['buyer_rejected']}"
            ),
        )
    else:
        agreement = cell(DASH, cls="num")
    threshold = DASH if row["threshold"] is None else f"{row['threshold']:.3f}"
    saved = row.get("money_saved")
    return {
        "cls": "",
        "cells": [
            cell(row["task_type"] or "(untyped)", cls="" if row["task_type"] else "muted"),
            state,
            cell(number(row["labeling_tasks"]), cls="num"),
            cell(number(row["served_by_duke"]), cls="num"),
            cell(percent(row["share"]), cls="num"),
            cell(threshold, cls="num"),
            cell(percent(row["expected_coverage"]), cls="num"),
            agreement,
            cell(DASH if saved is None else money(Decimal(saved)), cls="num"),
        ],
    }
