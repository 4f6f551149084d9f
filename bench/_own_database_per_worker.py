"""gunicorn configuration for api_load's bound phase: each web worker on its own copy of the database.

Not a deployable setup (each worker's writes are invisible to the others). It measures the most any design
could reach that keeps the web workers' writes from interfering (one writer process for submissions, with
free IPC): on SQLite, a write by another connection makes each connection re-read every page it touches
next, and two processes submitting take turns on one write lock. The copies are made from the database
as the benchmark leaves it (checkpointed, nobody writing it) when each worker starts.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

_COPY_SUFFIX = ".worker"


def copy_path(shared: str, worker_age: int) -> str:
    """The copy a worker (by gunicorn's ``worker.age``, 1 for the first one started) writes."""
    return f"{shared}{_COPY_SUFFIX}{worker_age}"


def copies(shared: str) -> list[Path]:
    """The workers' copies of ``shared`` that exist (not their -wal and -shm files)."""
    prefix = Path(shared).name + _COPY_SUFFIX
    return [path for path in Path(shared).parent.glob(f"{prefix}*") if path.name[len(prefix) :].isdigit()]


def post_fork(server: object, worker: object) -> None:
    shared = os.environ["AICP_SQLITE_PATH"]
    own = copy_path(shared, worker.age)  # type: ignore[attr-defined]
    if not os.path.exists(own):
        shutil.copyfile(shared, own)
    os.environ["AICP_SQLITE_PATH"] = own  # read by aicp.settings when the worker loads the application
