"""A queue job for tests/duke/test_learning_priority.py: reports the scheduling priority it runs at."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_priority(path: str) -> None:
    policy = os.sched_getscheduler(0) if hasattr(os, "sched_getscheduler") else None
    Path(path).write_text(json.dumps({"nice": os.getpriority(os.PRIO_PROCESS, 0), "policy": policy}))
