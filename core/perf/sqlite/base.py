"""Django's SQLite backend, with write transactions that queue for the lock instead of sleeping for it.

Switch: AICP_PERF_SQLITE_QUEUE (off: Django's own sqlite3 backend). Measured: p99 of POST /tasks
halved in A/B runs (1.2-1.5 s -> 0.5 s), throughput +10-60% on the loaded box (commit 2d60deb); HTTP A/B of
issue 19 (bench/perf_ab.py --http, 12 rounds at load 10-20): throughput 1.10x, p99 1.21x lower (median).

SQLite has one writer at a time; our transactions are IMMEDIATE, so each takes the write lock at BEGIN.
A writer that finds it taken sleeps in SQLite's busy handler, in steps growing to 100 ms, and retries.
With a web worker's 8 threads all submitting tasks, most of them were asleep in that handler at any
time, often while the lock was free again: POST /tasks under 50 clients spent 64% of its time in BEGIN.
Two changes, for BEGIN only:

- threads of one process take turns on a mutex, handed over the moment a transaction ends, so at most
  one of them at a time waits for the other processes' writers;
- that one retries BEGIN every millisecond or two rather than in SQLite's growing steps, until the busy
  timeout, after which it fails with SQLite's own "database is locked".

Statements in autocommit (outside transactions) keep SQLite's handler and timeout.

Its cursor also remembers each statement's conversion from Django's ``%s`` placeholders to SQLite's
``?``: Django runs a regular expression over the whole SQL on every execute, which for a group of task
INSERTs (a hundred placeholders) cost more CPU than SQLite took to run it.
"""

from __future__ import annotations

import threading
import time

from django.db import OperationalError
from django.db.backends.sqlite3 import base

_RETRY_FIRST_S = 0.0005
_RETRY_MAX_S = 0.002

_mutexes: dict[str, threading.Lock] = {}
_mutexes_guard = threading.Lock()


def _mutex(database: str) -> threading.Lock:
    with _mutexes_guard:
        return _mutexes.setdefault(database, threading.Lock())


_CONVERTED_MAX = 4096
_converted: dict[str, str] = {}


class CursorWrapper(base.SQLiteCursorWrapper):
    def convert_query(self, query: str, *, param_names: list[str] | None = None) -> str:
        if param_names is not None:
            return super().convert_query(query, param_names=param_names)
        converted = _converted.get(query)
        if converted is None:
            converted = super().convert_query(query)
            if len(_converted) < _CONVERTED_MAX:  # bounded: SQL with inlined values is converted each time
                _converted[query] = converted
        return converted


class DatabaseWrapper(base.DatabaseWrapper):
    _holds_mutex = False

    def create_cursor(self, name: str | None = None) -> CursorWrapper:
        return self.connection.cursor(factory=CursorWrapper)

    def _start_transaction_under_autocommit(self) -> None:
        # As long as SQLite itself would wait for the write lock, then the same error it would raise.
        timeout_s = float(self.settings_dict["OPTIONS"].get("timeout", 5))
        deadline = time.monotonic() + timeout_s
        if not _mutex(str(self.settings_dict["NAME"])).acquire(timeout=timeout_s):
            raise OperationalError("database is locked (this process's other writers held it throughout)")
        self._holds_mutex = True
        try:
            if self.transaction_mode is None:
                super()._start_transaction_under_autocommit()  # a deferred BEGIN takes no lock
            else:
                self._begin_polling(deadline, timeout_s)
        except BaseException:
            self._release_mutex()
            raise

    def _begin_polling(self, deadline: float, timeout_s: float) -> None:
        cursor = self.cursor()  # Django's: BEGIN shows in query logs and captures as before
        delay = _RETRY_FIRST_S
        self.connection.execute("PRAGMA busy_timeout = 0")
        try:
            while True:
                try:
                    cursor.execute(f"BEGIN {self.transaction_mode}")
                    return
                except OperationalError as error:
                    if "locked" not in str(error) or time.monotonic() + delay > deadline:
                        raise
                time.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
        finally:
            self.connection.execute(f"PRAGMA busy_timeout = {round(timeout_s * 1000)}")

    def _release_mutex(self) -> None:
        if self._holds_mutex:
            self._holds_mutex = False
            _mutex(str(self.settings_dict["NAME"])).release()

    # The transaction ends in one of these three, whatever else happens; each frees the turn once.
    def _commit(self) -> None:
        try:
            super()._commit()
        finally:
            self._release_mutex()

    def _rollback(self) -> None:
        try:
            super()._rollback()
        finally:
            self._release_mutex()

    def _close(self) -> None:
        try:
            super()._close()
        finally:
            self._release_mutex()
