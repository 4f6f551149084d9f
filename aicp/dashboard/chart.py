"""The accuracy-by-version line chart, as SVG geometry the template and dashboard.js draw alike."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

CHART_WIDTH = 520
CHART_HEIGHT = 240
CHART_MARGIN = {"left": 44, "right": 16, "top": 14, "bottom": 28}
CHART_MAX_X_LABELS = 12


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
