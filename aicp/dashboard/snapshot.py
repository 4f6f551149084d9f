"""The dashboard's view model: one snapshot that the page renders and the JSON poll returns.

Raw figures for API consumers and tests, plus display strings, table rows, progress bars and chart
geometry that the template and dashboard.js draw identically.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.utils import timezone

from aicp.dashboard.chart import accuracy_chart
from aicp.dashboard.formatting import DASH, clock, jsonable, money, number, percent
from aicp.dashboard.rows import agent_row, routing_row, task_row, version_table_row
from aicp.dashboard.sections import (
    agents_section,
    duke_section,
    recent_tasks_section,
    routing_section,
    system_section,
    tasks_section,
)
from aicp.dashboard.timeline import timeline_view_model

POLL_SECONDS = 3


def dashboard_snapshot(window: str | None = None) -> dict[str, Any]:
    """`window`: the over-time charts' window (hour, day or week; anything else is the default)."""
    now = timezone.now()
    timeline = timeline_view_model(window, now)
    system = system_section()
    tasks = tasks_section(now)
    duke = duke_section()
    routing = routing_section()
    agents = agents_section()
    recent = recent_tasks_section()
    production, training, samples = duke["production"], duke["training"], duke["samples"]
    queue = system["queue"]
    totals = routing["totals"]
    figures = {
        "generated_at": clock(now),
        "system_status": system["status"],
        "database": f"{system['database']['engine']} · {'ok' if system['database']['ok'] else 'down'}",
        "queue": f"{queue.get('broker', DASH)} · {'ok' if queue['ok'] else 'down'}",
        "queue_backlog": number(queue.get("backlog")),
        "queue_clusters": number(queue.get("clusters")),
        "queue_failed": number(queue.get("failed_jobs")),
        "queue_scheduled": number(queue.get("scheduled_jobs")),
        "llm": "simulator" if system["llm"]["simulated"] else "real API",
        "llm_base_url": system["llm"]["base_url"],
        "tasks_total": number(tasks["total"]),
        "tasks_completed": number(tasks["completed"]),
        "tasks_failed": number(tasks["failed"]),
        "tasks_in_flight": number(tasks["pending"] + tasks["running"]),
        "tasks_last_hour": number(tasks["last_hour"]),
        "success_rate": percent(tasks["success_rate"]),
        "production_version": f"v{production['number']}" if production else "none yet",
        "production_accuracy": percent(production["accuracy"] if production else None),
        "production_macro_f1": percent(production["macro_f1"] if production else None),
        "versions_count": number(len(duke["versions"])),
        "samples_total": number(samples["total"]),
        "samples_split": f"({samples['train']:,} train · {samples['validation']:,} validation)",
        "samples_progress": f"{samples['since_last_training']} / {samples['train_every']}",
        "samples_until_next": number(samples["until_next_training"]),
        "training_version": f"v{training['number']}" if training else DASH,
        "training_epoch": f"{training['epoch']} / {training['epochs'] or '?'}" if training else DASH,
        "duke_share": percent(totals.get("share")),
        "duke_served": number(totals.get("served_by_duke", 0)),
        "money_saved": money(Decimal(totals["money_saved"]) if "money_saved" in totals else None),
        "llm_cost_avoided": money(
            Decimal(totals["llm_cost_avoided"]) if "llm_cost_avoided" in totals else None
        ),
    }
    figures.update(timeline["figures"])
    figures["ready_training_version"] = figures["training_version"]
    figures["ready_training_epoch"] = figures["training_epoch"]
    flags = {
        "system_ok": system["status"] == "ok",
        "database_ok": system["database"]["ok"],
        "queue_ok": queue["ok"],
        "llm_simulated": system["llm"]["simulated"],
        "has_production": production is not None,
        "training": training is not None,
        "has_versions": bool(duke["versions"]),
    }
    bars: dict[str, dict[str, int]] = {
        "samples": {"value": samples["since_last_training"], "max": samples["train_every"]},
        "training": {
            "value": training["epoch"] if training else 0,
            "max": (training["epochs"] or 1) if training else 1,
        },
    }
    bars["ready_training"] = bars["training"]
    versions_newest_first = sorted(duke["versions"], key=lambda v: -v["number"])
    tables = {
        "recent_tasks": [task_row(task) for task in recent],
        "agents": [agent_row(agent) for agent in agents],
        "versions": [version_table_row(version) for version in versions_newest_first],
        "routing": [routing_row(row, has_production=production is not None) for row in routing["task_types"]],
        "readiness": timeline["readiness_rows"],
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
        "readiness": "No labeling tasks yet: Duke learns task types from their labeling samples.",
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
        "window": timeline["window"],
        "windows": timeline["windows"],
        "timecharts": timeline["charts"],
        **jsonable(raw),
        **timeline["raw"],
    }
