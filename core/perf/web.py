"""The web server: gunicorn's command line (run_system and the benchmarks start it alike).

Not a trick any more: gunicorn's own threaded worker (gthread). Its former BalancedThreadWorker (accept
only with a free thread, heap frozen out of the garbage collector) measured 0.87 of gthread's POST /tasks
throughput and a p99 5% better in issue 19's interleaved HTTP A/B (docs/BENCHMARKS.md), under the 10%
bar, and was removed (switch AICP_PERF_WEB_WORKER with it).
"""

from __future__ import annotations

WEB_THREADS = 8


def gunicorn_command(
    *,
    python: str,
    bind: str,
    workers: int,
    threads: int = WEB_THREADS,
    app: str = "aicp.wsgi:application",
) -> list[str]:
    """gunicorn's command line, its threaded worker."""
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
        "gthread",
        "--timeout",
        "60",
        "--graceful-timeout",
        "10",
        # gunicorn's control socket defaults to one path per user: a second instance on the machine
        # (another port, a benchmark) would take it over. Nothing here uses gunicornc.
        "--no-control-socket",
    ]
