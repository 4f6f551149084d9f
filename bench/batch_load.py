"""Batch acceptance: POST /tasks/batch (JSON and NDJSON) against gunicorn on SQLite, and single POST /tasks
p99 at 50 clients, side by side in one run.

Starts gunicorn exactly as ``manage.py run_system`` does (2 workers × 8 threads) on a fresh SQLite file in
production mode, like bench/api_load.py (whose HTTP client and phases it reuses). Phases, one after the
other on the same server:

1. ``--batch-clients`` keep-alive clients, each its own buyer, send ``POST /tasks/batch`` with
   ``--batch-size`` free-form tasks (JSON) back to back for ``--seconds``: accepted tasks/s = tasks in 201
   answers ÷ seconds (latency per batch request too);
2. the same with NDJSON bodies of ``--ndjson-lines`` lines;
3. ``--clients`` keep-alive clients send single ``POST /tasks`` back to back (p50/p99), as api_load does.

The queue cluster is not started: this measures acceptance (validation, quotes, holds, one transaction
per batch, the response), not execution. Buyers are credited enough for the whole run, and the submit
limit (AICP_THROTTLE_SUBMIT, which counts every task of a batch) is raised so that it does not refuse
them (it is still checked). The run checks that every accepted task exists with exactly one hold.

    .venv/bin/python bench/batch_load.py --seconds 20
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (  # noqa: E402
    MANAGE,
    PYTHON,
    RssSampler,
    apply_env,
    command_line,
    free_port,
    load_average,
    machine,
    mib,
    percentile,
    run_checked,
    stack_env,
    start,
    stop,
    wait_for_http,
    write_section,
)
from bench.api_load import Call, Phase, run_phase  # noqa: E402
from core.perf.web import gunicorn_command  # noqa: E402

TARGET_TASKS_S = 5000.0
TARGET_P99_MS = 100.0
SUBMIT_LIMIT = "100000000/hour"  # high enough never to refuse this run; still checked on every task


def _request(path: str, body: bytes, token: str, content_type: str) -> bytes:
    head = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        f"Content-Type: {content_type}",
        f"Authorization: Bearer {token}",
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _tasks(count: int, client: int) -> list[dict]:
    return [
        {"description": f"Summarise report {client}-{i} of the quarter in one sentence.", "complexity": 1}
        for i in range(count)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--ndjson-lines", type=int, default=10000)
    parser.add_argument("--batch-clients", type=int, default=2)
    parser.add_argument("--clients", type=int, default=50, help="single POST /tasks clients")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--web-threads", type=int, default=8)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/BENCHMARKS.md alone")
    args = parser.parse_args()
    load_before = load_average()

    with tempfile.TemporaryDirectory(prefix="aicp-bench-batch-") as tmp:
        data = Path(tmp)
        port = free_port()
        env = stack_env(data, AICP_LOG_LEVEL="WARNING", AICP_THROTTLE_SUBMIT=SUBMIT_LIMIT)
        run_checked([PYTHON, MANAGE, "migrate", "--no-input"], env, data / "migrate.log")
        apply_env(env)
        import django

        django.setup()
        from rest_framework_simplejwt.tokens import RefreshToken

        from ledger.models import LedgerEntry
        from ledger.services import buyer_credit
        from tasks.models import Task
        from users.services import buyer_register

        def buyer_token(name: str) -> str:
            buyer = buyer_register(username=name, password="bench-pass-1234567")
            buyer_credit(user_id=buyer.pk, amount=Decimal("10000000"), memo="bench credit")
            return str(RefreshToken.for_user(buyer).access_token)

        batch_tokens = [buyer_token(f"batch-buyer-{i}") for i in range(args.batch_clients)]
        ndjson_tokens = [buyer_token(f"ndjson-buyer-{i}") for i in range(args.batch_clients)]
        single_tokens = [buyer_token(f"single-buyer-{i}") for i in range(args.clients)]
        json_requests = [
            _request(
                "/tasks/batch",
                json.dumps({"tasks": _tasks(args.batch_size, i)}).encode(),
                token,
                "application/json",
            )
            for i, token in enumerate(batch_tokens)
        ]
        ndjson_requests = [
            _request(
                "/tasks/batch",
                "".join(json.dumps(t) + "\n" for t in _tasks(args.ndjson_lines, i)).encode(),
                token,
                "application/x-ndjson",
            )
            for i, token in enumerate(ndjson_tokens)
        ]
        submit_body = {"description": "Summarise the quarterly report in one sentence.", "complexity": 1}
        single_requests = [Call("/tasks", submit_body, token).http() for token in single_tokens]

        gunicorn = gunicorn_command(
            python=PYTHON, bind=f"127.0.0.1:{port}", workers=args.web_workers, threads=args.web_threads
        )
        web = start(gunicorn, env, data / "gunicorn.log")
        sampler = RssSampler()
        sampler.watch("web", web.pid)
        sampler.start()
        try:
            wait_for_http(f"http://127.0.0.1:{port}/health", accept=(200, 503))
            json_warm, json_phase = run_phase(
                "POST /tasks/batch JSON", port, json_requests, args.seconds, args.warmup_s, web.pid
            )
            ndjson_warm, ndjson_phase = run_phase(
                "POST /tasks/batch NDJSON", port, ndjson_requests, args.seconds, args.warmup_s, web.pid
            )
            single_warm, single_phase = run_phase(
                "POST /tasks", port, single_requests, args.seconds, args.warmup_s, web.pid
            )
        finally:
            sampler.stop()
            stop(web)
        expected = (
            (json_warm.ok + json_phase.ok) * args.batch_size
            + (ndjson_warm.ok + ndjson_phase.ok) * args.ndjson_lines
            + single_warm.ok
            + single_phase.ok
        )
        created = Task.objects.count()
        holds = LedgerEntry.objects.filter(kind=LedgerEntry.Kind.HOLD, amount__gt=0).count()
        gunicorn_log = (data / "gunicorn.log").read_text(errors="replace")[-2000:]

    def tasks_s(phase: Phase, size: int) -> float:
        return phase.ok * size / phase.seconds if phase.seconds else 0.0

    json_rate = tasks_s(json_phase, args.batch_size)
    ndjson_rate = tasks_s(ndjson_phase, args.ndjson_lines)
    p99 = percentile(single_phase.latencies_ms, 99)
    consistent = created == expected and holds == expected
    failures = sum(p.failed for p in (json_phase, ndjson_phase, single_phase))

    def row(name: str, phase: Phase, size: int) -> str:
        return (
            f"| {name} | **{tasks_s(phase, size):.0f}** | {phase.rps:.2f} | "
            f"{percentile(phase.latencies_ms, 50):.0f} / {percentile(phase.latencies_ms, 99):.0f} ms | "
            f"{phase.ok} | {phase.failed} | {phase.cpu_ms / size:.3f} ms |"
        )

    lines = [
        f"Command: `{command_line()}`",
        "",
        f"Machine: {machine()}; load average before the run {load_before}, after {load_average()} (the "
        "machine is shared: other engineers' work competes for the same 2 cores, so these are noisy). "
        f"gunicorn as `run_system` starts it ({args.web_workers} workers × {args.web_threads} threads), "
        "SQLite (WAL) on a fresh file, DJANGO_DEBUG=0, no queue cluster (acceptance only); "
        f"{args.seconds:.0f} s per phase after {args.warmup_s:.0f} s of warm-up; the load generator runs "
        f"on the same cores. AICP_THROTTLE_SUBMIT={SUBMIT_LIMIT} (checked, never reached).",
        "",
        "| phase | accepted tasks/s | requests/s | p50 / p99 per request | 2xx | errors | "
        "server CPU per task |",
        "|---|---|---|---|---|---|---|",
        row(
            f"`POST /tasks/batch`, JSON, {args.batch_size} tasks, {args.batch_clients} clients",
            json_phase,
            args.batch_size,
        ),
        row(
            f"`POST /tasks/batch`, NDJSON, {args.ndjson_lines} lines, {args.batch_clients} clients",
            ndjson_phase,
            args.ndjson_lines,
        ),
        row(f"`POST /tasks` (single), {args.clients} clients", single_phase, 1),
        "",
        f"Goal ≥ {TARGET_TASKS_S:.0f} accepted tasks/s through the batch endpoint: JSON "
        f"{'**met**' if json_rate >= TARGET_TASKS_S else '**NOT met**'} ({json_rate:.0f}/s), NDJSON "
        f"{'**met**' if ndjson_rate >= TARGET_TASKS_S else '**NOT met**'} ({ndjson_rate:.0f}/s). "
        f"Single POST /tasks p99 < {TARGET_P99_MS:.0f} ms at {args.clients} clients: "
        f"{'**met**' if p99 < TARGET_P99_MS else '**NOT met**'} ({p99:.1f} ms). "
        f"Server CPU per accepted task: {json_phase.cpu_ms / args.batch_size:.3f} ms in a JSON batch, "
        f"{single_phase.cpu_ms:.3f} ms for a single POST /tasks "
        f"({single_phase.cpu_ms * args.batch_size / json_phase.cpu_ms:.1f}× as much), so with the "
        f"{os.cpu_count()} cores to itself the server's CPU would allow about "
        f"{os.cpu_count() * 1000 * args.batch_size / json_phase.cpu_ms:.0f} batch tasks/s (less the "
        "writes SQLite serialises); the rates above are what it got on the shared machine. "
        f"Tasks created {created}, holds {holds}, tasks in 2xx answers (warm-ups included) {expected}: "
        f"{'consistent' if consistent else '**INCONSISTENT**'}. "
        f"Peak RSS of the web server (all workers): {mib(sampler.peaks.get('web', 0))}.",
    ]
    report = "\n".join(lines)
    print(report)
    if failures:
        print(gunicorn_log, file=sys.stderr)
    if not args.no_write:
        write_section("Batch acceptance (bench/batch_load.py)", report)
    return 0 if consistent and not failures else 1


if __name__ == "__main__":
    sys.exit(main())
