"""Live benchmarks' pieces: a labeled dataset, a keep-alive API client, a run_system stack, feeding tasks."""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import queue
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench._common import MANAGE, PYTHON, free_port, stack_env, start, wait_for_http

LLM_AGENT = "openai-gpt-4o-mini"
OPERATOR = ("bench-operator", "bench-operator-pass-9271")
BUYER = ("bench-buyer", "bench-buyer-pass-9271")
MAX_DESCRIPTION = 8000


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
        self.process = run_system_start(
            self.command, self.env, self.log, port=self.port, timeout_s=240, accept=(200, 503)
        )
        return self

    def __exit__(self, *exc: object) -> None:
        run_system_stop(self.process)

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


def run_system_start(
    command: list[str],
    env: dict[str, str],
    log: Path,
    *,
    port: int,
    timeout_s: float,
    accept: tuple[int, ...],
) -> subprocess.Popen:
    """Starts run_system (its own session) and waits for /health; on failure stops it and raises with the
    log's tail."""
    process = start(command, env, log)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", timeout_s=timeout_s, accept=accept)
    except RuntimeError as exc:
        run_system_stop(process)
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the stack did not start:\n{tail}") from exc
    return process


def run_system_stop(process: subprocess.Popen | None) -> None:
    """SIGTERM (run_system stops every child it started), then whatever of its session is left."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
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
