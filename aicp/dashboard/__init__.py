"""The operator dashboard: one page, and the JSON it polls to refresh its figures in place.

Both render the same view model (`dashboard_snapshot`): raw figures for API consumers and tests, plus
display strings, table rows, progress bars and chart geometry that the template and dashboard.js draw
identically. Every string derived from task or LLM text goes to the page through autoescaping or
`textContent`, never as markup.

Modules: `views` (the page, the JSON poll, operator-only access), `snapshot` (the view model),
`sections` (the raw figures, read through the apps' selectors), `rows` (table rows), `chart` (the
accuracy chart's SVG geometry), `formatting` (display strings and JSON-safe values).
"""

from aicp.dashboard.chart import (
    CHART_HEIGHT,
    CHART_MARGIN,
    CHART_MAX_X_LABELS,
    CHART_WIDTH,
    accuracy_chart,
)
from aicp.dashboard.formatting import DASH
from aicp.dashboard.rows import RESULT_PREVIEW_CHARS, TITLE_CHARS
from aicp.dashboard.sections import RECENT_TASKS
from aicp.dashboard.snapshot import POLL_SECONDS, dashboard_snapshot
from aicp.dashboard.views import View, dashboard, dashboard_data, operator_json, operator_page

__all__ = [
    "CHART_HEIGHT",
    "CHART_MARGIN",
    "CHART_MAX_X_LABELS",
    "CHART_WIDTH",
    "DASH",
    "POLL_SECONDS",
    "RECENT_TASKS",
    "RESULT_PREVIEW_CHARS",
    "TITLE_CHARS",
    "View",
    "accuracy_chart",
    "dashboard",
    "dashboard_data",
    "dashboard_snapshot",
    "operator_json",
    "operator_page",
]
