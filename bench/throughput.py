"""Throughput: tasks through a real django-q2 cluster against the LLM simulator at a fixed latency.

Starts the whole stack as ``manage.py run_system`` does, on a fresh SQLite file in a temporary directory
and in production mode (DJANGO_DEBUG=0): the simulator (``--latency-ms``, no zero-shot encoder),
``manage.py qcluster`` and gunicorn (2 workers × 8 threads). Then two phases:

1. execution: a backlog of ``--tasks`` tasks is submitted while every drainer slot is held, then released
   at once. The cluster's completion rate is compared with its limit, the in-flight bound ÷ latency
   (min(AICP_DRAINERS, AICP_Q_WORKERS) × AICP_LLM_CONCURRENCY ÷ latency).
2. end to end: ``--live-tasks`` tasks are POSTed to ``/tasks`` by ``--live-clients`` concurrent keep-alive
   clients (each its own buyer and JWT), on the same two cores as the stack, while they execute:
   submission (the task row's creation) → completion latency, and the rate the whole pipeline sustains.

Both phases check that no task is lost (every one final) or duplicated (exactly one settlement in the
ledger each, and one claim each when no call fails). Memory: the peak of the summed RSS of the web
server's, the cluster's and the simulator's process trees (and the PSS sum, which counts pages shared by
forked workers once).

    .venv/bin/python bench/throughput.py --tasks 3000 --live-tasks 1000 --latency-ms 500
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
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
    tree_cpu_s,
    wait_for_http,
    wait_for_log,
    write_section,
)
from core.perf.web import gunicorn_command  # noqa: E402

TARGET_TASKS_PER_S = 100.0
TARGET_RATIO = 0.8
TARGET_RSS = 1024 * 2**20
BATCH = 100  # backlog submissions per transaction (setting up the backlog is not what is measured)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=3000, help="backlog for the execution phase")
    parser.add_argument("--live-tasks", type=int, default=1000, help="end-to-end phase; 0 skips it")
    parser.add_argument("--live-clients", type=int, default=8, help="concurrent POST /tasks clients")
    parser.add_argument("--latency-ms", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2, help="AICP_Q_WORKERS")
    parser.add_argument(
        "--concurrency",
        default="64",
        help="AICP_LLM_CONCURRENCY per drainer; a comma-separated list runs the execution phase for each",
    )
    parser.add_argument("--drainers", type=int, default=None, help="AICP_DRAINERS (default: workers)")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="simulator 429/500/503 rate")
    parser.add_argument("--labeling", action="store_true", help="labeling tasks instead of free-form")
    parser.add_argument("--timeout-s", type=float, default=600.0)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/BENCHMARKS.md alone")
    parser.add_argument("--keep-logs", type=Path, default=None, help="copy the stack's logs to this folder")
    args = parser.parse_args()
    drainers = args.drainers or args.workers
    concurrencies = [int(value) for value in args.concurrency.split(",")]
    load_before = load_average()

    with tempfile.TemporaryDirectory(prefix="aicp-bench-throughput-") as tmp:
        data = Path(tmp)
        sim_port = free_port()
        env = stack_env(
            data,
            OPENAI_BASE_URL=f"http://127.0.0.1:{sim_port}/v1",
            OPENAI_API_KEY="simulator",
            AICP_LLM_SIMULATED="1",
            AICP_Q_WORKERS=str(args.workers),
            AICP_DRAINERS=str(drainers),
            AICP_SIGNUP_CREDIT="0",
            # Training and encoding are not what this measures; they would compete for the same cores.
            DUKE_TRAIN_EVERY=str(10**9),
            DUKE_ENCODE_ON_RECORD="0",
        )
        run_checked([PYTHON, MANAGE, "migrate", "--no-input"], env, data / "migrate.log")
        apply_env(env)
        import django

        django.setup()
        from ledger.services import buyer_credit
        from users.services import buyer_register

        buyer = buyer_register(username="bench-buyer", password="bench-pass-1234567")
        buyer_credit(user_id=buyer.pk, amount=Decimal("1000000"), memo="bench")

        live_tokens = _live_buyers(args.live_clients)
        sampler = RssSampler()
        simulator_cmd = [PYTHON, "-m", "agents.simulator", "--port", str(sim_port), "--no-zero-shot"]
        simulator_cmd += ["--latency-ms", str(args.latency_ms), "--fault-rate", str(args.fault_rate)]
        simulator = start(simulator_cmd, env, data / "simulator.log")
        web_port = free_port()
        web = start(_gunicorn(web_port), env, data / "gunicorn.log")
        executions: list[tuple[int, dict]] = []
        live = None
        torch_loaded = False
        try:
            wait_for_http(f"http://127.0.0.1:{sim_port}/health")
            wait_for_http(f"http://127.0.0.1:{web_port}/health", accept=(200, 503))
            sampler.watch("simulator", simulator.pid)
            sampler.watch("web", web.pid)
            sampler.start()
            for index, concurrency in enumerate(concurrencies):
                log = data / f"qcluster-{concurrency}.log"
                cluster_env = {**env, "AICP_LLM_CONCURRENCY": str(concurrency)}
                cluster = start([PYTHON, MANAGE, "qcluster"], cluster_env, log)
                sampler.watch("cluster", cluster.pid)
                try:
                    wait_for_log(log, r"Q Cluster .* running", timeout_s=120)
                    executions.append(
                        (concurrency, run_backlog(args, buyer, cluster.pid, simulator.pid, drainers))
                    )
                    torch_loaded = torch_loaded or _maps_torch(cluster.pid) or _maps_torch(web.pid)
                    if index == len(concurrencies) - 1 and args.live_tasks:
                        live = run_live(args, web_port, live_tokens)
                    sampler.sample()
                finally:
                    stop(cluster)
        finally:
            sampler.stop()
            stop(web)
            stop(simulator)
        log_tail = "".join(p.read_text(errors="replace") for p in sorted(data.glob("qcluster-*.log")))[-3000:]
        if args.keep_logs:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            for log in data.glob("*.log"):
                shutil.copy(log, args.keep_logs / log.name)

    kind = "labeling" if args.labeling else "free-form"
    table = [
        f"| execution phase: backlog of {args.tasks} {kind} tasks | "
        + " | ".join(f"concurrency {c}" for c, _ in executions)
        + " |",
        "|---" * (len(executions) + 1) + "|",
    ]
    verdicts = []
    rows: dict[str, list[str]] = {}
    for concurrency, execution in executions:
        in_flight = min(drainers, args.workers) * concurrency
        limit = in_flight / (args.latency_ms / 1000)
        ratio = execution["tasks_per_s"] / limit
        verdicts.append(
            execution["tasks_per_s"] >= TARGET_TASKS_PER_S
            and ratio >= TARGET_RATIO
            and execution["lost"] == 0
            and execution["duplicated"] == 0
        )
        cells = {
            "completed tasks/s (first claim → last completion)": f"**{execution['tasks_per_s']:.1f}**",
            "completed tasks/s, steady state (10th → 90th pct. completion)": f"{execution['steady']:.1f}",
            "limit: in-flight bound ÷ latency": f"{in_flight} ÷ {args.latency_ms / 1000:g} s = {limit:.0f}",
            "ratio to the limit": f"**{ratio:.2f}**",
            "claim → completion p50 / p99": f"{execution['p50_ms']:.0f} / {execution['p99_ms']:.0f} ms",
            "cluster CPU per task (all its processes)": f"{execution['cpu_ms']:.1f} ms",
            "CPU ceiling if the cluster had every core (cores ÷ CPU per task)": (
                f"{(os.cpu_count() or 1) * 1000 / max(execution['cpu_ms'], 1e-9):.0f} tasks/s"
            ),
            "simulator CPU per task (the LLM stand-in shares the cores)": (
                f"{execution['simulator_cpu_ms']:.1f} ms"
            ),
            "completed / failed": f"{execution['completed']} / {execution['failed']}",
            "lost / duplicated": f"{execution['lost']} / {execution['duplicated']}",
        }
        for name, value in cells.items():
            rows.setdefault(name, []).append(value)
    table += [f"| {name} | " + " | ".join(values) + " |" for name, values in rows.items()]
    lost = sum(e["lost"] for _, e in executions) + (live["lost"] if live else 0)
    duplicated = sum(e["duplicated"] for _, e in executions) + (live["duplicated"] if live else 0)
    ok = any(verdicts) and lost == 0 and duplicated == 0 and sampler.total_peak < TARGET_RSS

    def row(name: str, value: str = "") -> str:
        return f"| {name} | {value} |" + " |" * (len(executions) - 1)

    if live:
        table += [
            row(
                f"**end to end: {args.live_tasks} tasks submitted while executing "
                f"(concurrency {executions[-1][0]})**"
            ),
            row(
                f"submission rate (`POST /tasks`, {args.live_clients} clients)",
                f"{live['submit_per_s']:.1f}/s ({live['http_errors']} errors)",
            ),
            row("completed tasks/s (first submission → last completion)", f"{live['tasks_per_s']:.1f}"),
            row("submission → completion p50 / p99", f"{live['p50_ms']:.0f} / {live['p99_ms']:.0f} ms"),
            row("lost / duplicated", f"{live['lost']} / {live['duplicated']}"),
        ]
    peaks = {name: mib(sampler.peaks.get(name, 0)) for name in ("web", "cluster", "simulator")}
    table += [
        row("**peak memory, whole stack (web + cluster + simulator)**"),
        row(
            "summed RSS",
            f"**{mib(sampler.total_peak)}** (web {peaks['web']}, cluster {peaks['cluster']}, "
            f"simulator {peaks['simulator']}; each tree's own peak)",
        ),
        row("summed PSS (shared pages counted once)", mib(sampler.total_pss_peak)),
        row(
            "torch mapped in the web's or the cluster's main process (so in every forked one)",
            "yes" if torch_loaded else "no",
        ),
    ]
    lines = [
        f"Command: `{command_line()}`",
        "",
        f"Machine: {machine()}; load average before the run {load_before}, after {load_average()} "
        "(the machine is shared: other work competes for the same cores). SQLite (WAL) on a fresh file, "
        "DJANGO_DEBUG=0, ORM broker; gunicorn as `run_system` starts it (2 workers × 8 threads); "
        f"{args.workers} queue workers, {drainers} drainer(s) × "
        f"AICP_LLM_CONCURRENCY each; simulator at {args.latency_ms} ms, fault rate {args.fault_rate}; "
        "Duke training and encoding off (not what this measures).",
        "",
        *table,
        "",
        f"Targets (execution ≥ {TARGET_TASKS_PER_S:.0f} tasks/s and ≥ {TARGET_RATIO} of the limit, 0 lost "
        f"or duplicated, summed RSS < 1 GiB): **{'met' if ok else 'NOT met'}** "
        f"(throughput and ratio met at concurrency: "
        f"{', '.join(str(c) for (c, _), v in zip(executions, verdicts, strict=True) if v) or 'none'}).",
        "",
        *[
            f"- Concurrency {c}: running at the limit ({limit:.0f} tasks/s) would take {need:.2f} of the "
            f"{os.cpu_count()} cores for the cluster and the simulator alone "
            f"({e['cpu_ms'] + e['simulator_cpu_ms']:.1f} ms of CPU per task); measured "
            f"{e['tasks_per_s']:.1f} tasks/s used {e['tasks_per_s'] * need / limit:.2f}."
            for c, e in executions
            for limit in [min(drainers, args.workers) * c / (args.latency_ms / 1000)]
            for need in [limit * (e["cpu_ms"] + e["simulator_cpu_ms"]) / 1000]
        ],
    ]
    body = "\n".join(lines)
    print(body)
    if lost:
        print("\nqcluster log tail:\n" + log_tail, file=sys.stderr)
    if not args.no_write:
        write_section("Throughput", body)
    # A missed performance target is a finding, reported above; a lost or duplicated task is a failure.
    return 1 if lost or duplicated or (live and live["http_errors"]) else 0


def _gunicorn(port: int) -> list[str]:
    """The web server as ``manage.py run_system`` starts it."""
    return gunicorn_command(python=PYTHON, bind=f"127.0.0.1:{port}", workers=2)


def _live_buyers(count: int) -> list[str]:
    """One buyer (and access token) per client: the per-buyer submit throttle stays out of the way."""
    from rest_framework_simplejwt.tokens import RefreshToken

    from ledger.services import buyer_credit
    from users.services import buyer_register

    tokens = []
    for index in range(count):
        buyer = buyer_register(username=f"bench-live-{index}", password="bench-pass-1234567")
        buyer_credit(user_id=buyer.pk, amount=Decimal("100000"), memo="bench")
        tokens.append(str(RefreshToken.for_user(buyer).access_token))
    return tokens


def _maps_torch(pid: int) -> bool:
    try:
        return "torch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def _requests(args: argparse.Namespace, count: int, offset: int) -> list:
    from tasks.services.submission import TaskRequest

    labels = ("positive", "negative", "neutral") if args.labeling else None
    return [
        TaskRequest(
            description=f"Benchmark task {offset + i}: summarise the quarterly report in one sentence.",
            complexity=1 + i % 5,
            labels=labels,
        )
        for i in range(count)
    ]


def run_backlog(
    args: argparse.Namespace, buyer: object, cluster_pid: int, simulator_pid: int, drainers: int
) -> dict:
    from django.db import transaction

    from tasks import queue
    from tasks.execution.slots import drain_slot_reserve
    from tasks.models import DrainSlot
    from tasks.services.submission import task_submit

    # Hold every drainer slot, so the backlog builds up untouched; then let the cluster at it at once.
    held = []
    while (lease := drain_slot_reserve(slots=drainers, ttl_s=3600)) is not None:
        held.append(lease)
    requests = _requests(args, args.tasks, 0)
    ids = []
    for start_at in range(0, len(requests), BATCH):
        with transaction.atomic():
            ids += [task_submit(buyer=buyer, request=r).id for r in requests[start_at : start_at + BATCH]]
    DrainSlot.objects.filter(number__in=[lease.number for lease in held]).update(
        state=DrainSlot.State.IDLE, token=None, lease_until=None
    )
    cpu_before, simulator_before = tree_cpu_s([cluster_pid]), tree_cpu_s([simulator_pid])
    for _ in range(drainers):
        queue.request_drain()
    result = _wait_and_measure(args, ids, since="started_at")
    result["cpu_ms"] = (tree_cpu_s([cluster_pid]) - cpu_before) * 1000 / max(1, len(ids))
    result["simulator_cpu_ms"] = (tree_cpu_s([simulator_pid]) - simulator_before) * 1000 / max(1, len(ids))
    return result


def run_live(args: argparse.Namespace, port: int, tokens: list[str]) -> dict:
    from bench.api_load import Call, _Connection

    bodies = [
        {"description": request.description, "complexity": request.complexity}
        | ({"labels": list(request.labels)} if request.labels else {})
        for request in _requests(args, args.live_tasks, args.tasks)
    ]
    errors: list[str] = []

    async def client(index: int) -> None:
        connection = _Connection(port)
        for body in bodies[index :: len(tokens)]:
            try:
                status = await connection.exchange(Call("/tasks", body, tokens[index]).http())
            except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            if status != 201:
                errors.append(f"HTTP {status}")
        connection.close()

    async def submit_all() -> None:
        await asyncio.gather(*(client(index) for index in range(len(tokens))))

    from tasks.models import Task

    started = time.monotonic()
    asyncio.run(submit_all())
    submit_s = time.monotonic() - started
    ids = list(Task.objects.filter(buyer__username__startswith="bench-live-").values_list("pk", flat=True))
    result = _wait_and_measure(args, ids, since="created_at")
    result["submit_per_s"] = len(ids) / submit_s
    result["http_errors"] = len(errors)
    result["lost"] += len(bodies) - len(ids) - len(errors)
    return result


def _wait_and_measure(args: argparse.Namespace, ids: list, *, since: str) -> dict:
    from django.db.models import Count, Q, Sum

    from ledger.models import LedgerEntry
    from tasks.models import Task

    deadline = time.monotonic() + args.timeout_s
    final = Task.objects.filter(pk__in=ids, status__in=Task.FINAL_STATUSES)
    while time.monotonic() < deadline and final.count() < len(ids):
        time.sleep(0.25)

    rows = list(Task.objects.filter(pk__in=ids).values_list(since, "finished_at"))
    done = [(begin, end) for begin, end in rows if begin is not None and end is not None]
    first = min(begin for begin, _ in rows if begin is not None)
    finishes = sorted(end for _, end in done)
    span = (finishes[-1] - first).total_seconds() if finishes else float("inf")
    lo, hi = finishes[len(finishes) // 10], finishes[(len(finishes) * 9) // 10]
    steady = (len(finishes) * 8 // 10) / max(1e-9, (hi - lo).total_seconds())
    latencies = [(end - begin).total_seconds() * 1000 for begin, end in done]

    # A task settled twice would have two payouts, or a payout and a release: the ledger says.
    settlements = (
        LedgerEntry.objects.filter(task_id__in=ids, kind__in=["payout", "release"], amount__lt=0)
        .values("task_id")
        .annotate(n=Count("id"))
    )
    settled_twice = sum(1 for row in settlements if row["n"] > 1)
    totals = Task.objects.filter(pk__in=ids).aggregate(
        completed=Count("id", filter=Q(status=Task.Status.COMPLETED)),
        failed=Count("id", filter=Q(status=Task.Status.FAILED)),
        claims=Sum("attempts"),
    )
    # Without faults every task is claimed exactly once; more claims mean a task ran twice.
    extra_claims = 0 if args.fault_rate else max(0, (totals["claims"] or 0) - len(ids))
    return {
        "tasks_per_s": len(done) / span if done else 0.0,
        "steady": steady,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "completed": totals["completed"],
        "failed": totals["failed"],
        "lost": len(ids) - totals["completed"] - totals["failed"],
        "duplicated": settled_twice + extra_claims,
    }


if __name__ == "__main__":
    sys.exit(main())
