"""bench/duke_live.py's report: markdown tables (and a text chart) of what it measured."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal

from bench._common import command_line, load_average, machine, percentile

TARGET_RATIO = 0.8  # learning-on throughput ÷ learning-off throughput
TARGET_P99_MS = 50.0  # Duke-served POST /tasks
LEARNING_OFF = "learning-off"


def combined(results: list[dict]) -> dict:
    """Repeated runs of one variant: counts summed, times and rates averaged, each run's rate kept."""
    count = len(results)
    return {
        "runs": count,
        "per_s_each": [r["per_s"] for r in results],
        "per_s": sum(r["per_s"] for r in results) / count,
        **{key: sum(r[key] for r in results) for key in ("tasks", "completed", "failed", "rejected")},
        **{key: sum(r[key] for r in results) / count for key in ("submitted_s", "elapsed_s")},
        "trained_meanwhile": sum(r["trained_meanwhile"] for r in results),
        "versions": sum(r["versions"] for r in results),
    }


# --- the report -----------------------------------------------------------------------------------------


def _fmt(value: object, spec: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and value != value:
        return "–"
    return format(value, spec) if spec else str(value)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def timeline_table(rows: list[dict], max_rows: int) -> list[str]:
    step = max(1, -(-len(rows) // max_rows))
    chosen = rows[::step]
    if rows and chosen[-1] is not rows[-1]:
        chosen.append(rows[-1])
    lines = [
        "| t (s) | phase | submitted | completed | samples | versions | training | production | threshold "
        "| Duke share (serving) | Duke agreement with gold | price per task |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in chosen:
        lines.append(
            f"| {row['t']:.0f} | {row['phase']} | {row['submitted']} | {row['completed']} | "
            f"{_fmt(row['samples'])} | {row['versions']} | {_fmt(row['training'], '')} | "
            f"{_fmt(row['production'])} | {_fmt(row['threshold'], '.3f')} | {_pct(row['duke_share'])} | "
            f"{_pct(row['agreement'])} | {_fmt(row['price'], '.4f')} |"
        )
    return lines


def ascii_chart(rows: list[dict], width: int = 60) -> list[str]:
    """Samples (#) and Duke's cumulative share in the serving phase (*) over time, as text."""
    if not rows:
        return []
    top = max((row["samples"] or 0) for row in rows) or 1
    step = max(1, -(-len(rows) // 24))
    lines = ["```", f"{'t (s)':>6}  samples (#, of {top}) · Duke share while serving (*, of 100%)"]
    for row in rows[::step]:
        bar = "#" * round((row["samples"] or 0) / top * width)
        share = row["duke_share"]
        marks = "" if share is None else "\n" + " " * 8 + "*" * round(share * width)
        lines.append(f"{row['t']:6.0f}  {bar}{marks}")
    lines.append("```")
    return lines


def versions_table(versions: list[dict], began_wall: float, task_type: str) -> list[str]:
    def offset(stamp: str | None) -> str:
        if not stamp:
            return "–"
        return f"{datetime.fromisoformat(stamp.replace('Z', '+00:00')).timestamp() - began_wall:.0f}"

    lines = [
        "| version | status | created (s) | finished (s) | training (s) | train + validation samples "
        "| validation accuracy | threshold |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for version in sorted(versions, key=lambda v: v["version"]):
        entry = (version.get("thresholds") or {}).get(task_type) or {}
        samples = f"{_fmt(version.get('train_samples'))} + {_fmt(version.get('validation_samples'))}"
        lines.append(
            f"| v{version['version']} | {version['status']} | {offset(version.get('created_at'))} | "
            f"{offset(version.get('finished_at'))} | {_fmt(version.get('training_seconds'), '.1f')} | "
            f"{samples} | {_pct(version.get('validation_accuracy'))} | "
            f"{_fmt(entry.get('threshold'), '.3f')} |"
        )
    return lines


def report(args: argparse.Namespace, data: dict, live: dict | None, runs: dict[str, tuple[str, dict]]) -> str:
    lines = [
        f"Command: `{command_line()}`",
        "",
        f"Machine: {machine()}; load average (1/5/15 min) before: {data['load_before']}, "
        f"after: {load_average()}.",
        "",
        f"Dataset `{args.dataset.name}` ({len(data['labels'])} labels, task type `{data['task_type']}`); "
        f"served texts from `{data['serve_name']}`; simulator latency {args.latency_ms} ms; "
        f"arrivals {args.rate:g}/s; the stack is `manage.py run_system` (web with preloading, main cluster, "
        "Duke's learning cluster at nice 19 in the idle scheduling class, simulator).",
        "",
    ]
    if live:
        learning, serving = live["learning"], live["serving"]
        served = [o for o in serving if o.by_duke]
        agreement = sum(o.body.get("result") == o.gold for o in served) / len(served) if served else None
        llm_prices = [Decimal(str(o.body["price"])) for o in serving if o.status == 201 and not o.by_duke]
        duke_prices = [Decimal(str(o.body["price"])) for o in served]
        all_prices = llm_prices + duke_prices
        learn_prices = [Decimal(str(o.body["price"])) for o in learning if o.status == 201]
        lines += [
            "### Learning and serving over time",
            "",
            *timeline_table(live["rows"], args.max_rows),
            "",
            *ascii_chart(live["rows"]),
            "",
            "### Versions",
            "",
            *versions_table(live["versions"], live["began_wall"], data["task_type"]),
            "",
            "| result | value |",
            "|---|---|",
            f"| learning phase: tasks POSTed (LLM agent) / rejected | {len(learning)} / "
            f"{sum(o.status != 201 for o in learning)} |",
            f"| learning phase: last task completed at | {live['learned_s']:.0f} s |",
            f"| versions when the last learning task completed + settling (≤ {args.settle_s:g} s) | "
            f"{live['versions_after_settle']} (settled: {'yes' if live['settled'] else 'no'}) |",
            f"| **versions existing (finished) when the last learning task completed + 60 s** | "
            f"**{live.get('versions_at_60', '–')}** ({live.get('finished_at_60', '–')}) |",
            f"| serving phase: tasks POSTed (`auto`) | {len(serving)} |",
            f"| **Duke's share of new tasks** | **{_pct(len(served) / len(serving) if serving else None)}** "
            f"({len(served)}) |",
            f"| **Duke's answers agreeing with the gold label** | **{_pct(agreement)}** |",
            f"| serving phase POST /tasks, Duke-served: p50 / p99 (arrivals at {args.rate:g}/s) | "
            f"{_fmt(percentile([o.ms for o in served], 50), '.1f')} / "
            f"{_fmt(percentile([o.ms for o in served], 99), '.1f')} ms |",
            "| price per task: learning phase (LLM) / serving phase (all, Duke, LLM) | "
            f"{_mean(learn_prices)} / {_mean(all_prices)}, {_mean(duke_prices)}, {_mean(llm_prices)} |",
            "| production loaded in the background (web workers' log lines) | "
            f"{len(live['preload_lines'])} |",
            f"| models loaded inside a request | {len(live['request_loads'])} |",
            f"| learning workers at low priority (log lines) | {len(live['nice_lines'])} |",
            f"| tracebacks in the stack's log | {len(live['errors'])} |",
            "",
        ]
        latency = live["latency"]
        if latency:
            met = latency["duke_p99"] < TARGET_P99_MS and latency["after_p99"] < TARGET_P99_MS
            lines += [
                f"### POST /tasks latency, {args.latency_clients} clients, Duke-covered texts "
                f"(an operator promotes v{_fmt(latency['promoted'])} half way)",
                "",
                "| measure | value |",
                "|---|---|",
                f"| requests (errors) | {latency['requests']} ({latency['errors']}) |",
                f"| all: p50 / p99 / max | {latency['all_p50']:.1f} / {latency['all_p99']:.1f} / "
                f"{latency['max']:.1f} ms |",
                f"| Duke-served ({latency['duke_n']}): p50 / p99 | {latency['duke_p50']:.1f} / "
                f"**{latency['duke_p99']:.1f}** ms |",
                f"| first {latency['after_n']} after the promotion (Duke-served {latency['after_duke']}): "
                f"p99 / max | **{_fmt(latency['after_p99'], '.1f')}** / "
                f"{_fmt(latency['after_max'], '.1f')} ms |",
                f"| target: Duke-served p99 < {TARGET_P99_MS:g} ms, also right after a promotion | "
                f"{'met' if met else 'NOT met'} |",
                "",
            ]
    if runs:
        off = runs.get(LEARNING_OFF)
        lines += [
            f"### Paid work while Duke learns: {args.throughput_tasks} labeling tasks × {args.repeat} runs, "
            f"{args.throughput_clients} clients, {args.latency_ms} ms LLM latency",
            "",
            "| | " + " | ".join(title for title, _ in runs.values()) + " |",
            "|---" + "|---:" * len(runs) + "|",
        ]

        def row(label: str, render: Callable[[dict], str]) -> str:
            return f"| {label} | " + " | ".join(render(result) for _, result in runs.values()) + " |"

        lines += [
            row(
                "**tasks completed / s** (first POST → last final; mean of the runs)",
                lambda r: f"**{r['per_s']:.1f}** (" + ", ".join(f"{x:.1f}" for x in r["per_s_each"]) + ")",
            ),
            row(
                "completed / failed / rejected",
                lambda r: f"{r['completed']} / {r['failed']} / {r['rejected']}",
            ),
            row("all submitted after (mean)", lambda r: f"{r['submitted_s']:.1f} s"),
            row("last task final after (mean)", lambda r: f"{r['elapsed_s']:.1f} s"),
            row(
                "Duke versions finished by then / at the end",
                lambda r: f"{r['trained_meanwhile']} / {r['versions']}",
            ),
        ]
        if off and off[1]["per_s"] > 0:

            def ratio(result: dict) -> str:
                value = result["per_s"] / off[1]["per_s"]
                return f"**{value:.2f}**" + (
                    "" if result is off[1] else (" ✓" if value >= TARGET_RATIO else " ✗")
                )

            lines.append(row(f"÷ learning off (target ≥ {TARGET_RATIO})", ratio))
        lines.append("")
    return "\n".join(lines)


def _mean(values: list[Decimal]) -> str:
    if not values:
        return "–"
    return str((sum(values, Decimal(0)) / len(values)).quantize(Decimal("0.0001")))


def verdicts(args: argparse.Namespace, live: dict | None, runs: dict[str, tuple[str, dict]]) -> list[str]:
    """One VERDICT line per issue-18 target the run measured, with the load average at the end."""
    lines = []
    if live:
        versions = live.get("versions_at_60")
        lines.append(
            f"VERDICT item 1 (>= 13 versions at last learning task + 60 s, {args.tasks} samples at "
            f"{args.rate:g}/s): {'PASS' if versions is not None and versions >= 13 else 'FAIL'} ({versions})"
        )
        latency = live.get("latency")
        if latency:
            met = latency["duke_p99"] < TARGET_P99_MS and latency["after_p99"] < TARGET_P99_MS
            lines.append(
                f"VERDICT item 5 (Duke-served POST /tasks p99 < {TARGET_P99_MS:g} ms at "
                f"{args.latency_clients} clients, also after a promotion): {'PASS' if met else 'FAIL'} "
                f"(p99 {latency['duke_p99']:.1f} ms, after promotion {_fmt(latency['after_p99'], '.1f')} ms)"
            )
    off = runs.get(LEARNING_OFF)
    on = runs.get("learning-on")
    if off and on and off[1]["per_s"] > 0:
        ratio = on[1]["per_s"] / off[1]["per_s"]
        overlapped = on[1]["trained_meanwhile"]
        lines.append(
            f"VERDICT item 9 (learning on / off >= {TARGET_RATIO}, with trainings inside the window): "
            f"{'PASS' if ratio >= TARGET_RATIO and overlapped > 0 else 'FAIL'} "
            f"(ratio {ratio:.2f}, trainings finished inside: {overlapped})"
        )
    return [f"{line}; load {load_average()}" for line in lines]
