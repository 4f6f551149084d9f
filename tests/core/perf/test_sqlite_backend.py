"""core.perf.sqlite: one process's write transactions take turns on a mutex, freed however they end."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from django.db import OperationalError, connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from core.perf.sqlite.base import _mutex
from tasks.models import DrainSlot

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _sqlite_only() -> None:
    if connection.vendor != "sqlite":
        pytest.skip("the mutex belongs to the SQLite backend")


def _turn() -> threading.Lock:
    return _mutex(str(connection.settings_dict["NAME"]))


def _is_free(turn: threading.Lock) -> bool:
    if not turn.acquire(blocking=False):
        return False
    turn.release()
    return True


def test_it_frees_the_turn_after_a_commit_and_after_a_rollback():
    turn = _turn()
    with transaction.atomic():
        assert not _is_free(turn)
        DrainSlot.objects.create(number=1)
    assert _is_free(turn)
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        DrainSlot.objects.create(number=2)
        1 / 0  # noqa: B018
    assert _is_free(turn)
    assert list(DrainSlot.objects.values_list("number", flat=True)) == [1]


def test_it_refuses_a_transaction_after_the_busy_timeout_like_sqlite_would(monkeypatch):
    monkeypatch.setitem(connection.settings_dict["OPTIONS"], "timeout", 0.2)
    turn = _turn()
    turn.acquire()
    try:
        with pytest.raises(OperationalError, match="database is locked"), transaction.atomic():
            pass
    finally:
        turn.release()
    with transaction.atomic():  # and the connection is usable afterwards
        DrainSlot.objects.create(number=3)
    assert _is_free(turn)


def test_it_commits_every_transaction_of_many_concurrent_writers():
    errors: list[BaseException] = []

    def writer(index: int) -> None:
        try:
            for round_ in range(10):
                with transaction.atomic():
                    DrainSlot.objects.create(number=100 + index * 10 + round_)
        except BaseException as error:  # noqa: BLE001 — reported by the assertion below
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert DrainSlot.objects.filter(number__gte=100).count() == 80
    assert _is_free(_turn())


class _WriterElsewhere:
    """Another process's writer, as SQLite sees it: its own connection holding the write lock until
    ``release`` is set (or until ``until()`` is true, polled with a deadline)."""

    def __init__(self, until=lambda: False) -> None:
        self.holding, self.release, self.committing = threading.Event(), threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._hold, args=(str(connection.settings_dict["NAME"]), until))
        self.thread.start()
        assert self.holding.wait(10)

    def _hold(self, path: str, until) -> None:
        other = sqlite3.connect(path, timeout=5, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        self.holding.set()
        deadline = time.monotonic() + 10
        while not self.release.is_set() and not until() and time.monotonic() < deadline:
            self.release.wait(0.005)
        self.committing.set()  # before COMMIT: no other writer can begin until it is done
        other.execute("COMMIT")
        other.close()

    def join(self) -> None:
        self.release.set()
        self.thread.join(10)


def _begins(log) -> int:
    return sum(1 for query in list(log) if query["sql"].startswith("BEGIN"))


def test_it_waits_for_another_writer_then_begins():
    with CaptureQueriesContext(connection) as captured:  # failed BEGINs are logged too
        # The other writer commits only once this one has tried to BEGIN and tried again: it waited.
        holder = _WriterElsewhere(until=lambda: _begins(captured.connection.queries_log) >= 2)
        with transaction.atomic():
            began_after_the_other_committed = holder.committing.is_set()
            DrainSlot.objects.create(number=4)
    holder.join()
    assert began_after_the_other_committed
    assert _begins(captured.captured_queries) >= 2, captured.captured_queries
    assert DrainSlot.objects.filter(number=4).exists()
    # SQLite's own busy timeout is back for statements outside transactions.
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA busy_timeout")
        assert cursor.fetchone()[0] == round(float(connection.settings_dict["OPTIONS"]["timeout"]) * 1000)


def test_it_gives_up_on_another_writer_after_the_busy_timeout(monkeypatch):
    monkeypatch.setitem(connection.settings_dict["OPTIONS"], "timeout", 0.2)
    holder = _WriterElsewhere()  # holds until released, after this writer gave up
    try:
        with pytest.raises(OperationalError, match="database is locked"), transaction.atomic():
            pass
    finally:
        holder.join()
    assert _is_free(_turn())
    with transaction.atomic():
        DrainSlot.objects.create(number=5)


def test_it_converts_placeholders_as_django_does_and_remembers_each_statement(monkeypatch):
    from core.perf.sqlite import base

    DrainSlot.objects.create(number=7, state="idle")
    monkeypatch.setattr(base, "_converted", {})
    sql = "SELECT number, '100%%' FROM tasks_drainslot WHERE number = %s AND state = %s"
    with connection.cursor() as cursor:
        for _ in range(2):
            cursor.execute(sql, [7, "idle"])
            assert cursor.fetchall() == [(7, "100%")]
        cursor.execute("SELECT %(n)s", {"n": 3})  # named parameters: converted, not remembered
        assert cursor.fetchone() == (3,)
    assert base._converted == {
        sql: "SELECT number, '100%' FROM tasks_drainslot WHERE number = ? AND state = ?"
    }


def test_it_stops_remembering_statements_at_its_bound(monkeypatch):
    from core.perf.sqlite import base

    monkeypatch.setattr(base, "_converted", {})
    monkeypatch.setattr(base, "_CONVERTED_MAX", 3)
    with connection.cursor() as cursor:
        for value in range(5):  # a value inlined into the SQL makes each statement new
            cursor.execute(f"SELECT {value}, %s", [value])
            assert cursor.fetchone() == (value, value)
    assert len(base._converted) == 3
