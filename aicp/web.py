"""The web server: gunicorn's command line (run_system and the benchmarks start it alike) and its worker."""

from __future__ import annotations

from typing import Any

from gunicorn.workers.gthread import ThreadWorker

WEB_THREADS = 8


def gunicorn_command(
    *, python: str, bind: str, workers: int, threads: int = WEB_THREADS, app: str = "aicp.wsgi:application"
) -> list[str]:
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
        "aicp.web.BalancedThreadWorker",
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
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._busy_threads = 0  # requests handed to the thread pool and not finished; main thread only
        super().__init__(*args, **kwargs)

    # gunicorn's loop accepts while `nr_conns < worker_connections`, evaluated before each wait for
    # events; reporting the connections held as the limit while every thread is busy pauses accepting.
    @property  # type: ignore[override]
    def worker_connections(self) -> int:
        if self._busy_threads >= self.cfg.threads:
            return min(self.nr_conns, self._worker_connections)
        return self._worker_connections

    @worker_connections.setter
    def worker_connections(self, value: int) -> None:
        self._worker_connections = value

    def enqueue_req(self, conn: Any) -> None:
        self._busy_threads += 1
        super().enqueue_req(conn)

    def finish_request(self, conn: Any, fs: Any) -> None:
        self._busy_threads -= 1
        super().finish_request(conn, fs)
