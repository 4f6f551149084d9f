"""core.perf.sqlite: one process's write transactions take turns on a mutex, freed however they end."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from django.db import OperationalError, connection, connections, transaction

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


def _hold_write_lock_elsewhere(seconds: float) -> threading.Thread:
    """Another process's writer, as SQLite sees it: its own connection holding the write lock."""
    path = str(connection.settings_dict["NAME"])
    started = threading.Event()

    def hold() -> None:
        other = sqlite3.connect(path, timeout=5, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        started.set()
        time.sleep(seconds)
        other.execute("COMMIT")
        other.close()

    thread = threading.Thread(target=hold)
    thread.start()
    started.wait(5)
    return thread


def test_it_waits_for_another_writer_then_begins():
    holder = _hold_write_lock_elsewhere(0.3)
    started = time.monotonic()
    with transaction.atomic():
        DrainSlot.objects.create(number=4)
    waited = time.monotonic() - started
    holder.join()
    assert waited >= 0.25
    assert DrainSlot.objects.filter(number=4).exists()
    # SQLite's own busy timeout is back for statements outside transactions.
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA busy_timeout")
        assert cursor.fetchone()[0] == round(float(connection.settings_dict["OPTIONS"]["timeout"]) * 1000)


def test_it_gives_up_on_another_writer_after_the_busy_timeout(monkeypatch):
    monkeypatch.setitem(connection.settings_dict["OPTIONS"], "timeout", 0.2)
    holder = _hold_write_lock_elsewhere(1.0)
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
