"""Group commit: concurrent callers' writes carried out together, in one transaction per group.

Switch: AICP_SUBMIT_GROUP_MAX (1: each submission written alone). Measured: with the shared writing
connection (core.perf.db.process_connection) 30% less per task (commit 86e22a7); POST /tasks
773 -> 939 req/s together with the balanced web worker (BENCHMARKS, commit 14143e6).

On SQLite every write transaction holds the database's one write lock, and its fixed costs (BEGIN,
COMMIT's WAL append, taking turns with the other threads and processes) were most of a submission's
time under load. Here, a caller whose write finds another group being written does not start a
transaction of its own: it queues, and the next group takes everything queued since, up to a maximum.

There is no background thread. The first caller to find nobody writing leads: it writes one group (its
own item first) on its own thread and database connection, hands the lead to the oldest caller still
queued, and returns. So each caller writes at most one group, nobody waits for a group larger than the
maximum, and no group waits for more items to arrive: the groups are as large as the load makes them.

The write function gets the items and returns one result per item, in order; an item's result may be an
exception, which is raised in that item's caller. When the whole write fails (an error it did not turn
into one item's result), every item of a group of several is written again alone, so that one bad item
fails only its own caller. A database that cannot be written at all (an OperationalError: locked, disk
I/O) fails the group at once, since writing the items one by one would only wait that much longer.

A write that committed is never written again: "the transaction failed" and "something after the commit
failed" are different errors. A write whose transaction committed but which then failed (a commit
callback, such as an enqueue to a broker that is down) raises ``Committed`` with its results: each caller
gets its own result, and the failure is logged once. (Writes should not fail after commit at all: their
enqueues go through core.after_commit, which never raises. This is the second line.)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from django.db import OperationalError

logger = logging.getLogger("aicp.perf")

Item = TypeVar("Item")
Result = TypeVar("Result")


class Committed(Exception):  # noqa: N818 - it says what happened to the write, not that it failed
    """Raised by a write whose transaction committed before something after it failed (the failure is
    its ``__cause__``): ``results`` stand, one per item, and the items must never be written again."""

    def __init__(self, results: Sequence[object]) -> None:
        super().__init__(f"committed {len(results)} result(s), then failed")
        self.results = results


class _Waiter(Generic[Item, Result]):
    __slots__ = ("item", "result", "error", "leads", "_done")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.result: Result | None = None
        self.error: BaseException | None = None
        self.leads = False
        # A plain lock, held from the start, that `wake` releases: an Event (a Condition, its lock, and a
        # lock per wait) cost every submission several lock operations more on both sides.
        self._done = threading.Lock()
        self._done.acquire()

    def wait(self) -> None:
        self._done.acquire()

    def wake(self) -> None:
        """Lets `wait` return. Called exactly once per waiter: by its group's leader, or by the leader
        that hands it the lead."""
        self._done.release()

    def outcome(self) -> Result:
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]


class GroupCommit(Generic[Item, Result]):
    """Writes callers' items in groups of up to ``max_group()`` through ``write`` (see the module)."""

    def __init__(
        self,
        write: Callable[[Sequence[Item]], Sequence[Result | Exception]],
        *,
        max_group: Callable[[], int],
    ) -> None:
        self._write = write
        self._max_group = max_group
        self._guard = threading.Lock()
        self._queued: list[_Waiter[Item, Result]] = []
        # Invariant: while nobody leads, nothing is queued.
        self._leading = False

    def submit(self, item: Item) -> Result:
        """Writes the item (with whatever else is queued) and returns its result, or raises its error."""
        waiter: _Waiter[Item, Result] = _Waiter(item)
        with self._guard:
            self._queued.append(waiter)
            leads = not self._leading
            self._leading = True
        if not leads:
            waiter.wait()
            if not waiter.leads:
                return waiter.outcome()
        self._lead()
        return waiter.outcome()

    def _lead(self) -> None:
        with self._guard:
            size = max(1, self._max_group())
            group, self._queued = self._queued[:size], self._queued[size:]
        try:
            self._write_group(group)
        finally:
            with self._guard:
                if self._queued:
                    successor = self._queued[0]
                    successor.leads = True
                    successor.wake()
                else:
                    self._leading = False
            for waiter in group[1:]:  # group[0] is this thread's own caller
                waiter.wake()

    def _write_group(self, group: list[_Waiter[Item, Result]]) -> None:
        try:
            results = self._write([waiter.item for waiter in group])
        except Committed as committed:
            self._settle_committed(group, committed)
            return
        except OperationalError as error:
            failure: BaseException = error
        except Exception as error:  # noqa: BLE001 - retried one by one below, each keeping its own error
            if len(group) == 1:
                failure = error
            else:
                for waiter in group:
                    self._write_alone(waiter)
                return
        except BaseException as error:
            failure = error
        else:
            # Outside the try: the write returned, so it is done; settling must never make it run again.
            self._settle(group, results)
            return
        for waiter in group:
            waiter.error = failure

    def _write_alone(self, waiter: _Waiter[Item, Result]) -> None:
        try:
            results = self._write([waiter.item])
        except Committed as committed:
            self._settle_committed([waiter], committed)
        except BaseException as error:  # noqa: BLE001 - it is this item's caller's to raise
            waiter.error = error
        else:
            self._settle([waiter], results)

    @classmethod
    def _settle_committed(cls, group: list[_Waiter[Item, Result]], committed: Committed) -> None:
        cause = committed.__cause__
        logger.warning(
            "A group of %d was committed, then failed (%s: %s); its results stand, it is not written again",
            len(group),
            type(cause).__name__,
            str(cause)[:200],
        )
        cls._settle(group, committed.results)  # type: ignore[arg-type]

    @staticmethod
    def _settle(group: list[_Waiter[Item, Result]], results: Sequence[Result | Exception]) -> None:
        if len(results) != len(group):
            # A broken write function; what it wrote stands: every caller gets this error, none a rewrite.
            error = RuntimeError(f"group write returned {len(results)} results for {len(group)} items")
            for waiter in group:
                waiter.error = error
            return
        for waiter, result in zip(group, results, strict=True):
            if isinstance(result, Exception):
                waiter.error = result
            else:
                waiter.result = result
