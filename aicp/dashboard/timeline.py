"""The dashboard over time: charts with a time axis, training events on the same axis, money totals and
the "why Duke isn't serving yet" panel, as display strings and SVG geometry (server-rendered; dashboard.js
redraws the same geometry when it polls)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.utils import timezone

from aicp.dashboard.formatting import DASH, cell, jsonable, money, number, percent
from duke.selectors_readiness import duke_readiness
from ledger.selectors_totals import money_totals
from tasks.selectors_timeline import WINDOWS, Window, task_timeline, training_events

WIDTH = 520
HEIGHT = 200
MARGIN = {"left": 58, "right": 14, "top": 22, "bottom": 26}
X_TICKS = 6
Y_STEPS = 4

# Plain words: the headless fonts of a server room have no ★ or ⏸.
EVENT_TEXT = {
    "training": "v{version}…",
    "trained": "v{version}",
    "promoted": "v{version} prod",
    "suspended": "paused",
    "failed": "v{version} failed",
}
# A version trained and promoted in the same minute: its labels sit on rows of their own.
EVENT_ROW = {"promoted": 1, "suspended": 2}
EVENT_TITLE = {
    "trained": "Duke v{version} trained",
    "training": "Duke v{version} training",
    "promoted": "Duke v{version} promoted to production",
    "suspended": "Routing suspended",
    "failed": "Duke v{version} training failed",
}


def _nice_step(value: float) -> float:
    """The smallest 1/2/2.5/5 x 10^k at or above `value`: grid steps that read as round numbers."""
    if value <= 0:
        return 0.25
    magnitude = 10.0 ** math.floor(math.log10(value))
    for factor in (1, 2, 2.5, 5, 10):
        if magnitude * factor >= value * (1 - 1e-9):
            return magnitude * factor
    return magnitude * 10


def _axis_money(value: float) -> str:
    """Plain decimals, never an exponent or float noise: 0.0125, 2.5, 1,250."""
    if value >= 100:
        return f"{value:,.0f}"
    text = f"{value:,.4f}".rstrip("0").rstrip(".")
    return text or "0"


def _axis_count(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def _axis_percent(value: float) -> str:
    return f"{value:.0%}"


def _clock(moment: datetime, window: Window) -> str:
    local = timezone.localtime(moment)
    return local.strftime("%b %d %H:%M") if window.name == "week" else local.strftime("%H:%M")


def time_chart(
    *,
    name: str,
    title: str,
    window: Window,
    start: datetime,
    end: datetime,
    times: Sequence[datetime],
    series: Sequence[dict[str, Any]],
    events: Sequence[dict[str, Any]],
    y_format: Callable[[float], str],
    y_max: float | None = None,
    value_format: Callable[[float], str] | None = None,
) -> dict[str, Any]:
    """SVG geometry: grid, x/y labels, one polyline + dots per series, a vertical marker per event."""
    left, right = MARGIN["left"], WIDTH - MARGIN["right"]
    top, bottom = MARGIN["top"], HEIGHT - MARGIN["bottom"]
    span = (end - start).total_seconds() or 1.0
    value_format = value_format or y_format
    values = [v for s in series for v in s["values"] if v is not None]
    high = y_max if y_max is not None else _nice_step(max(values, default=0.0) / Y_STEPS) * Y_STEPS

    def x_at(moment: datetime) -> float:
        return round(left + (right - left) * (moment - start).total_seconds() / span, 1)

    def y_at(value: float) -> float:
        return round(bottom - (bottom - top) * min(value, high) / high, 1)

    grid = [
        {"y": y_at(high * i / Y_STEPS), "label": y_format(high * i / Y_STEPS), "label_x": left - 6}
        for i in range(Y_STEPS + 1)
    ]
    x_labels = []
    for i in range(X_TICKS + 1):
        moment = start + (end - start) * i / X_TICKS
        anchor = "start" if i == 0 else "end" if i == X_TICKS else "middle"
        x_labels.append(
            {"x": x_at(moment), "y": HEIGHT - 8, "text": _clock(moment, window), "anchor": anchor}
        )
    drawn = []
    for s in series:
        dots = [
            {
                "x": x_at(moment),
                "y": y_at(value),
                "r": 2.5,
                "title": f"{_clock(moment, window)} · {s['name']}: {value_format(value)}",
            }
            for moment, value in zip(times, s["values"], strict=True)
            if value is not None
        ]
        drawn.append(
            {
                "name": s["name"],
                "cls": s["cls"],
                "points": " ".join(f"{d['x']},{d['y']}" for d in dots),
                "dots": dots,
            }
        )
    markers = []
    for event in events:
        if not start <= event["at"] <= end:
            continue
        x = x_at(event["at"])
        text = EVENT_TEXT.get(event["kind"], "").format(**event)
        tooltip = EVENT_TITLE.get(event["kind"], event["kind"]).format(**event)
        if event.get("task_type") is not None:
            tooltip += f" for {event['task_type'] or '(untyped)'}"
        if event.get("reason"):
            tooltip += f": {event['reason']}"
        tooltip += f" at {_clock(event['at'], window)}"
        markers.append(
            {
                "x": x,
                "y1": top,
                "y2": bottom,
                "label_y": top - 6 + 11 * EVENT_ROW.get(event["kind"], 0),
                # Toward the middle of the plot, so a label at either edge stays inside the chart.
                "anchor": "end" if x > (left + right) / 2 else "start",
                "text": text,
                "title": tooltip,
                "cls": f"event event-{event['kind']}",
            }
        )
    return {
        "name": name,
        "title": title,
        "width": WIDTH,
        "height": HEIGHT,
        "plot": {"left": left, "right": right, "top": top, "bottom": bottom},
        "grid": grid,
        "x_labels": x_labels,
        "series": drawn,
        "events": markers,
        "points": sum(len(s["dots"]) for s in drawn),
        "empty": not values,
        "center": {"x": round((left + right) / 2, 1), "y": round((top + bottom) / 2, 1)},
    }


def _float(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def timeline_section(window_name: str | None, now: datetime) -> dict[str, Any]:
    window = WINDOWS.get(window_name or "") or WINDOWS["hour"]
    timeline = task_timeline(window=window, now=now)
    start, end = timeline["start"], timeline["end"]
    events = training_events(since=start)
    buckets = timeline["buckets"]
    times = [b["start"] + window.step / 2 for b in buckets]  # mid-bucket: now is never overshot
    minutes = timeline["step_seconds"] / 60
    common = {"window": window, "start": start, "end": end, "times": times, "events": events}
    charts = [
        time_chart(
            name="share",
            title="Duke's share of labeling tasks",
            series=[
                {"name": "served by Duke", "cls": "series-duke", "values": [b["duke_share"] for b in buckets]}
            ],
            y_format=_axis_percent,
            value_format=lambda v: f"{v:.1%}",
            y_max=1.0,
            **common,
        ),
        time_chart(
            name="cost",
            title="Cost per task: actual vs. all-LLM",
            series=[
                {
                    "name": "actual",
                    "cls": "series-actual",
                    "values": [_float(b["cost_per_task"]) for b in buckets],
                },
                {
                    "name": "all-LLM",
                    "cls": "series-llm",
                    "values": [_float(b["llm_cost_per_task"]) for b in buckets],
                },
            ],
            y_format=_axis_money,
            value_format=lambda v: money(Decimal(str(v))),
            **common,
        ),
        time_chart(
            name="savings",
            title="Money saved to date",
            series=[
                {
                    "name": "saved",
                    "cls": "series-saved",
                    "values": [_float(b["saved_cumulative"]) for b in buckets],
                }
            ],
            y_format=_axis_money,
            value_format=lambda v: money(Decimal(str(v))),
            **common,
        ),
        time_chart(
            name="throughput",
            title="Tasks per minute and failures",
            series=[
                {
                    "name": "tasks/min",
                    "cls": "series-tasks",
                    "values": [b["submitted"] / minutes for b in buckets],
                },
                {
                    "name": "failures/min",
                    "cls": "series-failed",
                    "values": [b["failed"] / minutes for b in buckets],
                },
            ],
            y_format=_axis_count,
            value_format=lambda v: f"{v:,.2f}".rstrip("0").rstrip("."),
            **common,
        ),
    ]
    totals = {
        "submitted": sum(b["submitted"] for b in buckets),
        "failed": sum(b["failed"] for b in buckets),
        "served_by_duke": sum(b["served_by_duke"] for b in buckets),
        "labeling_completed": sum(b["labeling_completed"] for b in buckets),
        "revenue": sum((b["revenue"] for b in buckets), Decimal("0")),
        "llm_counterfactual": sum((b["llm_counterfactual"] for b in buckets), Decimal("0")),
        "saved_to_date": buckets[-1]["saved_cumulative"] if buckets else Decimal("0"),
    }
    return {
        "window": window.name,
        "window_label": window.label,
        "windows": [{"name": name, "label": name, "active": name == window.name} for name in WINDOWS],
        "charts": charts,
        "events": events,
        "buckets": buckets,
        "totals": totals,
    }


def money_section() -> dict[str, Any]:
    return money_totals()


def readiness_rows(readiness: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    badges = {
        "serving": "badge badge-completed",
        "suspended": "badge badge-failed",
        "not certified": "badge badge-pending",
        "collecting": "badge badge-running",
        "no model": "badge badge-pending",
        "no samples": "badge badge-pending",
    }
    overall = readiness["overall"]
    for row in readiness["task_types"]:
        cert = row["certificate"] or {}
        if row["threshold"] is not None:
            calibration = f"{row['threshold']:.3f}"
            if cert:
                calibration += (
                    f" · {cert.get('agreed', 0)}/{cert.get('served', 0)} ≥ {cert.get('lower_bound', 0):.1%}"
                )
        elif cert:
            calibration = f"none on n={cert.get('n', 0)}"
        else:
            calibration = DASH
        cert_title = (
            f"v{row['calibrated_by']}: {cert.get('procedure', '')}, served {cert.get('served')}/"
            f"{cert.get('n')}, agreed {cert.get('agreed')}, lower bound {cert.get('lower_bound')}, "
            f"target {cert.get('target')}, δ {cert.get('delta')}"
            if cert
            else ""
        )
        if row["live_agreement"] is not None:
            live = cell(
                f"{row['live_agreement']:.1%} (n={row['live_observations']})",
                cls="num",
                title=f"lower bound {row['live_lower_bound']:.1%}"
                if row["live_lower_bound"] is not None
                else "",
            )
        else:
            live = cell(DASH, cls="num")
        need = f"target {overall['target_agreement']:.0%} · ≥ {overall['min_served_to_certify']} served"
        rows.append(
            {
                "cls": f"ready-{row['state'].replace(' ', '-')}",
                "cells": [
                    cell(row["task_type"] or "(untyped)", cls="" if row["task_type"] else "muted"),
                    cell(row["state"], badge=badges.get(row["state"], "badge")),
                    cell(f"{row['samples']:,} · {row['labels']} labels", cls="num nowrap"),
                    cell(calibration, cls="num", title=cert_title),
                    cell(need, cls="num muted"),
                    live,
                    cell(row["why"], cls="why"),
                    cell(row["next"], cls="next"),
                ],
            }
        )
    return rows


def timeline_view_model(window_name: str | None, now: datetime) -> dict[str, Any]:
    """Everything the over-time part of the page shows, JSON-safe."""
    timeline = timeline_section(window_name, now)
    totals = money_section()
    readiness = duke_readiness()
    overall = readiness["overall"]
    t = timeline["totals"]
    share = t["served_by_duke"] / t["labeling_completed"] if t["labeling_completed"] else None
    figures = {
        "window_label": timeline["window_label"],
        "window_tasks": number(t["submitted"]),
        "window_failed": number(t["failed"]),
        "window_share": percent(share),
        "window_revenue": money(t["revenue"]),
        "window_counterfactual": money(t["llm_counterfactual"]),
        "saved_to_date": money(t["saved_to_date"]),
        "revenue": money(totals["revenue"]),
        "payouts": money(totals["payouts"]),
        "platform_fees": money(totals["platform_fees"]),
        "held_in_escrow": money(totals["held_in_escrow"]),
        "refunds": money(totals["refunds"]),
        "buyer_balances": money(totals["buyer_balances"]),
        "buyer_credits": money(totals["credits"]),
        "ready_samples": number(overall["samples"]),
        "ready_min_samples": number(overall["min_samples"]),
        "ready_next": overall["next_training"],
        "events_count": number(len(timeline["events"])),
    }
    return {
        "window": timeline["window"],
        "windows": timeline["windows"],
        "figures": figures,
        "charts": timeline["charts"],
        "readiness_rows": readiness_rows(readiness),
        "raw": jsonable(
            {
                "timeline": {
                    "window": timeline["window"],
                    "buckets": timeline["buckets"],
                    "events": timeline["events"],
                },
                "money": totals,
                "readiness": readiness,
            }
        ),
    }
