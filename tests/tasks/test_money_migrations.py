"""The money migrations (core.money.DecimalToMoney): existing rows converted exactly, and back.

Rows are written by the models as they were before (DecimalField), the migrations run forward, and the
money fields read back the same amounts; then backward, and the old fields read them again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from agents.models import Agent
from duke.models import ServedTask
from ledger.models import Account, LedgerEntry
from tasks.models import Task
from users.models import User

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [
    ("tasks", "0010_llm_batches_schedule"),
    ("agents", "0003_rate_limits_and_breakers"),
    ("users", "0003_webhook_secret"),
    ("duke", "0004_version_trained_up_to"),
]
AFTER = [
    ("tasks", "0011_money_in_minor_units"),
    ("agents", "0004_money_in_minor_units"),
    ("users", "0004_money_in_minor_units"),
    ("duke", "0005_money_in_minor_units"),
]

# Up to 15 significant digits: what SQLite's REAL kept exactly. PostgreSQL's numeric keeps all 19.
FOUR_PLACES = [Decimal("0.0000"), Decimal("0.0001"), Decimal("100.0000"), Decimal("12345678901.2345")]
EIGHT_PLACES = [Decimal("0E-8"), Decimal("1E-8"), Decimal("0.00012345"), Decimal("1234567.12345678")]
BEYOND_REAL = Decimal("123456789012.3456")  # 16 digits: SQLite had already stored 123456789012.3460


def _executor() -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    return executor


def _migrate(targets: list[tuple[str, str]]):
    executor = _executor()
    executor.migrate(targets)
    return _executor().loader.project_state(targets).apps


def _raw(model, column: str, pk: object) -> object:
    quote = connection.ops.quote_name
    table, key = quote(model._meta.db_table), quote(model._meta.pk.column)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {quote(column)} FROM {table} WHERE {key} = %s",
            [model._meta.pk.get_db_prep_value(pk, connection)],
        )
        return cursor.fetchone()[0]


@pytest.fixture(autouse=True)
def _back_to_the_newest_migrations() -> Iterator[None]:
    """AFTER is the money migrations, not every app's newest: later migrations (a duke column, tasks'
    indexes) must be back for the tests that run after this module."""
    yield
    executor = _executor()
    executor.migrate(executor.loader.graph.leaf_nodes())


def test_it_converts_existing_money_rows_exactly_and_back():
    old = _migrate(BEFORE)
    try:
        users, agents = old.get_model("users", "User"), old.get_model("agents", "Agent")
        accounts, ledger = old.get_model("tasks", "Account"), old.get_model("tasks", "LedgerEntry")
        tasks, served = old.get_model("tasks", "Task"), old.get_model("duke", "ServedTask")
        written: list[tuple[type, str, object, Decimal]] = []
        pairs = zip([*FOUR_PLACES, BEYOND_REAL], [*EIGHT_PLACES, EIGHT_PLACES[-1]], strict=True)
        for index, (four, eight) in enumerate(pairs):
            user = users.objects.create(username=f"mig-{index}", daily_spend_cap=four)
            agent = agents.objects.create(
                name=f"mig-{index}",
                model="m",
                price_per_unit=four,
                prompt_token_price=four,
                completion_token_price=four,
                earnings=four,
            )
            account = accounts.objects.create(kind="buyer", user=user, balance=four)
            task = tasks.objects.create(
                id=uuid.uuid4(),
                buyer=user,
                description="d",
                complexity=1,
                agent=agent,
                price=four,
                cost=eight,
            )
            entry = ledger.objects.create(
                transaction_id=uuid.uuid4(), account=account, amount=-four, kind="credit", task=task
            )
            row = served.objects.create(
                task_id=task.id,
                model_version=1,
                label="x",
                confidence=0.5,
                price=four,
                llm_price=four,
                llm_cost_estimate=eight,
                audit_cost=eight,
                llm_agent="a",
            )
            for model, pk, names in [
                (User, user.pk, ["daily_spend_cap"]),
                (
                    Agent,
                    agent.pk,
                    ["price_per_unit", "prompt_token_price", "completion_token_price", "earnings"],
                ),
                (Account, account.pk, ["balance"]),
                (Task, task.pk, ["price", "cost"]),
                (LedgerEntry, entry.pk, ["amount"]),
                (ServedTask, row.pk, ["price", "llm_price", "llm_cost_estimate", "audit_cost"]),
            ]:
                stored = old.get_model(model._meta.app_label, model._meta.model_name).objects.get(pk=pk)
                written += [(model, name, pk, getattr(stored, name)) for name in names]
        # What the old field read back: on SQLite the 16-digit amount had drifted (a REAL read through a
        # 15-digit context), though the double itself still held the decimal it was written from.
        old_reads = {(model, name, pk): value for model, name, pk, value in written}
        old_big = old_reads[(Account, "balance", account.pk)]
        sqlite_read = Decimal("123456789012.3460")
        assert old_big == (BEYOND_REAL if connection.vendor == "postgresql" else sqlite_read)
    except BaseException:
        _migrate(AFTER)
        raise

    _migrate(AFTER)
    for model, name, pk, value in written:
        field = model._meta.get_field(name)
        # The amount as written, on both backends: up to 15 digits always (a REAL keeps them), and this
        # 16-digit one too (its double's shortest repr is the decimal it was written from).
        expected = BEYOND_REAL.copy_sign(value) if abs(value) == old_big else value
        assert getattr(model.objects.get(pk=pk), name) == expected, (model, name, value)
        assert _raw(model, field.column, pk) == int(expected.scaleb(field.decimal_places)), (model, name)

    old = _migrate(BEFORE)
    try:
        for model, name, pk, value in written:
            historical = old.get_model(model._meta.app_label, model._meta.model_name)
            assert getattr(historical.objects.get(pk=pk), name) == value, (model, name, value)
    finally:
        _migrate(AFTER)
