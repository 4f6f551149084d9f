"""Run one callable from many threads at once, each on its own database connection."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.db import connections


def run_concurrently(target: Callable[[int], Any], count: int, *, timeout_s: float = 120) -> list[Any]:
    """Calls target(i) for i in range(count), all released together; returns results or the exceptions."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = target(index)
        except BaseException as exc:  # noqa: BLE001 — the test inspects what each thread got
            results[index] = exc
        finally:
            # Each thread opened its own connection; an open one would block dropping the test database.
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,), name=f"concurrent-{i}") for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout_s)
    assert not any(thread.is_alive() for thread in threads), "a thread is still running: deadlock?"
    return results
