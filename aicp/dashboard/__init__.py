"""The operator dashboard, moved into a package; the split into modules follows."""

from aicp.dashboard.snapshot import (
    RECENT_TASKS,
    accuracy_chart,
    dashboard,
    dashboard_data,
    dashboard_snapshot,
)

__all__ = ["RECENT_TASKS", "accuracy_chart", "dashboard", "dashboard_data", "dashboard_snapshot"]
