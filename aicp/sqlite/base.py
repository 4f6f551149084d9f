"""Django's SQLite backend, with this process's write transactions taking turns on a mutex first.

SQLite has one writer at a time; our transactions are IMMEDIATE, so each takes the write lock at BEGIN.
A writer that finds it taken sleeps in SQLite's busy handler, in steps growing to 100 ms, and retries.
With a web worker's 8 threads all submitting tasks, most of them are asleep in that handler at any time,
often while the lock is already free again: POST /tasks under 50 clients spent 64% of its time in BEGIN.
Threads of one process now queue on a mutex that hands over the moment a transaction ends, so at most
one of them waits in SQLite's handler (for other processes' writers). Autocommit statements outside
transactions are unaffected.
"""

from __future__ import annotations

import threading

from django.db import OperationalError
from django.db.backends.sqlite3 import base

_mutexes: dict[str, threading.Lock] = {}
_mutexes_guard = threading.Lock()


def _mutex(database: str) -> threading.Lock:
    with _mutexes_guard:
        return _mutexes.setdefault(database, threading.Lock())


class DatabaseWrapper(base.DatabaseWrapper):
    _holds_mutex = False

    def _start_transaction_under_autocommit(self) -> None:
        # As long as SQLite itself would wait for the write lock, then the same error it would raise.
        timeout_s = float(self.settings_dict["OPTIONS"].get("timeout", 5))
        if not _mutex(str(self.settings_dict["NAME"])).acquire(timeout=timeout_s):
            raise OperationalError("database is locked (this process's other writers held it throughout)")
        self._holds_mutex = True
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._release_mutex()
            raise

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
