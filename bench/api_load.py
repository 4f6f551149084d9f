"""API load: POST /tasks from concurrent clients against gunicorn, and a bare Django insert for reference.

Starts gunicorn exactly as ``manage.py run_system`` does (``aicp.wsgi:application``, 2 workers × 8
threads) on a fresh SQLite file in a temporary directory, in production mode (DJANGO_DEBUG=0), with
benchmark-only settings (bench/_site.py, bench/_urls.py) that add two reference views (see there).
Then, in the same run, ``--clients`` keep-alive
connections send requests back to back for ``--seconds`` each: first to the bare view (what a Django
write costs on this machine), then to ``POST /bench/drf-insert`` (the least a DRF endpoint with the
API's authentication does: the most the ratio could be on this stack), then to ``POST /tasks`` (each
client its own buyer and JWT), then to POST /tasks at half that rate arriving at a fixed pace, and last
to POST /tasks with each web worker on its own copy of the database (bench/_own_database_per_worker.py:
not deployable, it bounds what keeping the workers' writes apart, e.g. one writer process, could gain).
The queue cluster is not started: this measures the web path; submissions only enqueue a drainer job
while a drain slot is free.

    .venv/bin/python bench/api_load.py --clients 50 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
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
    write_section,
)
from bench._own_database_per_worker import copies as own_database_copies  # noqa: E402
from core.perf.web import gunicorn_command  # noqa: E402

TARGET_RATIO = 0.6
TARGET_P99_MS = 100.0
OWN_DATABASE_CONFIG = Path(__file__).resolve().parent / "_own_database_per_worker.py"  # gunicorn --config


@dataclass
class Phase:
    name: str
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    # Each client's answered requests: a p99 over requests hides a client kept waiting the whole phase.
    answered_per_client: list[int] = field(default_factory=list)
    seconds: float = 0.0
    server_cpu_s: float = 0.0  # CPU the web server's processes used during the phase

    @property
    def cpu_ms(self) -> float:
        """Server CPU per answered request."""
        answered = sum(self.statuses.values())
        return self.server_cpu_s * 1000 / answered if answered else float("nan")

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.statuses.items() if not 200 <= status < 300) + len(self.errors)

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


class _Stale(ConnectionError):
    """The server had closed this idle keep-alive connection before reading our request."""


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    status_line = await reader.readline()
    if not status_line:
        raise _Stale("connection closed before any response")
    status = int(status_line.split()[1])
    length, close = 0, False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value.strip().lower() == "close":
            close = True
    if length:
        await reader.readexactly(length)
    return status, close


class _Connection:
    """One keep-alive client connection. A request that finds it closed by the server while idle (gunicorn
    drops keep-alive connections idle for 2 s) is sent again on a new one, as HTTP clients do: the server
    never read it. Any other failure is the caller's error."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def exchange(self, request: bytes) -> int:
        for attempt in range(2):
            reused = self.writer is not None
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            try:
                self.writer.write(request)
                status, close = await _read_response(self.reader)
            except (_Stale, ConnectionResetError, BrokenPipeError):
                self.close()
                if reused and attempt == 0:
                    continue
                raise
            except BaseException:
                self.close()
                raise
            if close:
                self.close()
            return status
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _client(port: int, request: bytes, deadline: float, phase: Phase | None) -> None:
    """One keep-alive connection sending ``request`` back to back until ``deadline``."""
    connection = _Connection(port)
    answered = 0
    while time.monotonic() < deadline:
        started = time.perf_counter()
        try:
            status = await connection.exchange(request)
        except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
            if phase is not None:
                phase.errors.append(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(0.01)
            continue
        if phase is not None:
            phase.latencies_ms.append((time.perf_counter() - started) * 1000)
            phase.statuses[status] = phase.statuses.get(status, 0) + 1
            answered += 1
    connection.close()
    if phase is not None:
        phase.answered_per_client.append(answered)


@dataclass(frozen=True)
class Call:
    """One client's request: sent over HTTP by the load phases, handed to Django by `in_process`."""

    path: str
    body: dict
    token: str | None = None

    @property
    def payload(self) -> bytes:
        return json.dumps(self.body).encode()

    def http(self) -> bytes:
        head = [f"POST {self.path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
        if self.token:
            head.append(f"Authorization: Bearer {self.token}")
        head.append(f"Content-Length: {len(self.payload)}")
        return ("\r\n".join(head) + "\r\n\r\n").encode() + self.payload

    def environ(self) -> dict[str, object]:
        environ: dict[str, object] = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": self.path,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80",
            "HTTP_HOST": "127.0.0.1",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(self.payload)),
            "wsgi.input": io.BytesIO(self.payload),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
        }
        if self.token:
            environ["HTTP_AUTHORIZATION"] = f"Bearer {self.token}"
        return environ


