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


def post_fork(server: object, worker: object) -> None:
    shared = os.environ["AICP_SQLITE_PATH"]
    own = f"{shared}.worker{worker.age}"  # type: ignore[attr-defined]
    if not os.path.exists(own):
        shutil.copyfile(shared, own)
    os.environ["AICP_SQLITE_PATH"] = own  # read by aicp.settings when the worker loads the application
