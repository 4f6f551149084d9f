"""`manage.py backup` copies the SQLite database consistently while tasks keep being submitted."""

from __future__ import annotations

import sqlite3
import threading
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, connections

from tests.factories import make_buyer, submit

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def _ledger_is_consistent(path) -> dict[str, int]:
    """A torn copy shows up here: a transaction's legs not summing to zero, or a cached balance that is
    not the sum of its entries, or a task without its hold."""
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        unbalanced = db.execute(
            "SELECT transaction_id FROM tasks_ledgerentry GROUP BY transaction_id "
            "HAVING SUM(CAST(amount AS REAL)) > 0.00001 OR SUM(CAST(amount AS REAL)) < -0.00001"
        ).fetchall()
        assert unbalanced == []
        rows = db.execute(
            "SELECT a.id, a.balance, COALESCE((SELECT GROUP_CONCAT(e.amount, ' ') FROM tasks_ledgerentry e "
            "WHERE e.account_id = a.id), '') FROM tasks_account a"
        ).fetchall()
        for account_id, balance, amounts in rows:
            total = sum((Decimal(str(amount)) for amount in amounts.split()), Decimal(0))
            assert Decimal(str(balance)) == total, account_id
        holdless = db.execute(
            "SELECT COUNT(*) FROM tasks_task t WHERE NOT EXISTS (SELECT 1 FROM tasks_ledgerentry e "
            "WHERE e.task_id = t.id AND e.kind = 'hold')"
        ).fetchone()[0]
        assert holdless == 0
        return {
            "tasks": db.execute("SELECT COUNT(*) FROM tasks_task").fetchone()[0],
            "entries": db.execute("SELECT COUNT(*) FROM tasks_ledgerentry").fetchone()[0],
        }
    finally:
        db.close()


def test_it_backs_up_a_consistent_copy_while_tasks_are_submitted(tmp_path, monkeypatch):
    if connection.vendor != "sqlite":
        pytest.skip("the backup command is for SQLite; PostgreSQL has pg_dump")
    monkeypatch.setattr("tasks.queue.enqueue_execution", lambda *args, **kwargs: None)
    monkeypatch.setattr("tasks.queue.enqueue_executions", lambda task_ids: None)
    buyer = make_buyer("busy-buyer")
    stop = threading.Event()
    submitted: list[int] = []

    def keep_submitting() -> None:
        try:
            while not stop.is_set():
                submit(buyer, f"written during the backup {len(submitted)}")
                submitted.append(1)
        finally:
            connections.close_all()

    writer = threading.Thread(target=keep_submitting)
    writer.start()
    try:
        copies = []
        for i in range(3):
            path = tmp_path / f"backup-{i}.sqlite3"
            call_command("backup", str(path))
            copies.append(_ledger_is_consistent(path))
    finally:
        stop.set()
        writer.join(timeout=60)

    assert len(submitted) > 0, "the writer never got a transaction in"
    assert copies[-1]["tasks"] >= copies[0]["tasks"]
    assert all(copy["entries"] >= 2 for copy in copies)  # the signup credit at least


def test_it_writes_to_the_data_directory_by_default(settings):
    if connection.vendor != "sqlite":
        pytest.skip("the backup command is for SQLite")
    call_command("backup")
    backups = list((settings.DATA_DIR / "backups").glob("aicp-*.sqlite3"))
    assert backups and _ledger_is_consistent(max(backups))


def test_it_refuses_postgresql_and_points_to_pg_dump():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL")
    with pytest.raises(CommandError, match="pg_dump"):
        call_command("backup")
