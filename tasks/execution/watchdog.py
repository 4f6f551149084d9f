"""The lease watchdog (the fast reaper): a thread in every queue worker that gives back the tasks of workers
that died.

Recovery after a worker dies: a claimed task's lease (AICP_TASK_LEASE_S, 15 s by default) is renewed by the
drainer holding it every few seconds while its call really runs (tasks.execution.housekeeping); a dead
worker renews nothing. Every queue worker runs this watchdog, which looks every AICP_REAPER_INTERVAL_S
(5 s) for leases that ran out and puts their tasks back to pending (the reaper on the minute schedule
stays as a backstop), so a task held by a dead worker runs again within about lease + interval seconds of
the death. Effects stay exactly-once: requeueing and settling are conditional updates.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone
from django_q.conf import Conf

from tasks.models import Task
from tasks.services.lifecycle import task_requeue_expired

logger = logging.getLogger("tasks")


_watchdog_lock = threading.Lock()
_watchdog_pid: int | None = None


def reap_once() -> int:
    """One look of the watchdog: tasks whose lease ran out go back to pending and a drainer is asked for
    (task_requeue_expired). One indexed read when nothing expired: no write lock, no job.

    Pending work with no drainer and nothing expired (a drainer that died between claims) is left to the
    minute reaper: looking for it here would start a drainer every few seconds while an agent's breaker
    or a Retry-After keeps its tasks waiting.
    """
    if Task.objects.filter(status=Task.Status.RUNNING, lease_until__lt=timezone.now()).exists():
        return len(task_requeue_expired())
    return 0


def _watch(interval_s: float) -> None:
    # Workers start together: spread their looks over the interval.
    time.sleep(random.uniform(0, interval_s))
    while True:
        try:
            close_old_connections()
            reap_once()
        except Exception:  # noqa: BLE001 — a database hiccup must not end the watch; the next look retries
            logger.exception("Lease watchdog could not look for expired leases")
        time.sleep(interval_s)


def start_lease_watchdog() -> bool:
    """Starts this process's watchdog thread (once per process; a queue worker calls it when spawned)."""
    global _watchdog_pid
    if Conf.SYNC:
        return False  # jobs run inline in the caller (django-q2 "spawns" its worker there): nothing to watch
    with _watchdog_lock:
        if _watchdog_pid == os.getpid():
            return False
        _watchdog_pid = os.getpid()
    interval_s = settings.AICP_REAPER_INTERVAL_S
    threading.Thread(target=_watch, args=(interval_s,), name="aicp-lease-watchdog", daemon=True).start()
    return True
