"""Duke learning live: the real stack, a labeled dataset fed through the HTTP API as a buyer would.

Each stack is ``manage.py run_system`` on a fresh data folder in production mode (DJANGO_DEBUG=0): the
LLM simulator answering every text from the labeled dataset (a perfect teacher, ``--latency-ms``), the
main django-q2 cluster, Duke's learning cluster (low CPU priority) and gunicorn (which preloads Duke's
production model in the background). Phases:

1. learning: ``--tasks`` texts of ``--dataset`` POSTed to /tasks at ``--rate`` per second for the LLM
   agent (Duke's own answers are not samples); then up to ``--settle-s`` for the last watermark's training.
2. serving: ``--new-tasks`` texts (of ``--serve-dataset``, e.g. a later period: the shifted split; else the
   rest of ``--dataset``) POSTed with ``agent: "auto"`` at ``--rate``: Duke answers what its certified
   threshold covers, in the request.
   Every ``--sample-s`` through both phases a row records samples, versions, the production version and its
   threshold, Duke's share, its answers' agreement with the gold labels and the price per task.
3. latency: ``--latency-clients`` keep-alive clients POST texts Duke served, back to back, for
   ``--latency-requests`` requests; half way an operator promotes another version, so the requests right
   after a promotion are measured too (none may load a model: they go to the LLM until it is loaded).
4. throughput (``--learning both``): the same labeling workload (``--throughput-tasks`` tasks, as fast as
   ``--throughput-clients`` clients submit) on a fresh stack with learning off (no training, no encoding)
   and on one with learning on, side by side: tasks completed per second, first POST → last completion.

    .venv/bin/python bench/duke_live.py --tasks 1000 --new-tasks 400 --rate 5 \\
        --serve-dataset ../shared/datasets/reuters-r8.test.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import REPO, load_average, percentile, write_section  # noqa: E402
from bench._duke_live_report import LEARNING_OFF, combined, report, verdicts  # noqa: E402
from bench._live_stack import (  # noqa: E402
    LLM_AGENT,
    Api,
    Feed,
    Outcome,
    Stack,
    count_tasks,
    feed,
    read_dataset,
    task_type_of,
    wait_final,
)

DEFAULT_DATASET = REPO.parent / "shared" / "datasets" / "reuters-r8.train.jsonl"
SECTION = "Duke learning live (bench/duke_live.py)"


# --- the time series ------------------------------------------------------------------------------------


def _threshold(status: dict, task_type: str) -> float | None:
    entry = (status.get("routing") or {}).get("task_types", {}).get(task_type) or {}
    return entry.get("threshold")


class Recorder:
    """Every `interval_s`: what a buyer and an operator see of Duke, and what the bench knows of answers."""

    def __init__(self, stack: Stack, task_type: str, interval_s: float, began: float) -> None:
        self.api = stack.operator_api()
        self.buyer = stack.buyer_api()
        self.task_type = task_type
        self.interval_s = interval_s
        self.began = began
        self.phase = "learning"
        self.feeds: dict[str, Feed] = {}
        self.rows: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Recorder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        code, status, _ = self.api.call("GET", "/model/status")
        if code != 200:
            return
        versions = status.get("versions") or []
        outcomes = [o for feed_ in self.feeds.values() for o in feed_.snapshot()]
        serving = self.feeds.get("serving", Feed()).snapshot()
        served = [o for o in serving if o.by_duke]
        prices = [Decimal(str(o.body["price"])) for o in outcomes if o.status == 201 and "price" in o.body]
        self.rows.append(
            {
                "t": time.monotonic() - self.began,
                "phase": self.phase,
                "submitted": len(outcomes),
                "completed": count_tasks(self.buyer, "completed"),
                "samples": status.get("training_samples"),
                "versions": len(versions),
                "training": (status.get("training_in_progress") or {}).get("version"),
                "production": status.get("production_version"),
                "threshold": _threshold(status, self.task_type),
                "duke_share": len(served) / len(serving) if serving else None,
                "agreement": sum(o.body.get("result") == o.gold for o in served) / len(served)
                if served
                else None,
                "price": sum(prices, Decimal(0)) / len(prices) if prices else None,
            }
        )


# --- phases ---------------------------------------------------------------------------------------------


def learning_run(args: argparse.Namespace, root: Path, teacher: Path, data: dict) -> dict:
    """Phases 1–3 on one stack with learning on."""
    learn_rows, serve_rows, labels, task_type = (
        data["learn"],
        data["serve"],
        data["labels"],
        data["task_type"],
    )
    with Stack(root, "learning", learning=True, args=args, teacher=teacher) as stack:
        buyer = stack.buyer_api()
        began = time.monotonic()
        recorder = Recorder(stack, task_type, args.sample_s, began)
        learning, serving = Feed(), Feed()
        recorder.feeds = {"learning": learning}
        recorder.start()
        feed(
            lambda: Api(stack.port, buyer.token),
            learn_rows,
            rate=args.rate,
            clients=args.clients,
            agent=LLM_AGENT,
            labels=labels,
            task_type=task_type,
            into=learning,
        )
        wait_final(buyer, len(learn_rows), args.timeout_s)
        learned_at = time.monotonic()
        recorder.phase = "settling"
        settled = _settle(stack, args.settle_s)
        versions_after_settle = len(_versions(stack))
        # Issue 18 item 1 counts the versions that exist 60 s after the last learning task completed.
        while time.monotonic() < learned_at + 60:
            time.sleep(0.2)
        versions_at_60 = _versions(stack)
        recorder.phase = "serving"
        recorder.feeds = {"learning": learning, "serving": serving}
        feed(
            lambda: Api(stack.port, buyer.token),
            serve_rows,
            rate=args.rate,
            clients=args.clients,
            agent="auto",
            labels=labels,
            task_type=task_type,
            into=serving,
        )
        wait_final(buyer, len(learn_rows) + len(serve_rows), args.timeout_s)
        recorder.stop()
        latency = latency_run(args, stack, serving.snapshot(), data) if args.latency_requests else None
        versions = _versions(stack)
        preload_lines = stack.log_lines("loaded for serving in the background")
        request_loads = [line for line in stack.log_lines("loaded for serving") if "background" not in line]
        nice_lines = stack.log_lines("Duke learning worker")
        errors = stack.log_lines("Traceback")
        if args.keep_logs:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            shutil.copy(stack.log, args.keep_logs / "learning-run_system.log")
    wall = datetime.now().astimezone()
    return {
        "rows": recorder.rows,
        "learning": learning.snapshot(),
        "serving": serving.snapshot(),
        "learned_s": learned_at - began,
        "settled": settled,
        "versions_after_settle": versions_after_settle,
        "versions_at_60": len(versions_at_60),
        "finished_at_60": sum(1 for v in versions_at_60 if v.get("finished_at")),
        "versions": versions,
        "latency": latency,
        "preload_lines": preload_lines,
        "request_loads": request_loads,
        "nice_lines": nice_lines,
        "errors": errors,
        "began_wall": wall.timestamp() - (time.monotonic() - began),
    }


def _versions(stack: Stack) -> list[dict]:
    api = stack.operator_api()
    versions, page = [], 1
    while True:
        code, body, _ = api.call("GET", f"/model/versions?page={page}")
        if code != 200:
            return versions
        versions += body.get("results", [])
        if not body.get("next"):
            return versions
        page += 1


def _settle(stack: Stack, timeout_s: float) -> bool:
    """Waits until nothing trains and no watermark is owed a training (or the timeout): learning kept up."""
    api = stack.operator_api()
    deadline = time.monotonic() + timeout_s
    quiet_since = None
    while time.monotonic() < deadline:
        _, status, _ = api.call("GET", "/model/status")
        busy = status.get("training_in_progress") is not None
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= 5:  # no training started within 5 s: nothing owed
            return True
        time.sleep(0.5)
    return False


def latency_run(args: argparse.Namespace, stack: Stack, served: list[Outcome], data: dict) -> dict | None:
    """Closed-loop POST /tasks on texts Duke covers; an operator promotes another version half way."""
    texts = [(data["serve"][o.index][0], o.gold) for o in served if o.by_duke]
    if not texts:
        return None
    operator = stack.operator_api()
    production = _production(operator)
    others = [
        v["version"]
        for v in _versions(stack)
        if v["version"] != production and v["status"] in ("candidate", "retired") and v.get("artifact_sha256")
    ]
    buyer = stack.buyer_api()
    rng = random.Random(0)
    rows = [rng.choice(texts) for _ in range(args.latency_requests)]
    outcomes = Feed()
    promoted_at: list[float] = []

    def promote_half_way() -> None:
        while len(outcomes.snapshot()) < len(rows) // 2:
            time.sleep(0.01)
        if others:
            code, _, _ = operator.call("POST", f"/model/versions/{others[0]}/promote")
            if code == 200:
                promoted_at.append(time.monotonic())

    promoter = threading.Thread(target=promote_half_way, daemon=True)
    promoter.start()
    feed(
        lambda: Api(stack.port, buyer.token),
        rows,
        rate=0,
        clients=args.latency_clients,
        agent="auto",
        labels=data["labels"],
        task_type=data["task_type"],
        into=outcomes,
    )
    promoter.join()
    if promoted_at and production is not None:
        operator.call("POST", f"/model/versions/{production}/promote")  # as it was
    all_ms = [o.ms for o in outcomes.snapshot() if o.status == 201]
    duke_ms = [o.ms for o in outcomes.snapshot() if o.by_duke]
    after = (
        sorted((o for o in outcomes.snapshot() if o.at >= promoted_at[0]), key=lambda o: o.at)[:50]
        if promoted_at
        else []
    )
    return {
        "requests": len(rows),
        "errors": sum(o.status != 201 for o in outcomes.snapshot()),
        "all_p50": percentile(all_ms, 50),
        "all_p99": percentile(all_ms, 99),
        "duke_n": len(duke_ms),
        "duke_p50": percentile(duke_ms, 50),
        "duke_p99": percentile(duke_ms, 99),
        "max": max(all_ms, default=float("nan")),
        "promoted": others[0] if promoted_at else None,
        "after_n": len(after),
        "after_duke": sum(o.by_duke for o in after),
        "after_p99": percentile([o.ms for o in after], 99),
        "after_max": max((o.ms for o in after), default=float("nan")),
    }


def _production(api: Api) -> int | None:
    _, status, _ = api.call("GET", "/model/status")
    return status.get("production_version")


@dataclass(frozen=True)
class Variant:
    name: str
    title: str
    learning: bool
    learning_cluster: bool = True
    learning_workers: bool = (
        True  # False: learning jobs are queued, nothing runs them (the bookkeeping alone)
    )


LEARNING_OFF_VARIANT = Variant(LEARNING_OFF, "learning off", learning=False)
LEARNING_ON = Variant("learning-on", "learning on", learning=True)
LEARNING_QUEUED_ONLY = Variant(
    "learning-queued-only", "learning jobs queued, not run", learning=True, learning_workers=False
)
LEARNING_SHARED = Variant(
    "learning-on-main-cluster", "learning on, in the main cluster", learning=True, learning_cluster=False
)


def throughput_run(args: argparse.Namespace, root: Path, teacher: Path, data: dict, variant: Variant) -> dict:
    """The labeling workload as fast as the clients submit it; first POST → last task final."""
    rows = data["throughput"]
    name = f"throughput-{variant.name}"
    with Stack(
        root,
        name,
        learning=variant.learning,
        args=args,
        teacher=teacher,
        learning_cluster=variant.learning_cluster,
        learning_workers=variant.learning_workers,
    ) as stack:
        buyer = stack.buyer_api()
        outcomes = Feed()
        began = time.monotonic()
        feed(
            lambda: Api(stack.port, buyer.token),
            rows,
            rate=0,
            clients=args.throughput_clients,
            agent=LLM_AGENT,
            labels=data["labels"],
            task_type=data["task_type"],
            into=outcomes,
        )
        submitted_s = time.monotonic() - began
        completed, failed, ended = wait_final(buyer, len(rows), args.timeout_s)
        ended_wall = time.time()
        versions = _versions(stack)
        if args.keep_logs:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            shutil.copy(stack.log, args.keep_logs / f"{stack.data.name}-run_system.log")
    elapsed = ended - began
    return {
        "tasks": len(rows),
        "completed": completed,
        "failed": failed,
        "rejected": sum(o.status != 201 for o in outcomes.snapshot()),
        "submitted_s": submitted_s,
        "elapsed_s": elapsed,
        "per_s": completed / elapsed if elapsed > 0 else float("nan"),
        "versions": len(versions),
        "trained_meanwhile": sum(
            1
            for v in versions
            if v.get("finished_at")
            and datetime.fromisoformat(v["finished_at"].replace("Z", "+00:00")).timestamp() <= ended_wall
        ),
    }


# --- main -----------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="JSONL {text, label}")
    parser.add_argument(
        "--serve-dataset", type=Path, default=None, help="served texts (a shifted split); default: the rest"
    )
    parser.add_argument("--tasks", type=int, default=1000, help="learning phase (LLM-labeled)")
    parser.add_argument("--new-tasks", type=int, default=400, help="serving phase (`auto`)")
    parser.add_argument("--rate", type=float, default=5.0, help="arrivals per second in both phases")
    parser.add_argument("--clients", type=int, default=8, help="submitting clients in both phases")
    parser.add_argument("--latency-ms", type=int, default=500, help="the simulated LLM's latency")
    parser.add_argument("--learning", choices=("on", "off", "both"), default="both")
    parser.add_argument("--throughput-tasks", type=int, default=600, help="per stack; 0 skips the comparison")
    parser.add_argument("--throughput-clients", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=2, help="throughput runs per variant, interleaved")
    parser.add_argument(
        "--also-queued-only",
        action="store_true",
        help="another throughput stack: learning on but no learning worker runs (its bookkeeping alone)",
    )
    parser.add_argument(
        "--also-main-cluster",
        action="store_true",
        help="a third throughput stack: learning on, in the main cluster (no low-priority learning cluster)",
    )
    parser.add_argument("--latency-requests", type=int, default=400, help="0 skips the latency phase")
    parser.add_argument("--latency-clients", type=int, default=8)
    parser.add_argument("--train-every", type=int, default=0, help="DUKE_TRAIN_EVERY (0: the default)")
    parser.add_argument("--settle-s", type=float, default=60.0, help="wait for training after learning")
    parser.add_argument("--sample-s", type=float, default=5.0, help="time series interval")
    parser.add_argument("--max-rows", type=int, default=30, help="time table rows in the report")
    parser.add_argument("--timeout-s", type=float, default=900.0, help="per phase, for tasks to finish")
    parser.add_argument("--seed", type=int, default=0, help="shuffles the dataset")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/BENCHMARKS.md alone")
    parser.add_argument("--keep-logs", type=Path, default=None, help="copy the stacks' logs to this folder")
    args = parser.parse_args()

    for path in (args.dataset, args.serve_dataset):
        if path is not None and not path.is_file():
            parser.error(
                f"dataset {path} not found (JSONL of {{text, label}}; see ../shared/datasets/README.md)"
            )
    rows = read_dataset(args.dataset)
    random.Random(args.seed).shuffle(rows)
    if args.serve_dataset:
        serve = read_dataset(args.serve_dataset)
        random.Random(args.seed + 1).shuffle(serve)
        learned = {text for text, _ in rows[: args.tasks]}
        serve = [row for row in serve if row[0] not in learned]
    else:
        serve = rows[args.tasks :]
    data = {
        "learn": rows[: args.tasks],
        "serve": serve[: args.new_tasks],
        "serve_name": args.serve_dataset.name if args.serve_dataset else f"{args.dataset.name} (held out)",
        "throughput": rows[: args.throughput_tasks],
        "labels": sorted({label for _, label in rows} | {label for _, label in serve}),
        "task_type": task_type_of(args.dataset),
        "load_before": load_average(),
    }
    if len(data["labels"]) < 2:
        parser.error("the dataset needs at least 2 labels")

    live = None
    runs: dict[str, tuple[str, dict]] = {}
    with tempfile.TemporaryDirectory(prefix="aicp-bench-duke-live-", ignore_cleanup_errors=True) as tmp:
        root = Path(tmp)
        teacher = root / "teacher.jsonl"  # the simulator knows every text the bench will send
        with teacher.open("w") as handle:
            for text, label in {*rows, *serve}:
                handle.write(json.dumps({"text": text, "label": label}) + "\n")
        if args.learning in ("on", "both") and (args.tasks or args.new_tasks):
            live = learning_run(args, root, teacher, data)
        variants = []
        if args.learning in ("off", "both"):
            variants.append(LEARNING_OFF_VARIANT)
        if args.learning in ("on", "both"):
            variants.append(LEARNING_ON)
            if args.also_main_cluster:
                variants.append(LEARNING_SHARED)
            if args.also_queued_only:
                variants.append(LEARNING_QUEUED_ONLY)
        # Interleaved (off, on, off, on, …): the other load on the machine drifts over minutes, and a
        # ratio of two runs far apart in time measures that drift as much as learning.
        results: dict[str, list[dict]] = {}
        for _ in range(args.repeat if args.throughput_tasks else 0):
            for variant in variants:
                results.setdefault(variant.name, []).append(
                    throughput_run(args, root, teacher, data, variant)
                )
        runs = {v.name: (v.title, combined(results[v.name])) for v in variants if v.name in results}

    body = report(args, data, live, runs)
    print(body)
    for line in verdicts(args, live, runs):
        print(line)
    if not args.no_write:
        title = f"{SECTION}: {args.dataset.name}" + ("" if live else ", throughput")
        write_section(title, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
