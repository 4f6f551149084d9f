"""A per-process map of recently read rows, for the reads every request repeats (its user, its token).

Switch: AICP_RECENT_ROWS_S (0: every request reads its user and decodes its token). Measured: part of
d003261 (POST /tasks in process 5.7 -> 2.0 ms with the shared fields and prepared statements); HTTP A/B of
issue 19 (bench/perf_ab.py --http): 1.53x POST /tasks requests/s, p99 1.50x lower.

Reading a row through the ORM costs about 0.2 ms of Python on this machine, for 0.03 ms of database
work, and decoding a JWT about as much. An entry lives `AICP_RECENT_ROWS_S` seconds; a save or delete
through the ORM in this process drops it at once (signals), so in other processes a change takes effect
within that time. Callers get a copy, never the shared object. Not for rows whose every change must
show at once (an agent's reputation counts, which the next quote must use).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from django.conf import settings

Row = TypeVar("Row")
MAX_ENTRIES = 10_000


class RecentRows(Generic[Row]):
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: dict[Hashable, tuple[float, Row]] = {}
        self.clock = clock  # injectable, so tests can step past an entry's lifetime without sleeping

    def get(self, key: Hashable, load: Callable[[], Row]) -> Row:
        ttl_s = settings.AICP_RECENT_ROWS_S
        if ttl_s <= 0:
            return load()
        now = self.clock()
        entry = self._entries.get(key)
        if entry is not None and now - entry[0] < ttl_s:
            return copy.copy(entry[1])
        row = load()
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()  # bounded memory; the next requests reload what they use
        self._entries[key] = (now, copy.copy(row))
        return row

    def forget(self, key: Hashable) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()
