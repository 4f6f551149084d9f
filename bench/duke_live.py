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
import contextlib
import http.client
import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (  # noqa: E402
    MANAGE,
    PYTHON,
    REPO,
    command_line,
    free_port,
    load_average,
    machine,
    percentile,
    stack_env,
    start,
    wait_for_http,
    write_section,
)

DEFAULT_DATASET = REPO.parent / "shared" / "datasets" / "reuters-r8.train.jsonl"
LLM_AGENT = "openai-gpt-4o-mini"
OPERATOR = ("bench-operator", "bench-operator-pass-9271")
BUYER = ("bench-buyer", "bench-buyer-pass-9271")
MAX_DESCRIPTION = 8000
TARGET_RATIO = 0.8  # learning-on throughput ÷ learning-off throughput
TARGET_P99_MS = 50.0  # Duke-served POST /tasks
SECTION = "Duke learning live (bench/duke_live.py)"


# --- the dataset ----------------------------------------------------------------------------------------


def read_dataset(path: Path) -> list[tuple[str, str]]:
    rows = []
    seen = set()
    with path.open() as handle:
        for line in handle:
            if not line.strip():
                continue
            row = json.loads(line)
            text = str(row["text"]).strip()[:MAX_DESCRIPTION]
            if text and text not in seen:  # a repeated text is a repeat answer, never a new sample
                seen.add(text)
                rows.append((text, str(row["label"])))
    return rows


def task_type_of(path: Path) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in path.name.split(".")[0].lower()).strip("-")
    return slug[:64] or "labels"


# --- HTTP -----------------------------------------------------------------------------------------------


class Api:
    """One keep-alive connection (one client); not shared between threads."""

    def __init__(self, port: int, token: str = "") -> None:
        self.port = port
        self.token = token
        self._conn: http.client.HTTPConnection | None = None

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict, float]:
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        for attempt in range(3):
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            started = time.perf_counter()
            try:
                self._conn.request(method, path, body=payload, headers=headers)
                response = self._conn.getresponse()
                raw = response.read()
            except (OSError, http.client.HTTPException):
                self._conn.close()
                self._conn = None
                if attempt == 2:
                    raise
                continue
            elapsed_ms = (time.perf_counter() - started) * 1000
            try:
                data = json.loads(raw or b"{}")
            except ValueError:
                data = {"raw": raw[:200].decode(errors="replace")}
            return response.status, data, elapsed_ms
        raise AssertionError("unreachable")


def token_for(port: int, username: str, password: str) -> str:
    status, body, _ = Api(port).call("POST", "/auth/token", {"username": username, "password": password})
    if status != 200:
        raise RuntimeError(f"no token for {username}: {status} {body}")
    return body["access"]


# --- the stack ------------------------------------------------------------------------------------------