async def _load(port: int, requests: list[bytes], seconds: float, phase: Phase | None) -> None:
    deadline = time.monotonic() + seconds
    started = time.monotonic()
    await asyncio.gather(*(_client(port, request, deadline, phase) for request in requests))
    if phase is not None:
        phase.seconds = time.monotonic() - started


async def _open_loop(port: int, requests: list[bytes], rate: float, seconds: float, phase: Phase) -> None:
    """Requests arrive at a fixed rate whatever the server does; each connection serves one at a time.

    Latency counts from the scheduled arrival, so time spent queued for a free connection is included
    (no coordinated omission).
    """
    tickets: asyncio.Queue[float | None] = asyncio.Queue()

    async def worker(request: bytes) -> None:
        connection = _Connection(port)
        while (due := await tickets.get()) is not None:
            try:
                status = await connection.exchange(request)
            except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
                phase.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            phase.latencies_ms.append((time.monotonic() - due) * 1000)
            phase.statuses[status] = phase.statuses.get(status, 0) + 1
        connection.close()

    workers = [asyncio.create_task(worker(request)) for request in requests]
    started = time.monotonic()
    for index in range(int(rate * seconds)):
        due = started + index / rate
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        tickets.put_nowait(due)
    for _ in workers:
        tickets.put_nowait(None)
    await asyncio.gather(*workers)
    phase.seconds = time.monotonic() - started


@contextmanager
def _load_generator_heap_frozen() -> Iterator[None]:
    """Keeps this process's own objects out of its garbage collector's passes while it measures.

    The load generator is Python too: a full collection stalls all its clients at once, and they read the
    stall as the server's latency (one of 56-75 ms in a 20-s run put dozens of requests in the slowest 1%).
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def run_phase(
    name: str, port: int, requests: list[bytes], seconds: float, warmup_s: float, server_pid: int
) -> tuple[Phase, Phase]:
    """(warm-up, measured): the warm-up's answers are counted too, only its timings are not reported."""
    warmup = Phase(f"{name} warm-up")
    asyncio.run(_load(port, requests, warmup_s, warmup))
    phase = Phase(name)
    with _load_generator_heap_frozen():
        cpu_before = tree_cpu_s([server_pid])
        asyncio.run(_load(port, requests, seconds, phase))
        phase.server_cpu_s = tree_cpu_s([server_pid]) - cpu_before
    return warmup, phase


def _own_database_per_worker_phase(
    env: dict[str, str],
    data: Path,
    gunicorn: list[str],
    port: int,
    requests: list[bytes],
    seconds: float,
    warmup_s: float,
) -> Phase:
    """POST /tasks with each web worker on its own copy of the database (bench/_own_database_per_worker.py):
    the bound for any design without cross-process write interference."""
    from django.db import connections

    from core.perf.db import close_process_connections

    connections.close_all()
    close_process_connections()
    with closing(sqlite3.connect(env["AICP_SQLITE_PATH"])) as database:  # the copies start from the file
        database.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shared_tasks = _count_tasks(env["AICP_SQLITE_PATH"])
    web = start([*gunicorn, "--config", str(OWN_DATABASE_CONFIG)], env, data / "gunicorn-own-databases.log")
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", accept=(200, 503))
        warmup, phase = run_phase(
            "POST /tasks, a database per worker", port, requests, seconds, warmup_s, web.pid
        )
    finally:
        stop(web)
    # The answers came from the copies, each worker's own, and the shared file was left alone.
    copies = own_database_copies(env["AICP_SQLITE_PATH"])
    written = sum(_count_tasks(str(copy)) - shared_tasks for copy in copies)
    if _count_tasks(env["AICP_SQLITE_PATH"]) != shared_tasks or len(copies) < 2:
        raise RuntimeError(f"the workers did not write their own copies: {copies}")
    if written != warmup.ok + phase.ok:
        raise RuntimeError(f"{written} tasks in the copies for {warmup.ok + phase.ok} answers")
    return phase


def _count_tasks(path: str) -> int:
    with closing(sqlite3.connect(path)) as database:
        return database.execute("SELECT count(*) FROM tasks_task").fetchone()[0]


