"""A queue job for tests/duke/test_learning_priority.py: reports the scheduling priority it runs at."""

from __future__ import annotations

import os
from pathlib import Path


def write_priority(path: str) -> None:
    Path(path).write_text(str(os.getpriority(os.PRIO_PROCESS, 0)))
