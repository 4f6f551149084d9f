"""Replay: the real system learns a labeled dataset from a perfect teacher, then serves its test split.

Runs in this process, on a fresh SQLite file in a temporary directory: the LLM simulator replays the
dataset's labels (train and test) as the LLM's answers; the django-q2 queue runs in sync mode (every job
runs inline, as in the tests); requests go through the real HTTP stack via Django's test client (JWT,
throttles, serializers, views, services). Steps:

1. every train row is POSTed to /tasks with the default LLM agent named explicitly (so none is routed to
   Duke: every one becomes a training sample);
2. training: by default one, through the operator's POST /model/train once the train file is in (or every
   --train-every samples, the watermark path); the promotion gate decides what goes to production;
3. every test row is POSTed with agent=auto: Duke serves what its calibrated thresholds allow.

Reports coverage (share of test tasks Duke served), Duke's agreement with the dataset label on what it
served, LLM calls avoided, money saved (the routing status), the routing decision time and the submit
latency, and writes them under "## Replay" in docs/BENCHMARKS.md.

    .venv/bin/python bench/replay.py --train ../shared/datasets/reuters-r8.train.jsonl \\
        --test ../shared/datasets/reuters-r8.test.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (  # noqa: E402
    BENCHMARKS_MD,
    apply_env,
    command_line,
    machine,
    percentile,
    stack_env,
    write_section,
)

DATASETS = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"
MAX_DESCRIPTION = 8000
SHORT_WORDS = 40  # "short text" for the latency target: a tweet, a review snippet, a support message
TARGET_AGREEMENT = 0.95
TARGET_DECIDE_MS = 2.0
TARGET_SUBMIT_P50_MS = 40.0


@dataclass(frozen=True)
class Row:
    text: str
    label: str


def load_rows(path: Path, limit: int | None) -> list[Row]:
    if not path.is_file():
        sys.exit(f"error: dataset file not found: {path} (see /work/shared/datasets/README.md)")
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            data = json.loads(line)
            text = " ".join(str(data["text"]).split())[:MAX_DESCRIPTION].strip()
            if text:
                rows.append(Row(text, str(data["label"])))
            if limit is not None and len(rows) >= limit:
                break
    return rows


def task_type_for(path: Path) -> str:
    stem = path.name.split(".")[0]
    return re.sub(r"[^a-z0-9-]+", "-", stem.lower()).strip("-")[:64] or "replay"


@dataclass
class Served:
    words: int
    ms: float
    correct: bool
    audited: bool


@dataclass
class Results:
    submitted: int = 0
    served: list[Served] = field(default_factory=list)
    llm_ms: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, default=DATASETS / "reuters-r8.train.jsonl")
    parser.add_argument("--test", type=Path, default=DATASETS / "reuters-r8.test.jsonl")
    parser.add_argument("--limit-train", type=int, default=None)
    parser.add_argument("--limit-test", type=int, default=None)
    parser.add_argument("--task-type", default=None, help="default: from the train file's name")
    parser.add_argument(
        "--train-every",
        type=int,
        default=0,
        help="DUKE_TRAIN_EVERY during the train push; 0 (default): one training after it (POST /model/train)",
    )
    parser.add_argument("--audit-rate", type=float, default=0.05, help="DUKE_AUDIT_RATE")
    parser.add_argument("--noise", type=float, default=0.0, help="teacher noise: share of flipped labels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/BENCHMARKS.md alone")
    args = parser.parse_args()

    train_rows = load_rows(args.train, args.limit_train)
    test_rows = load_rows(args.test, args.limit_test)
    labels = sorted({r.label for r in train_rows} | {r.label for r in test_rows})
    task_type = args.task_type or task_type_for(args.train)

    with tempfile.TemporaryDirectory(prefix="aicp-replay-") as tmp:
        data = Path(tmp)
        teacher = data / "teacher.jsonl"
        with teacher.open("w", encoding="utf-8") as handle:
            for row in [*train_rows, *test_rows]:
                handle.write(json.dumps({"text": row.text, "label": row.label}) + "\n")

        from agents.simulator import LLMSimulator

        simulator = LLMSimulator(dataset=teacher, noise=args.noise, zero_shot=False, seed=args.seed).start()
        try:
            env = stack_env(
                data,
                AICP_Q_SYNC="1",
                AICP_LOG_LEVEL="WARNING",
                DJANGO_DEBUG="0",
                DJANGO_SECRET_KEY=secrets.token_urlsafe(48),
                DJANGO_ALLOWED_HOSTS="testserver",
                AICP_SSL_REDIRECT="0",
                OPENAI_BASE_URL=simulator.base_url,
                OPENAI_API_KEY="simulator",
                AICP_LLM_SIMULATED="1",
                AICP_SIGNUP_CREDIT="1000000",
                AICP_THROTTLE_SUBMIT="100000000/minute",
                AICP_JWT_ACCESS_MINUTES=str(24 * 60),  # a full run outlasts the default 30 minutes
                DUKE_TRAIN_EVERY=str(args.train_every or 10**9),
                DUKE_AUDIT_RATE=str(args.audit_rate),
                # Samples are embedded in batches when training starts, not one by one as they arrive:
                # the same vectors, much less wall time on two cores.
                DUKE_ENCODE_ON_RECORD="0",
            )
            apply_env(env)
            import django

            django.setup()
            from django.core.management import call_command

            call_command("migrate", verbosity=0, interactive=False)
            report = run(args, train_rows, test_rows, labels, task_type, simulator)
        finally:
            simulator.stop()
    print(report)
    if not args.no_write:
        write_replay_section(task_type, report)
    return 0


def run(
    args: argparse.Namespace,
    train_rows: list[Row],
    test_rows: list[Row],
    labels: list[str],
    task_type: str,
    simulator: Any,
) -> str:
    from django.conf import settings
    from rest_framework.test import APIClient
    from rest_framework_simplejwt.tokens import RefreshToken

    from duke import registry
    from duke.models import ModelVersion, ServedTask
    from duke.router import seed_audit_sampling
    from duke.selectors import routing_status
    from users.models import User
    from users.services import buyer_register

    load_before = os.getloadavg()[0]
    seed_audit_sampling(args.seed)
    buyer = buyer_register(username="replay-buyer", password=secrets.token_urlsafe(16))
    operator = User.objects.create_user(
        username="replay-operator", password=secrets.token_urlsafe(16), is_staff=True
    )
    client, ops = APIClient(), APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(buyer).access_token}")
    ops.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(operator).access_token}")

    def post(row: Row, agent: str) -> tuple[int, dict, float]:
        body = {"description": row.text, "complexity": 1, "labels": labels, "task_type": task_type}
        started = time.perf_counter()
        response = client.post("/tasks", {**body, "agent": agent}, format="json")
        return response.status_code, response.json(), (time.perf_counter() - started) * 1000

    # 1. The teacher labels the train file.
    started = time.perf_counter()
    failures: Counter = Counter()
    for i, row in enumerate(train_rows, start=1):
        code, body, _ = post(row, settings.AICP_DEFAULT_AGENT)
        if code in (401, 403):
            sys.exit(f"error: POST /tasks answered {code}: {body}")
        if code != 201:
            failures[code] += 1
        if i % 500 == 0:
            print(f"  train {i}/{len(train_rows)} ({time.perf_counter() - started:.0f} s)", flush=True)
    push_s = time.perf_counter() - started

    # 2. Training (inline: the queue is in sync mode) and the promotion gate.
    started = time.perf_counter()
    if not args.train_every:
        response = ops.post("/model/train", {}, format="json")
        if response.status_code != 202:
            sys.exit(f"error: POST /model/train answered {response.status_code}: {response.content[:300]!r}")
    train_s = time.perf_counter() - started
    versions = list(ModelVersion.objects.order_by("number"))
    loaded = registry.load_production_model()
    if loaded is None:
        detail = "; ".join(f"v{v.number} {v.status}: {v.promotion.get('reason', v.error)}" for v in versions)
        sys.exit(f"error: no production version after training ({detail or 'no version'})")
    production, model = loaded
    print(f"  production v{production.number}, thresholds {production.thresholds}", flush=True)

    # 3. The test file with agent=auto.
    started = time.perf_counter()
    results = Results()
    for i, row in enumerate(test_rows, start=1):
        code, body, ms = post(row, "auto")
        results.submitted += 1
        if code != 201:
            results.errors[code] += 1
            continue
        if body["executed_by"] == "duke":
            audited = ServedTask.objects.filter(task_id=body["id"]).exclude(audit="").exists()
            results.served.append(Served(len(row.text.split()), ms, body["result"] == row.label, audited))
        else:
            results.llm_ms.append(ms)
        if i % 500 == 0:
            print(f"  test {i}/{len(test_rows)} ({time.perf_counter() - started:.0f} s)", flush=True)
    test_s = time.perf_counter() - started

    decide_ms, encode_ms = time_decisions(model, production, test_rows, labels, task_type)
    status = routing_status()
    return render(
        args=args,
        task_type=task_type,
        n_train=len(train_rows),
        train_failures=failures,
        versions=versions,
        production=production,
        results=results,
        status=status,
        decide_ms=decide_ms,
        encode_ms=encode_ms,
        push_s=push_s,
        train_s=train_s,
        test_s=test_s,
        simulator_requests=simulator.request_count,
        load_before=load_before,
    )


def time_decisions(
    model: Any, production: Any, rows: list[Row], labels: list[str], task_type: str
) -> tuple[list[float], list[float]]:
    """The routing decision alone (prediction + threshold on an encoded text), and encoding one text."""
    from duke.encoder import encode_texts
    from duke.router import decide, needs_embedding, threshold_for

    threshold = threshold_for(production, task_type) or 0.0
    sample = rows[: min(len(rows), 500)]
    encode_ms: list[float] = []
    embeddings = []
    for row in sample:
        started = time.perf_counter()
        embeddings.append(encode_texts([row.text])[0] if needs_embedding(model) else None)
        encode_ms.append((time.perf_counter() - started) * 1000)
    decide_ms = []
    for row, embedding in zip(sample, embeddings, strict=True):
        started = time.perf_counter()
        decide(
            model, text=row.text, labels=labels, task_type=task_type, embedding=embedding, threshold=threshold
        )
        decide_ms.append((time.perf_counter() - started) * 1000)
    return decide_ms, encode_ms


def _ms(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"{percentile(values, 50):.1f} / {percentile(values, 99):.1f}"


def render(
    *,
    args: argparse.Namespace,
    task_type: str,
    n_train: int,
    train_failures: Counter,
    versions: list,
    production: Any,
    results: Results,
    status: dict,
    decide_ms: list[float],
    encode_ms: list[float],
    push_s: float,
    train_s: float,
    test_s: float,
    simulator_requests: int,
    load_before: float,
) -> str:
    served = results.served
    n_test = results.submitted
    n_served = len(served)
    agreed = sum(s.correct for s in served)
    audited = sum(s.audited for s in served)
    coverage = n_served / n_test if n_test else 0.0
    agreement = agreed / n_served if n_served else float("nan")
    row = status["task_types"].get(task_type, {})
    totals = status["totals"]
    entry = (production.thresholds or {}).get(task_type) or {}
    short = [s.ms for s in served if s.words <= SHORT_WORDS and not s.audited]
    long = [s.ms for s in served if s.words > SHORT_WORDS and not s.audited]
    plain = [s.ms for s in served if not s.audited]
    trained = ", ".join(
        f"v{v.number} {v.status} ({v.train_samples}+{v.validation_samples} samples)" for v in versions
    )
    live = row.get("live", {})
    verdict_agreement = "meets" if n_served and agreement >= TARGET_AGREEMENT else "misses"
    lines = [
        f"Command: `{command_line()}`",
        "",
        f"Machine: {machine()}; load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at "
        "the end (other processes share the two cores). Teacher: the simulator replaying the dataset labels"
        + (f" with {args.noise:.0%} flipped" if args.noise else " (perfect)")
        + f"; queue in sync mode; DUKE_AUDIT_RATE {args.audit_rate}; target agreement "
        f"{status['target_agreement']}.",
        "",
        "| | |",
        "|---|---|",
        f"| train tasks pushed | {n_train} in {push_s:.0f} s"
        + (f" ({sum(train_failures.values())} refused: {dict(train_failures)})" if train_failures else "")
        + " |",
        f"| training | {train_s:.0f} s after the push; versions: {trained} |",
        f"| production | v{production.number}: validation accuracy {production.accuracy or 0:.3f}, "
        f"threshold {entry.get('threshold', float('nan')):.4f}, expected coverage "
        f"{entry.get('coverage', 0):.1%} on {entry.get('validation_samples', 0)} validation samples |",
        f"| test tasks | {n_test} in {test_s:.0f} s"
        + (f" ({sum(results.errors.values())} refused: {dict(results.errors)})" if results.errors else "")
        + " |",
        f"| **coverage** (served by Duke) | **{coverage:.1%}** ({n_served}) |",
        f"| **Duke's agreement with the dataset label** on what it served | **{agreement:.1%}** "
        f"({agreed}/{n_served}; {verdict_agreement} the {TARGET_AGREEMENT:.0%} target) |",
        f"| live audits | {audited} sent to the LLM; live agreement {live.get('agreed', 0)}/"
        f"{live.get('observations', 0)}; suspended: {row.get('suspended', False)} |",
        f"| LLM calls avoided | {n_served - audited} of {n_test} test tasks "
        f"({simulator_requests} LLM requests in the whole run) |",
        f"| money saved (buyers) | {row.get('money_saved', '0')} (LLM quotes {row.get('llm_quotes', '0')}"
        f" − paid to Duke {row.get('paid_to_duke', '0')}); provider cost avoided "
        f"{row.get('llm_cost_avoided', '0')}, audits cost {row.get('audit_cost', '0')} |",
        f"| share of all labeling tasks (train + test) | {row.get('share') or 0:.1%} "
        f"(totals: {totals['served_by_duke']} of {totals['labeling_tasks']}) |",
        f"| routing decision, encoded text (p50 / p99) | {_ms(decide_ms)} ms "
        f"(target < {TARGET_DECIDE_MS:g} ms) |",
        f"| encoding one text (p50 / p99) | {_ms(encode_ms)} ms |",
        f"| submit answered by Duke, not audited (p50 / p99) | {_ms(plain)} ms |",
        f"| … texts of ≤ {SHORT_WORDS} words | {_ms(short)} ms ({len(short)}; target p50 < "
        f"{TARGET_SUBMIT_P50_MS:g} ms) |",
        f"| … texts of > {SHORT_WORDS} words | {_ms(long)} ms ({len(long)}) |",
        f"| submit answered by Duke and audited (inline in sync mode) | "
        f"{_ms([s.ms for s in served if s.audited])} ms |",
        f"| submit sent to the LLM (its call inline in sync mode) | {_ms(results.llm_ms)} ms |",
    ]
    return "\n".join(lines)


def write_replay_section(name: str, report: str) -> None:
    """Replaces this dataset's `### name` block inside `## Replay`; other datasets' blocks stay."""
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else ""
    found = re.search(r"^## Replay\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    body = found.group(1) if found else ""
    intro, blocks = _split_blocks(body)
    blocks[name] = report.strip()
    if not intro.strip():
        intro = (
            "`bench/replay.py`: the real system (API, services, queue in sync mode, training, promotion "
            "gate, routing) learns a dataset from the LLM simulator replaying its labels, then serves the "
            "test split with `agent=auto`."
        )
    parts = [intro.strip()] + [f"### {key}\n\n{value}" for key, value in blocks.items()]
    write_section("Replay", "\n\n".join(parts))


def _split_blocks(body: str) -> tuple[str, dict[str, str]]:
    pieces = re.split(r"^### (.+)\n", body, flags=re.MULTILINE)
    blocks = {pieces[i].strip(): pieces[i + 1].strip() for i in range(1, len(pieces) - 1, 2)}
    return pieces[0], blocks


if __name__ == "__main__":
    sys.exit(main())