@dataclass
class InProcess:
    """Requests handed straight to Django's WSGI application in this process: no HTTP, no gunicorn."""

    threads: int
    rps: float
    cpu_ms: float


def _wsgi_call(application: object, call: Call) -> int:
    statuses: list[str] = []
    body = application(call.environ(), lambda status, headers, exc_info=None: statuses.append(status))
    b"".join(body)
    return int(statuses[0].split()[0])


def in_process(calls: list[Call], *, threads: int, per_thread: int) -> InProcess:
    """What the Django side of a request costs alone, on one thread and with several sharing the GIL
    (and each its own SQLite connection) as gunicorn's threads do."""
    from django.db import connections

    from aicp.wsgi import application

    failures: list[int] = []

    def work(index: int) -> None:
        call = calls[index % len(calls)]
        try:
            for _ in range(per_thread):
                status = _wsgi_call(application, call)
                if not 200 <= status < 300:
                    failures.append(status)
        finally:
            connections.close_all()

    for call in calls[:threads]:
        _wsgi_call(application, call)  # warm: imports, connections, caches
    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    started, cpu_before = time.perf_counter(), time.process_time()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    seconds, cpu_s = time.perf_counter() - started, time.process_time() - cpu_before
    if failures:
        raise RuntimeError(f"in-process requests failed: {failures[:5]}")
    total = threads * per_thread
    return InProcess(threads, total / seconds, cpu_s * 1000 / total)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn --workers, as run_system")
    parser.add_argument("--web-threads", type=int, default=8, help="gunicorn --threads, as run_system")
    parser.add_argument(
        "--open-loop-fraction",
        type=float,
        default=0.5,
        help="then POST /tasks at this fraction of the saturated rate, arriving at a fixed pace",
    )
    parser.add_argument("--open-loop-s", type=float, default=15.0, help="0 skips the fixed-pace phase")
    parser.add_argument(
        "--bound-s",
        type=float,
        default=None,
        help="seconds of POST /tasks with a database per web worker (the bound without cross-process "
        "write interference; default: --seconds; 0 skips it)",
    )
    parser.add_argument(
        "--in-process", type=int, default=2000, help="requests per in-process measurement (no HTTP)"
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/BENCHMARKS.md alone")
    args = parser.parse_args()
    if args.bound_s is None:
        args.bound_s = args.seconds
    load_before = load_average()

    with tempfile.TemporaryDirectory(prefix="aicp-bench-api-") as tmp:
        data = Path(tmp)
        port = free_port()
        env = stack_env(data, DJANGO_SETTINGS_MODULE="bench._site", AICP_LOG_LEVEL="WARNING")
        run_checked([PYTHON, MANAGE, "migrate", "--no-input"], env, data / "migrate.log")
        apply_env(env)
        import django

        django.setup()
        from rest_framework_simplejwt.tokens import RefreshToken

        from tasks.models import Task
        from users.services import buyer_register

        tokens = []
        for index in range(args.clients):
            buyer = buyer_register(username=f"load-buyer-{index}", password="bench-pass-1234567")
            tokens.append(str(RefreshToken.for_user(buyer).access_token))

        # The same command line as run_system's web server.
        gunicorn = gunicorn_command(
            python=PYTHON, bind=f"127.0.0.1:{port}", workers=args.web_workers, threads=args.web_threads
        )
        web = start(gunicorn, env, data / "gunicorn.log")
        sampler = RssSampler()
        sampler.watch("web", web.pid)
        sampler.start()
        try:
            wait_for_http(f"http://127.0.0.1:{port}/health", accept=(200, 503))
            bare_calls = [Call("/bench/insert", {"n": i, "text": "x" * 60}) for i in range(args.clients)]
            bare_requests = [call.http() for call in bare_calls]
            _, bare = run_phase("bare insert", port, bare_requests, args.seconds, args.warmup_s, web.pid)
            submit_body = {"description": "Summarise the quarterly report in one sentence.", "complexity": 1}
            floor_calls = [Call("/bench/drf-insert", submit_body, token) for token in tokens]
            floor_requests = [call.http() for call in floor_calls]
            _, floor = run_phase("DRF floor", port, floor_requests, args.seconds, args.warmup_s, web.pid)
            task_calls = [Call("/tasks", submit_body, token) for token in tokens]
            task_requests = [call.http() for call in task_calls]
            tasks_before = Task.objects.count()
            warmup, submit = run_phase(
                "POST /tasks", port, task_requests, args.seconds, args.warmup_s, web.pid
            )
            open_rate = max(1.0, round(submit.rps * args.open_loop_fraction))
            paced = Phase(f"{open_rate:.0f} requests/s")
            if args.open_loop_s > 0:
                with _load_generator_heap_frozen():
                    asyncio.run(_open_loop(port, task_requests, open_rate, args.open_loop_s, paced))
            created = Task.objects.count() - tasks_before
        finally:
            sampler.stop()
            stop(web)
        own_copies = Phase("POST /tasks, a database per worker")
        if args.bound_s > 0:
            own_copies = _own_database_per_worker_phase(
                env, data, gunicorn, port, task_requests, args.bound_s, args.warmup_s
            )
        gunicorn_log = (data / "gunicorn.log").read_text(errors="replace")[-2000:]
        # After the server stopped, so the two never share the cores.
        direct = {
            name: [in_process(calls, threads=n, per_thread=args.in_process // n) for n in (1, 8)]
            for name, calls in (
                ("bare insert", bare_calls),
                ("DRF floor", floor_calls),
                ("POST /tasks", task_calls),
            )
        }

    ratio = submit.rps / bare.rps if bare.rps else 0.0
    bound_ratio = own_copies.rps / bare.rps if bare.rps else 0.0
    floor_ratio = floor.rps / bare.rps if bare.rps else 0.0
    cpu_ratio = bare.cpu_ms / submit.cpu_ms if submit.cpu_ms else float("nan")
    mean_bound = args.clients * 1000 / submit.rps if submit.rps else float("inf")
    p99 = percentile(submit.latencies_ms, 99)
    mean_ms = sum(submit.latencies_ms) / len(submit.latencies_ms) if submit.latencies_ms else float("nan")
    tail = p99 / mean_ms  # how far the slowest 1 % sit above the mean
    ratio_met, p99_met = ratio >= TARGET_RATIO, p99 < TARGET_P99_MS
    no_errors = submit.failed == 0 and bare.failed == 0
    ok = ratio_met and p99_met and no_errors
    phases = (bare, floor, submit, paced, own_copies)
    failed = sum(phase.failed for phase in phases)
    failed += created != warmup.ok + submit.ok + paced.ok

    def cells(phase: Phase) -> list[str]:
        other = {s: n for s, n in phase.statuses.items() if not 200 <= s < 300}
        failures = (
            f"{phase.failed}"
            + (f" ({other})" if other else "")
            + (f" ({len(phase.errors)} connection errors)" if phase.errors else "")
        )
        return [
            f"{phase.rps:.1f}",
            f"{percentile(phase.latencies_ms, 50):.1f} ms",
            f"{percentile(phase.latencies_ms, 99):.1f} ms",
            f"{phase.ok}",
            failures,
            f"{phase.cpu_ms:.2f} ms" if phase.server_cpu_s else "n/a",
        ]

    def verdict(met: bool) -> str:
        return "**met**" if met else "**NOT met**"

    direct_ratio = [
        submit_run.rps / bare_run.rps
        for submit_run, bare_run in zip(direct["POST /tasks"], direct["bare insert"], strict=True)
    ]
    lines = [
        f"Command: `{command_line()}`",
        "",
        f"Machine: {machine()}; load average before the run {load_before}, after {load_average()} "
        "(the machine is shared: other work competes for the same cores). gunicorn as `run_system` starts "
        f"it ({args.web_workers} workers × {args.web_threads} threads), SQLite (WAL) on a fresh file, "
        "DJANGO_DEBUG=0; "
        f"{args.clients} keep-alive clients back to back for {args.seconds:.0f} s per phase after "
        f"{args.warmup_s:.0f} s of warm-up; the load generator runs on the same cores (its own long-lived "
        "objects frozen out of its garbage collector's passes while it measures).",
        "",
        "| endpoint | requests/s | p50 | p99 | 2xx | errors | server CPU per request |",
        "|---|---|---|---|---|---|---|",
        "| bare Django view, one INSERT (`POST /bench/insert`, bench-only URL) | "
        + " | ".join(cells(bare))
        + " |",
        "| DRF floor: the API's JWT, parser and renderer, a two-field serializer, the same INSERT "
        "(`POST /bench/drf-insert`, bench-only URL) | " + " | ".join(cells(floor)) + " |",
        "| `POST /tasks` (JWT, validation, quote, escrow hold, enqueue) | "
        + " | ".join(cells(submit))
        + " |",
        *(
            [
                f"| `POST /tasks`, open loop: {paced.name} arriving at a fixed pace for "
                f"{args.open_loop_s:.0f} s (latency from the scheduled arrival) | "
                + " | ".join(cells(paced))
                + " |"
            ]
            if args.open_loop_s > 0
            else []
        ),
        *(
            [
                "| `POST /tasks`, each web worker on its own copy of the database (not deployable: the bound "
                "for any design that keeps the workers' writes apart) | "
                + " | ".join(cells(own_copies))
                + " |"
            ]
            if args.bound_s > 0
            else []
        ),
        "",
        f"Ratio POST /tasks ÷ bare insert: **{ratio:.2f}**; ratio of their server CPU per request (bare ÷ "
        f"POST /tasks, the ratio the CPU alone would allow with the cores saturated): {cpu_ratio:.2f}. "
        f"The DRF floor reaches {floor_ratio:.2f} of the bare insert: no endpoint of this stack "
        "(Django, DRF, simplejwt) that authenticates, validates and writes a row goes faster, so that is "
        f"the most the ratio could be; POST /tasks runs at {submit.rps / floor.rps if floor.rps else 0:.2f} "
        "of that floor with its business on top (quote, limits, escrow, ledger, the task's full answer). "
        f"At {args.clients} clients sending back to back, the mean latency is {args.clients} ÷ requests/s "
        f"(Little's law): {mean_bound:.0f} ms for POST /tasks at its rate, so even the mean is under "
        f"{TARGET_P99_MS:.0f} ms only above {args.clients * 1000 / TARGET_P99_MS:.0f} requests/s, and "
        f"with the p99 at {tail:.1f}× the mean as measured, a p99 under {TARGET_P99_MS:.0f} ms needs about "
        f"{tail * args.clients * 1000 / TARGET_P99_MS:.0f} requests/s. "
        "Requests answered per client in the POST /tasks phase: fewest "
        f"{min(submit.answered_per_client, default=0)}, most {max(submit.answered_per_client, default=0)} "
        "(a client left waiting in a queue would show as a few). "
        f"Tasks created: {created}, one per 201 answer "
        f"(warm-up included): {'yes' if created == warmup.ok + submit.ok + paced.ok else 'NO'}. "
        f"Peak RSS of the web server (all workers): {mib(sampler.peaks.get('web', 0))}.",
        *(
            [
                "",
                "On SQLite a write by another connection makes a connection re-read every page it touches "
                "next, and the two web processes take turns on one write lock. With each worker on its own "
                f"copy of the database, POST /tasks reaches {bound_ratio:.2f} "
                f"of the bare insert ({own_copies.cpu_ms:.2f} ms of server CPU per request against "
                f"{submit.cpu_ms:.2f} ms): the most one writer process for submissions could bring, before "
                "what handing each submission to it costs.",
            ]
            if args.bound_s > 0
            else []
        ),
        "",
        "The same requests handed straight to Django's WSGI application in the benchmark's process "
        "after the server stopped (no HTTP, no gunicorn; each thread its own SQLite connection, as "
        "gunicorn's threads have), to show what the Django side costs alone and what threads sharing "
        "one interpreter add:",
        "",
        "| in process | 1 thread: requests/s | CPU per request | 8 threads: requests/s | CPU per request |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {one.rps:.0f} | {one.cpu_ms:.2f} ms | {eight.rps:.0f} | {eight.cpu_ms:.2f} ms |"
            for name, (one, eight) in direct.items()
        ),
        "",
        f"In-process ratio POST /tasks ÷ bare insert: {direct_ratio[0]:.2f} on one thread, "
        f"{direct_ratio[1]:.2f} on 8.",
        "",
        f"Targets: ratio ≥ {TARGET_RATIO} {verdict(ratio_met)} ({ratio:.2f}); "
        f"p99 < {TARGET_P99_MS:.0f} ms at {args.clients} clients {verdict(p99_met)} "
        f"({p99:.1f} ms); 0 errors {verdict(no_errors)}; "
        f"all: **{'met' if ok else 'NOT met'}**.",
    ]
    body = "\n".join(lines)
    print(body)
    if failed:
        errors = [error for phase in phases for error in phase.errors]
        print("\nerrors (first 5):", errors[:5], file=sys.stderr)
        print("gunicorn log tail:\n" + gunicorn_log, file=sys.stderr)
    if not args.no_write:
        write_section("API load", body)
    # A missed performance target is a finding, reported above; failed requests are a failure.
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
