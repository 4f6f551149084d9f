"""tasks 0006: two redundant single-column indexes dropped by name (no table copy), and put back."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from tasks.models import Task

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE, AFTER = ("tasks", "0005_drain_slots"), ("tasks", "0006_time_ordered_ids_fewer_indexes")


def _indexes() -> dict[str, list[str]]:
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, Task._meta.db_table)
    return {name: info["columns"] for name, info in constraints.items() if info["index"]}


def _single_column(columns: list[str]) -> list[str]:
    return [name for name, indexed in _indexes().items() if indexed == columns]


def _migrate(target: tuple[str, str]) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([target])


def _migrate_to_latest() -> None:
    """Back to every app's newest migration (not just AFTER: later migrations exist, and the tests that
    run after this one need their columns)."""
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())


def test_the_leading_columns_stay_indexed_by_the_composite_indexes_alone():
    assert _single_column(["buyer_id"]) == [] and _single_column(["status"]) == []
    composites = list(_indexes().values())
    assert ["buyer_id", "created_at"] in composites and ["status", "lease_until"] in composites


def _table_identity() -> object:
    """Changes when a migration copies the table into a new one (SQLite's AlterField does)."""
    table = Task._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT rootpage FROM sqlite_master WHERE type = 'table' AND name = %s", [table])
        else:
            cursor.execute("SELECT %s::regclass::oid", [table])
        return cursor.fetchone()[0]


def test_it_reverses_and_reapplies_without_copying_the_table():
    table = _table_identity()
    try:
        _migrate(BEFORE)
        # PostgreSQL also had a varchar_pattern_ops index on status (for LIKE), put back as well.
        status_indexes = 2 if connection.vendor == "postgresql" else 1
        assert len(_single_column(["buyer_id"])) == 1 and len(_single_column(["status"])) == status_indexes
    finally:
        _migrate(AFTER)
        _migrate_to_latest()
    assert _single_column(["buyer_id"]) == [] and _single_column(["status"]) == []
    assert _table_identity() == table