class Stack:
    """``manage.py run_system`` on its own data folder and ports; stopped (and all its children) on exit."""

    def __init__(
        self,
        root: Path,
        name: str,
        *,
        learning: bool,
        args: argparse.Namespace,
        teacher: Path,
        learning_cluster: bool = True,
        learning_workers: bool = True,
    ):
        self.data = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))  # a repeated run gets its own
        self.log = self.data / "run_system.log"
        self.port = free_port()
        overrides = {
            "AICP_SIGNUP_CREDIT": "1000000",
            "AICP_THROTTLE_SUBMIT": "10000000/minute",
            "AICP_THROTTLE_REGISTER": "1000/minute",
            "AICP_JWT_ACCESS_MINUTES": "600",
            "DJANGO_SUPERUSER_USERNAME": OPERATOR[0],
            "DJANGO_SUPERUSER_PASSWORD": OPERATOR[1],
            "DJANGO_SUPERUSER_EMAIL": "operator@example.invalid",
        }
        if args.train_every:
            overrides["DUKE_TRAIN_EVERY"] = str(args.train_every)
        if not learning:
            overrides.update(DUKE_TRAIN_EVERY=str(10**9), DUKE_ENCODE_ON_RECORD="0")
        if not learning_cluster:
            overrides["DUKE_LEARNING_CLUSTER"] = ""  # training and encoding beside the drainers, as before
        self.env = stack_env(self.data, **overrides)
        self.command = [
            PYTHON,
            MANAGE,
            "run_system",
            "--port",
            str(self.port),
            "--simulator-port",
            str(free_port()),
            "--simulator-dataset",
            str(teacher),
            "--simulator-latency-ms",
            str(args.latency_ms),
        ]
        if not learning_workers:
            self.command.append("--no-learning-workers")
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Stack:
        self.process = start(self.command, self.env, self.log)
        try:
            wait_for_http(f"http://127.0.0.1:{self.port}/health", timeout_s=240, accept=(200, 503))
        except RuntimeError as exc:
            self.__exit__()
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the stack did not start:\n{tail}") from exc
        return self

    def __exit__(self, *exc: object) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)  # run_system stops every child it started
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        # Anything of the stack's session still alive (a grandchild run_system could not reach) goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until the kernel has reaped the whole group
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)

    def buyer_api(self) -> Api:
        status, body, _ = Api(self.port).call(
            "POST", "/auth/register", {"username": BUYER[0], "password": BUYER[1]}
        )
        if status not in (201, 400, 409):  # already registered on this stack
            raise RuntimeError(f"register: {status} {body}")
        return Api(self.port, token_for(self.port, *BUYER))

    def operator_api(self) -> Api:
        return Api(self.port, token_for(self.port, *OPERATOR))

    def log_lines(self, needle: str) -> list[str]:
        return [line for line in self.log.read_text(errors="replace").splitlines() if needle in line]


# --- feeding tasks ---------------------------------------------------------------------------------------


@dataclass
class Outcome:
    index: int
    gold: str
    status: int
    body: dict
    ms: float
    at: float  # monotonic, when the answer came back

    @property
    def by_duke(self) -> bool:
        return self.status == 201 and self.body.get("executed_by") == "duke"


@dataclass
class Feed:
    """Outcomes of one phase, appended by the submitting threads."""

    outcomes: list[Outcome] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: Outcome) -> None:
        with self.lock:
            self.outcomes.append(outcome)

    def snapshot(self) -> list[Outcome]:
        with self.lock:
            return list(self.outcomes)


def feed(
    make_api: Callable[[], Api],
    rows: Sequence[tuple[str, str]],
    *,
    rate: float,
    clients: int,
    agent: str,
    labels: Sequence[str],
    task_type: str,
    into: Feed,
) -> None:
    """POSTs each row at its arrival time (row i at i/rate s; rate 0: as fast as the clients go)."""
    pending: queue.Queue[tuple[int, tuple[str, str]]] = queue.Queue()
    for item in enumerate(rows):
        pending.put(item)
    began = time.monotonic()

    def client() -> None:
        api = make_api()
        while True:
            try:
                index, (text, gold) = pending.get_nowait()
            except queue.Empty:
                return
            if rate > 0:
                delay = began + index / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            body = {
                "description": text,
                "complexity": 1,
                "labels": list(labels),
                "task_type": task_type,
                "agent": agent,
            }
            status, answer, ms = api.call("POST", "/tasks", body)
            into.add(Outcome(index, gold, status, answer, ms, time.monotonic()))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(max(1, clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def count_tasks(api: Api, status: str) -> int:
    code, body, _ = api.call("GET", f"/tasks?status={status}")
    return int(body.get("count", 0)) if code == 200 else 0


def wait_final(api: Api, total: int, timeout_s: float) -> tuple[int, int, float]:
    """(completed, failed, monotonic time when all were final or the deadline passed)."""
    deadline = time.monotonic() + timeout_s
    while True:
        completed, failed = count_tasks(api, "completed"), count_tasks(api, "failed")
        now = time.monotonic()
        if completed + failed >= total or now >= deadline:
            return completed, failed, now
        time.sleep(0.2)


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


LEARNING_OFF = Variant("learning-off", "learning off", learning=False)
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
        "Duke's learning cluster at nice 19, simulator).",
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
        off = runs.get(LEARNING_OFF.name)
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
            variants.append(LEARNING_OFF)
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
    if not args.no_write:
        title = f"{SECTION}: {args.dataset.name}" + ("" if live else ", throughput")
        write_section(title, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
