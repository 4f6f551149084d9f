"""The raw figures of each dashboard section, read through the apps' selectors and status checks."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from agents.pricing import reputation_multiplier
from agents.selectors import agent_list
from aicp.views import check_database, check_queue, llm_backend_status
from duke.models import ModelVersion
from duke.selectors import (
    labeling_tasks_by_type,
    model_version_list,
    model_version_production,
    model_version_training,
    routing_status,
    sample_progress,
)
from tasks.selectors import task_list_recent, task_stats

RECENT_TASKS = 20


def system_section() -> dict[str, Any]:
    from django_q.models import Failure, Schedule

    database = check_database()
    queue = check_queue()
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


def tasks_section(now: datetime) -> dict[str, Any]:
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


def duke_section() -> dict[str, Any]:
    production = model_version_production()
    training = model_version_training()
    return {
        "production": _version_row(production) if production else None,
        "training": _version_row(training) if training else None,
        "samples": sample_progress(),
        "versions": [_version_row(version) for version in model_version_list()],
    }


def routing_section() -> dict[str, Any]:
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


def agents_section() -> list[dict[str, Any]]:
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


def recent_tasks_section() -> list[dict[str, Any]]:
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
