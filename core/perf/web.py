"""The web server: gunicorn's command line (run_system and the benchmarks start it alike) and its worker.

Switch: AICP_PERF_WEB_WORKER (off: gunicorn's own gthread worker). Measured: gunicorn's worker let one
worker take 47 of 50 keep-alive clients (86 ms per request against 8 ms on the other); with this one
POST /tasks 773 -> 939 req/s, p99 165 -> 106 ms (commits 85becc5, 14143e6).
"""

from __future__ import annotations

import threading
import time

from gunicorn.workers.gthread import ThreadWorker

from core.perf.heap import freeze_heap

WEB_THREADS = 8
MAX_ACCEPT_PAUSE_S = 0.025
# By then a worker has built what Django, DRF and our caches build on first use (URL resolvers, serializer
# fields, statements, negotiation answers): long-lived objects that would otherwise stay in every collection.
HEAP_SETTLED_AFTER_REQUESTS = 1000
_heap_settle_guard = threading.Lock()


def gunicorn_command(
    *,
    python: str,
    bind: str,
    workers: int,
    threads: int = WEB_THREADS,
    app: str = "aicp.wsgi:application",
    balanced: bool = True,
) -> list[str]:
    """gunicorn's command line; ``balanced`` (AICP_PERF_WEB_WORKER): BalancedThreadWorker, else gthread."""
    return [
        python,
        "-m",
        "gunicorn",
        app,
        "--bind",
        bind,
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--worker-class",
        "core.perf.web.BalancedThreadWorker" if balanced else "gthread",
        "--timeout",
        "60",
        "--graceful-timeout",
        "10",
        # gunicorn's control socket defaults to one path per user: a second instance on the machine
        # (another port, a benchmark) would take it over. Nothing here uses gunicornc.
        "--no-control-socket",
    ]


class BalancedThreadWorker(ThreadWorker):
    """gunicorn's threaded worker, except that it accepts a new connection only while a thread of its is free.

    All workers accept from one listening socket, and a connection stays with the worker that accepted
    it for as long as its client keeps it alive. gunicorn's worker accepts whenever it holds fewer than
    --worker-connections (1,000) connections, busy or not: of 50 keep-alive clients connecting at once,
    one worker took 47 and the other 3, and for the whole run the 47 waited 86 ms per request for 8
    threads while the 3 waited 8 ms. This worker leaves a new connection in the listen queue while all
    its threads are busy, so a worker with a free thread takes it, and connections spread as the
    workers' capacity does. The connections it holds are served as gunicorn's worker serves them.

    It also keeps the application's long-lived objects out of the garbage collector's passes (``freeze_heap``:
    once loaded, and again after its first HEAP_SETTLED_AFTER_REQUESTS requests).
    """

    _paused_since: float | None = None  # when this worker last stopped accepting because it was busy
    _heap_settled = False

    def load_wsgi(self) -> None:
        super().load_wsgi()
        freeze_heap()  # the application as imported

    def handle_request(self, req: object, conn: object) -> bool:
        try:
            return super().handle_request(req, conn)
        finally:
            if not self._heap_settled and self.nr >= HEAP_SETTLED_AFTER_REQUESTS:
                self._settle_heap()

    def _settle_heap(self) -> None:
        """Freezes once more, after the first requests built what is built on first use (once per worker)."""
        with _heap_settle_guard:
            if self._heap_settled:
                return
            self._heap_settled = True
        freeze_heap()

    # gunicorn's loop accepts while `nr_conns < worker_connections`, evaluated before each wait for
    # events; reporting the connections held as the limit while every thread is busy pauses accepting.
    @property  # type: ignore[override]
    def worker_connections(self) -> int:
        # A connection held is kept alive between requests, waiting for its first bytes, or with the
        # thread pool (being served, or queued for a thread).
        with_threads = self.nr_conns - len(self.keepalived_conns) - len(self.pending_conns)
        if with_threads < self.cfg.threads:
            self._paused_since = None
            return self._worker_connections
        # While every worker stays busy, a pause without end would leave a new client in the listen
        # queue for as long as the load lasts (10 s, the whole run, in the benchmark): each pause ends
        # after MAX_ACCEPT_PAUSE_S with one connection accepted, as gunicorn's worker would have.
        now = time.monotonic()
        if self._paused_since is None:
            self._paused_since = now
        elif now - self._paused_since >= MAX_ACCEPT_PAUSE_S:
            self._paused_since = None
            return self._worker_connections
        return min(self.nr_conns, self._worker_connections)

    @worker_connections.setter
    def worker_connections(self, value: int) -> None:
        self._worker_connections = value
