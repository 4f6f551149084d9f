"""The web server's worker (core.perf.web.BalancedThreadWorker): it accepts only while it has a free
thread, and keeps the application's long-lived objects out of the garbage collector's passes."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from core.perf.web import (
    HEAP_SETTLED_AFTER_REQUESTS,
    MAX_ACCEPT_PAUSE_S,
    BalancedThreadWorker,
    gunicorn_command,
)

REPO = Path(__file__).resolve().parents[3]


def _limit(*, busy: int, threads: int, held: int, configured: int = 1000, pending: int = 0) -> int:
    """The limit gunicorn's loop sees, for ``held`` connections of which ``busy`` are with the threads and
    ``pending`` wait for their first bytes (the rest are kept alive between requests)."""
    worker = SimpleNamespace(
        cfg=SimpleNamespace(threads=threads),
        nr_conns=held,
        keepalived_conns=deque(range(held - busy - pending)),
        pending_conns=deque(range(pending)),
        _worker_connections=configured,
        _paused_since=None,
    )
    return BalancedThreadWorker.worker_connections.fget(worker)


def test_it_stops_accepting_exactly_while_every_thread_is_busy():
    # gunicorn accepts while nr_conns < worker_connections
    assert _limit(busy=0, threads=8, held=0) == 1000
    assert _limit(busy=7, threads=8, held=30) == 1000
    assert _limit(busy=7, threads=8, held=30, pending=5) == 1000
    assert _limit(busy=8, threads=8, held=30) == 30  # 30 < 30 is false: no accept
    assert _limit(busy=9, threads=8, held=30) == 30
    assert _limit(busy=2, threads=8, held=1000) == 1000  # gunicorn's own limit still holds
    assert _limit(busy=8, threads=8, held=1200) == 1000


def test_a_pause_ends_after_its_bound_with_one_connection_accepted():
    worker = SimpleNamespace(
        cfg=SimpleNamespace(threads=1),
        nr_conns=3,
        keepalived_conns=deque(),
        pending_conns=deque(),
        _worker_connections=1000,
        _paused_since=None,
    )
    limit = BalancedThreadWorker.worker_connections.fget
    assert limit(worker) == 3  # busy: the pause begins
    assert limit(worker) == 3  # and holds
    worker._paused_since -= MAX_ACCEPT_PAUSE_S
    assert limit(worker) == 1000  # over: one accept
    assert limit(worker) == 3  # still busy: a new pause
    worker.keepalived_conns.extend([1, 2, 3])  # all three idle between requests
    assert limit(worker) == 1000 and worker._paused_since is None  # a free thread: no pause


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_listening(port: int, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert server.poll() is None, "gunicorn exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("gunicorn did not listen")


def _poll(condition, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


def _answering_pid(port: int) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", "/")
        return connection.getresponse().read().decode()
    finally:
        connection.close()


def _serve_sleepy(*, workers: int) -> Iterator[int]:
    port = _free_port()
    command = gunicorn_command(
        python=sys.executable,
        bind=f"127.0.0.1:{port}",
        workers=workers,
        threads=1,
        app="tests.core.perf.sleepy_wsgi:application",
    )
    server = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_until_listening(port, server)
        answered: set[str] = set()

        def every_worker_answered() -> bool:
            answered.add(_answering_pid(port))
            return len(answered) >= workers

        _poll(every_worker_answered, "every worker has booted and answered")
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def sleepy_server() -> Iterator[int]:
    yield from _serve_sleepy(workers=2)


@pytest.fixture
def one_worker_server() -> Iterator[int]:
    yield from _serve_sleepy(workers=1)


def _arrived(gate: Path) -> set[str]:
    """The processes whose thread a held request has reached."""
    return {path.name.split("-")[1] for path in gate.glob("arrived-*")}


def test_a_busy_worker_leaves_new_connections_to_the_one_with_a_free_thread(sleepy_server, tmp_path):
    """Two workers of one thread, two clients connecting at once for a request each that holds its thread.

    gunicorn's own worker may accept both (it holds far fewer than 1,000 connections) and leave the second
    waiting behind the first on its one thread; this one takes the second only after the first is done,
    so the other worker, idle, takes it: both requests reach a thread, in different processes, while
    neither has been answered.
    """
    for attempt in range(5):
        gate = tmp_path / f"gate-{attempt}"
        gate.mkdir()
        start = threading.Barrier(2)
        pids: list[str] = []

        def client(gate: Path = gate, start: threading.Barrier = start, pids: list[str] = pids) -> None:
            connection = http.client.HTTPConnection("127.0.0.1", sleepy_server, timeout=60)
            start.wait()
            connection.request("GET", f"/?hold={gate}")
            pids.append(connection.getresponse().read().decode())
            connection.close()

        clients = [threading.Thread(target=client) for _ in range(2)]
        for thread in clients:
            thread.start()
        try:
            # Held, both at once: a worker serving them one after the other never shows two arrivals.
            _poll(
                lambda gate=gate: len(list(gate.glob("arrived-*"))) == 2, "both requests reach a thread", 20
            )
            assert len(_arrived(gate)) == 2, sorted(path.name for path in gate.iterdir())
        finally:
            (gate / "release").touch()
            for thread in clients:
                thread.join()
        assert len(set(pids)) == 2, pids


def test_a_new_client_is_not_left_waiting_while_every_thread_stays_busy(sleepy_server):
    """Four clients keep both one-thread workers busy back to back; a fifth connecting meanwhile is
    answered while they still do (the pause before accepting is bounded), not when the load ends."""
    load_on = threading.Event()
    load_on.set()
    busy = threading.Barrier(5)  # the four loaders have each been answered once, and the test

    def keep_busy() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", sleepy_server, timeout=60)
        connection.request("GET", "/?ms=200")
        connection.getresponse().read()
        busy.wait()
        while load_on.is_set():
            connection.request("GET", "/?ms=200")
            connection.getresponse().read()
        connection.close()

    loaders = [threading.Thread(target=keep_busy) for _ in range(4)]
    for thread in loaders:
        thread.start()
    answered = threading.Event()
    try:
        busy.wait(timeout=60)

        def newcomer() -> None:
            connection = http.client.HTTPConnection("127.0.0.1", sleepy_server, timeout=60)
            connection.request("GET", "/?ms=0")
            if connection.getresponse().status == 200:
                answered.set()
            connection.close()

        thread = threading.Thread(target=newcomer)
        thread.start()
        # The load lasts until the newcomer is answered (or 30 s): a worker that never paused its
        # keep-alive clients for it would leave it waiting until then.
        assert answered.wait(timeout=30), "a new client waited while the others kept the workers busy"
        assert all(loader.is_alive() for loader in loaders), "the load ended before the newcomer's answer"
    finally:
        load_on.clear()
        for loader in loaders:
            loader.join()
    thread.join()


def _frozen_objects(connection: http.client.HTTPConnection) -> int:
    connection.request("GET", "/?gc=1")
    return int(connection.getresponse().read().decode().split()[1])


def test_the_heap_is_frozen_once_loaded_and_again_once_the_first_requests_are_served(one_worker_server):
    connection = http.client.HTTPConnection("127.0.0.1", one_worker_server, timeout=30)
    loaded = _frozen_objects(connection)
    assert loaded > 1000, "the application's objects (gunicorn, the app) are frozen when the worker loads it"
    for _ in range(HEAP_SETTLED_AFTER_REQUESTS - 3):
        connection.request("GET", "/")
        connection.getresponse().read()
    assert _frozen_objects(connection) == loaded, "nothing more is frozen before the settling point"
    connection.request("GET", "/")  # the worker's HEAP_SETTLED_AFTER_REQUESTS-th request
    connection.getresponse().read()
    settled = _frozen_objects(connection)
    # The app kept one list per request answered: all of them are frozen now, as is what they are kept in.
    assert settled >= loaded + HEAP_SETTLED_AFTER_REQUESTS, (loaded, settled)
    for _ in range(50):
        connection.request("GET", "/")
        connection.getresponse().read()
    assert _frozen_objects(connection) == settled, "frozen once more, not after every request"
    connection.close()
