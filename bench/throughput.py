"""Throughput: N tasks through a real django-q2 cluster against the LLM simulator at a fixed latency.

Starts, on a fresh SQLite file in a temporary directory: the simulator (``--latency-ms``), and
``manage.py qcluster`` with the environment's settings. This process submits the tasks through the
submission service (as the API would, one transaction each) and watches the database until every task
is final. Reports completed tasks per second against the configured limit (in-flight bound ÷ latency),
submission→completion percentiles, the peak memory of the whole stack, and checks that no task was lost
or run twice (one settlement in the ledger per task, one claim per task when no call fails).

    .venv/bin/python bench/throughput.py --tasks 3000 --latency-ms 500
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (  # noqa: E402
    MANAGE,
    PYTHON,
    RssSampler,
    apply_env,
    command_line,
    free_port,
    machine,
    mib,
    percentile,
    run_checked,
    stack_env,
    start,
    stop,
    wait_for_http,
    wait_for_log,
    write_section,
)

TARGET_TASKS_PER_S = 100.0
TARGET_RATIO = 0.8
TARGET_RSS = 1024 * 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--latency-ms", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2, help="AICP_Q_WORKERS")
    parser.add_argument("--concurrency", type=int, default=64, help="AICP_LLM_CONCURRENCY (per worker)")
    parser.add_argument("--drainers", type=int, default=None, help="AICP_DRAINERS (default: workers)")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="simulator 429/500/503 rate")
    parser.add_argument("--labeling", action="store_true", help="labeling tasks instead of free-form")
    parser.add_argument("--timeout-s", type=float, default=600.0)
    parser.add_argument("--backlog", action="store_true", help="submit everything before the cluster starts")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/BENCHMARKS.md alone")
    args = parser.parse_args()
    drainers = args.drainers or args.workers

    with tempfile.TemporaryDirectory(prefix="aicp-bench-throughput-") as tmp:
        data = Path(tmp)
        sim_port = free_port()
        env = stack_env(
            data,
            OPENAI_BASE_URL=f"http://127.0.0.1:{sim_port}/v1",
            OPENAI_API_KEY="simulator",
            AICP_LLM_SIMULATED="1",
            AICP_Q_WORKERS=str(args.workers),
            AICP_LLM_CONCURRENCY=str(args.concurrency),
            AICP_DRAINERS=str(drainers),
            AICP_SIGNUP_CREDIT="0",
            # Training is not what this measures; it would compete for the same two cores.
            DUKE_TRAIN_EVERY=str(10**9),
        )
        run_checked([PYTHON, MANAGE, "migrate", "--no-input"], env, data / "migrate.log")
        apply_env(env)
        import django

        django.setup()
        from decimal import Decimal

        from tasks.services import buyer_credit, buyer_register

        buyer = buyer_register(username="bench-buyer", password="bench-pass-1234567")
        buyer_credit(user_id=buyer.pk, amount=Decimal("1000000"), memo="bench")

        sampler = RssSampler()
        simulator_cmd = [PYTHON, "-m", "agents.simulator", "--port", str(sim_port)]
        simulator_cmd += ["--latency-ms", str(args.latency_ms), "--no-zero-shot"]
        simulator_cmd += ["--fault-rate", str(args.fault_rate)]
        simulator = start(simulator_cmd, env, data / "simulator.log")
        cluster = None
        try:
            wait_for_http(f"http://127.0.0.1:{sim_port}/health")
            backlog = submit(args, buyer) if args.backlog else None
            cluster = start([PYTHON, MANAGE, "qcluster"], env, data / "qcluster.log")
            sampler.watch("simulator", simulator.pid)
            sampler.watch("cluster", cluster.pid)
            sampler.start()
            # Wait for the workers, so the first tasks don't measure the cluster's start-up.
            env_log = data / "qcluster.log"
            wait_for_log(env_log, r"Q Cluster .* running", timeout_s=60)
            result = measure(args, backlog or submit(args, buyer))
            sampler.sample()
        finally:
            sampler.stop() if sampler._thread.is_alive() else None
            if cluster is not None:
                stop(cluster)
            stop(simulator)
        log_tail = (data / "qcluster.log").read_text(errors="replace")[-3000:]

    limit = min(drainers, args.workers) * args.concurrency / (args.latency_ms / 1000)
    ratio = result["tasks_per_s"] / limit
    ok = (
        result["tasks_per_s"] >= TARGET_TASKS_PER_S
        and ratio >= TARGET_RATIO
        and result["lost"] == 0
        and result["duplicated"] == 0
        and sampler.total_peak < TARGET_RSS
    )
    kind = "labeling" if args.labeling else "free-form"
    lines = [
        f"Command: `{command_line()}`",
        "",
        f"Machine: {machine()}. SQLite (WAL) on a fresh file; ORM broker; {args.workers} queue workers, "
        f"{drainers} drainer(s) × AICP_LLM_CONCURRENCY={args.concurrency}; simulator at "
        f"{args.latency_ms} ms, fault rate {args.fault_rate}; {args.tasks} {kind} tasks submitted one "
        "transaction each through `task_submit` by the benchmark process.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| completed tasks/s (first submission → last completion) | **{result['tasks_per_s']:.1f}** |",
        f"| completed tasks/s, steady state (10th → 90th percentile completion) | {result['steady_per_s']:.1f} |",
        f"| limit: in-flight bound ÷ latency ({min(drainers, args.workers) * args.concurrency} ÷ "
        f"{args.latency_ms / 1000:g} s) | {limit:.0f} |",
        f"| ratio to the limit | **{ratio:.2f}** |",
        f"| submission rate (tasks/s) | {result['submit_per_s']:.1f} |",
        f"| submission → completion p50 / p99 | {result['p50_ms']:.0f} ms / {result['p99_ms']:.0f} ms |",
        f"| completed / failed | {result['completed']} / {result['failed']} |",
        f"| lost (not final after {args.timeout_s:.0f} s) / duplicated | {result['lost']} / {result['duplicated']} |",
        f"| claims per task (1.00 = each claimed once) | {result['claims_per_task']:.2f} |",
        f"| peak RSS, whole stack (cluster + simulator) | **{mib(sampler.total_peak)}** "
        f"(cluster {mib(sampler.peaks.get('cluster', 0))}, simulator {mib(sampler.peaks.get('simulator', 0))}) |",
        "",
        f"Targets (≥ {TARGET_TASKS_PER_S:.0f} tasks/s, ≥ {TARGET_RATIO} of the limit, 0 lost or duplicated, "
        f"< 1 GiB): **{'met' if ok else 'NOT met'}**.",
    ]
    body = "\n".join(lines)
    print(body)
    if result["lost"]:
        print("\nqcluster log tail:\n" + log_tail, file=sys.stderr)
    if not args.no_write:
        write_section("Throughput", body)
    return 0 if ok else 1


def submit(args: argparse.Namespace, buyer: object) -> tuple[list, float]:
    from tasks.services import TaskRequest, task_submit

    labels = ("positive", "negative", "neutral") if args.labeling else None
    started = time.monotonic()
    ids = []
    for index in range(args.tasks):
        request = TaskRequest(
            description=f"Benchmark task {index}: summarise the quarterly report in one sentence.",
            complexity=1 + index % 5,
            labels=labels,
        )
        ids.append(task_submit(buyer=buyer, request=request).id)
    return ids, time.monotonic() - started


def measure(args: argparse.Namespace, submitted: tuple[list, float]) -> dict:
    from django.db.models import Count, Q, Sum

    from tasks.models import LedgerEntry, Task

    ids, submit_s = submitted
    deadline = time.monotonic() + args.timeout_s
    final = Task.objects.filter(pk__in=ids, status__in=Task.FINAL_STATUSES)
    while time.monotonic() < deadline and final.count() < len(ids):
        time.sleep(0.25)

    rows = list(
        Task.objects.filter(pk__in=ids).values_list("status", "created_at", "finished_at", "started_at")
    )
    done = [(created, finished) for status, created, finished, _ in rows if finished is not None]
    first_created = min(created for _, created, _, _ in rows)
    if args.backlog:
        first_created = min(started for _, _, _, started in rows if started is not None)
    run_ms = [(f - st).total_seconds() * 1000 for _, _, f, st in rows if f is not None and st is not None]
    print(f"claim->completion p50 {percentile(run_ms, 50):.0f} ms p99 {percentile(run_ms, 99):.0f} ms")
    finish_times = sorted(finished for _, finished in done)
    latencies = [(finished - created).total_seconds() * 1000 for created, finished in done]
    span = (finish_times[-1] - first_created).total_seconds() if finish_times else float("inf")
    lo, hi = finish_times[len(finish_times) // 10], finish_times[(len(finish_times) * 9) // 10]
    steady = (len(finish_times) * 8 // 10) / max(1e-9, (hi - lo).total_seconds())

    # A task settled twice would have two payouts, or a payout and a release: the ledger says.
    settlements = (
        LedgerEntry.objects.filter(task_id__in=ids, kind__in=["payout", "release"], amount__lt=0)
        .values("task_id")
        .annotate(n=Count("id"))
    )
    settled_twice = sum(1 for row in settlements if row["n"] > 1)
    statuses = Task.objects.filter(pk__in=ids).aggregate(
        completed=Count("id", filter=Q(status=Task.Status.COMPLETED)),
        failed=Count("id", filter=Q(status=Task.Status.FAILED)),
        claims=Sum("attempts"),
    )
    # Without faults every task is claimed exactly once; more claims mean a task ran twice.
    extra_claims = 0 if args.fault_rate else max(0, (statuses["claims"] or 0) - len(ids))
    return {
        "tasks_per_s": len(done) / span if done else 0.0,
        "steady_per_s": steady,
        "submit_per_s": len(ids) / submit_s,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "completed": statuses["completed"],
        "failed": statuses["failed"],
        "lost": len(ids) - len(done),
        "duplicated": settled_twice + extra_claims,
        "claims_per_task": (statuses["claims"] or 0) / len(ids),
    }


if __name__ == "__main__":
    sys.exit(main())
