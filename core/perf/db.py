"""Statements for what every submission does, without the ORM building them: writes, reads, counts.

Switch: none (the ledger and the submission path call these helpers directly; a switch would need a
second, ORM-built copy of each statement). Measured: preparing a task's row 22 us instead of 47 (commit
5742af8); the hold's writes as prepared statements took a submission from 5.7 to 2.0 ms in process
(commit d003261).

Building a statement costs the ORM 0.1-0.3 ms of Python on this machine, several times what SQLite
spends running it, and a submission writes a task, two ledger entries and two balances inside the one
write transaction that every other writer waits for. These helpers produce the statements the ORM
would (the same columns, each value prepared by its own field) and cache them by shape.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from django.db import DEFAULT_DB_ALIAS, connections, models, router
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.base.operations import BaseDatabaseOperations
from django.db.models import Field, Model
from django.utils import timezone

_inserts: dict[tuple[type[Model], str, int], str] = {}
_readers: dict[tuple[type[Model], str, tuple[str, ...]], tuple[list[str], list[tuple[list, object]]]] = {}
_updates: dict[tuple[type[Model], str, str], str] = {}


@dataclass(frozen=True)
class PreparedRow:
    """One object's INSERT values, prepared ahead of the write (its ``pre_save`` ran then)."""

    row: Model
    values: list[object]


@functools.cache
def _insert_fields(model: type[Model]) -> list[Field]:
    return [field for field in model._meta.concrete_fields if not field.db_returning]


_TEXT_FIELDS = (models.CharField, models.TextField, models.SlugField)
_INTEGER_FIELDS = (
    models.IntegerField,
    models.SmallIntegerField,
    models.BigIntegerField,
    models.PositiveIntegerField,
    models.PositiveSmallIntegerField,
    models.PositiveBigIntegerField,
    models.AutoField,
    models.SmallAutoField,
    models.BigAutoField,
)


def _kept_types(field: Field, connection: BaseDatabaseWrapper) -> frozenset[type]:
    """The value types ``field.get_db_prep_save`` returns unchanged on ``connection``: those can skip it.

    Only exact Django classes whose conversion chain was read for it (a subclass may convert), and
    integers only on a backend that sends them as they are (PostgreSQL's wraps them by column size).
    The rest go through the field as before; tests/core/perf/test_db_prep.py checks every model's fields.
    """
    kept: set[type] = set()
    is_foreign_key = isinstance(field, models.ForeignKey)
    if is_foreign_key or (field.null and not isinstance(field, models.JSONField)):
        kept.add(type(None))  # a foreign key sends None as NULL whether nullable or not, as Django does
    ops = type(connection.ops)
    sends_integers = (
        ops.adapt_integerfield_value is BaseDatabaseOperations.adapt_integerfield_value
        and ops.validate_autopk_value is BaseDatabaseOperations.validate_autopk_value
    )
    kind = type(field.target_field) if is_foreign_key else type(field)
    if kind in _TEXT_FIELDS and not is_foreign_key:  # "" is NULL for some targets: left to the field
        kept.add(str)
    elif kind is models.BooleanField:
        kept.add(bool)
    elif sends_integers and kind in _INTEGER_FIELDS:
        kept.add(int)
    return frozenset(kept)


@dataclass(frozen=True)
class _FieldPlan:
    field: Field
    reads_attribute: bool  # its pre_save is the attribute as it is
    kept: frozenset[type]

    def sent(self, value: object, connection: BaseDatabaseWrapper) -> object:
        """``field.get_db_prep_save(value)``, without the call for a value it keeps as it is."""
        return (
            value if type(value) in self.kept else self.field.get_db_prep_save(value, connection=connection)
        )


_plans: dict[tuple[type[Model], str], list[_FieldPlan]] = {}


def _reads_attribute(field: Field) -> bool:
    """Whether ``field.pre_save`` is the attribute as it is: a date's is, unless it stamps the save."""
    if type(field).pre_save is Field.pre_save:
        return True
    return type(field) in (models.DateField, models.DateTimeField) and not (
        field.auto_now or field.auto_now_add
    )


def _insert_plan(model: type[Model], connection: BaseDatabaseWrapper) -> list[_FieldPlan]:
    shape = (model, connection.alias)
    plan = _plans.get(shape)
    if plan is None:
        plan = [
            _FieldPlan(field, _reads_attribute(field), _kept_types(field, connection))
            for field in _insert_fields(model)
        ]
        _plans[shape] = plan
    return plan


def prepare_row(row: Model) -> PreparedRow:
    """The values ``insert_rows`` would send for ``row``, each prepared by its own field, computed now.

    For work that need not wait for the write lock: a caller prepares its rows before BEGIN. Fields set
    on save (``auto_now_add``) take this moment.
    """
    connection = connections[router.db_for_write(type(row))]
    return PreparedRow(row, _values(row, connection))


def _values(row: Model, connection: BaseDatabaseWrapper) -> list[object]:
    # Each field's get_db_prep_save(pre_save(row)), skipping the call for values it keeps as they are:
    # the calls were a fifth of a submission group's CPU while it held the write lock.
    values = []
    for plan in _insert_plan(type(row), connection):
        field = plan.field
        values.append(
            plan.sent(
                getattr(row, field.attname) if plan.reads_attribute else field.pre_save(row, True), connection
            )
        )
    return values


def insert_rows(rows: Sequence[Model | PreparedRow]) -> None:
    """INSERTs objects of one model in one statement, as ``bulk_create`` would: no ``save()``, no signals.

    Rows given as ``prepare_row``'s are sent with the values prepared then. Database-generated primary
    keys are not read back: for models whose key is set in Python (a UUID) or whose callers never read it.
    """
    if not rows:
        return
    objects = [row.row if isinstance(row, PreparedRow) else row for row in rows]
    model = type(objects[0])
    connection = connections[router.db_for_write(model)]
    _insert(
        model,
        [row.values if isinstance(row, PreparedRow) else _values(row, connection) for row in rows],
        connection,
    )
    for row in objects:
        row._state.adding = False
        row._state.db = connection.alias


def _insert(model: type[Model], rows: Sequence[Sequence[object]], connection: BaseDatabaseWrapper) -> None:
    """One INSERT of rows of prepared values in ``_insert_fields`` order; the statement cached by shape."""
    shape = (model, connection.alias, len(rows))
    if shape not in _inserts:
        fields = _insert_fields(model)
        columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
        values = ", ".join(["(" + ", ".join(["%s"] * len(fields)) + ")"] * len(rows))
        sql = f"INSERT INTO {connection.ops.quote_name(model._meta.db_table)} ({columns}) VALUES {values}"
        _inserts[shape] = sql
    with connection.cursor() as cursor:
        cursor.execute(_inserts[shape], [value for row in rows for value in row])


def insert_values(model: type[Model], rows: Sequence[dict[str, object]]) -> None:
    """``insert_rows`` for rows given as values by field attname, without building model instances.

    A missing value takes its field's default, or now for ``auto_now(_add)`` fields, as ``save()`` would.
    Building a model instance costs more Python than preparing its values, and a submission's two ledger
    entries were built inside the write transaction.
    """
    if not rows:
        return
    connection = connections[router.db_for_write(model)]
    plan = _insert_plan(model, connection)
    now = timezone.now()

    def value(field: Field, row: dict[str, object]) -> object:
        if field.attname in row:
            return row[field.attname]
        if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            return now
        return field.get_default()

    _insert(
        model,
        [[field_plan.sent(value(field_plan.field, row), connection) for field_plan in plan] for row in rows],
        connection,
    )


def fetch_models(model: type[Model], sql: str, params: Sequence[object]) -> list[Model]:
    """The rows of a SELECT of the model's own columns, as instances: what ``Model.objects.raw`` returns.

    Each column is converted by the backend's and its field's converters, exactly as the ORM reads it
    (SQLite's decimals become Decimal the same way), and the instance built by ``Model.from_db``; without
    RawQuerySet's per-query column mapping, which cost several times the query itself.
    """
    connection = connections[router.db_for_read(model)]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
        columns = tuple(column[0] for column in cursor.description)
    shape = (model, connection.alias, columns)
    if shape not in _readers:
        # In the model's field order, whatever the table's column order (``Model.from_db`` takes values in
        # field order; SQLite's AlterField rebuilds a table with the altered column last, so the columns
        # of ``SELECT *`` need not be in field order).
        position = {column: index for index, column in enumerate(columns)}
        fields = [field for field in model._meta.concrete_fields if field.column in position]
        converters = []
        for field in fields:
            expression = field.get_col(model._meta.db_table)
            converters.append(
                (
                    position[field.column],
                    connection.ops.get_db_converters(expression) + expression.get_db_converters(connection),
                    expression,
                )
            )
        _readers[shape] = ([field.attname for field in fields], converters)
    attnames, converters = _readers[shape]
    instances = []
    for row in rows:
        values = []
        for index, field_converters, expression in converters:
            value = row[index]
            for converter in field_converters:
                value = converter(value, expression, connection)
            values.append(value)
        instances.append(model.from_db(connection.alias, attnames, values))
    return instances


def update_field(model: type[Model], field_name: str, values: Iterable[tuple[object, object]]) -> None:
    """Sets one field of rows given by primary key: ``(pk, value)`` pairs, one prepared statement."""
    connection = connections[router.db_for_write(model)]
    field = model._meta.get_field(field_name)
    shape = (model, connection.alias, field_name)
    if shape not in _updates:
        quote = connection.ops.quote_name
        _updates[shape] = (
            f"UPDATE {quote(model._meta.db_table)} SET {quote(field.column)} = %s "
            f"WHERE {quote(model._meta.pk.column)} = %s"
        )
    params = [
        (
            field.get_db_prep_save(value, connection=connection),
            model._meta.pk.get_db_prep_save(pk, connection),
        )
        for pk, value in values
    ]
    with connection.cursor() as cursor:
        cursor.executemany(_updates[shape], params)


def _adapted(connection: object, params: Sequence[object]) -> list[object]:
    # Datetime parameters as the ORM adapts them for the backend (SQLite compares them as text).
    return [
        connection.ops.adapt_datetimefield_value(value) if isinstance(value, datetime) else value  # type: ignore[attr-defined]
        for value in params
    ]


def count_rows(model: type[Model], where: str, params: Sequence[object], *, limit: int | None = None) -> int:
    """How many of the model's rows match ``where`` (SQL over its columns, ``%s`` placeholders), counted
    up to ``limit`` when given.
    """
    connection = connections[router.db_for_read(model)]
    rows = f"SELECT 1 FROM {connection.ops.quote_name(model._meta.db_table)} WHERE {where}"
    values = _adapted(connection, params)
    if limit is not None:
        rows += " LIMIT %s"
        values.append(limit)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM ({rows}) AS matching", values)
        return cursor.fetchone()[0]


def count_rows_each(
    model: type[Model], column: str, keys: Sequence[int], where: str, params: Sequence[object], *, limit: int
) -> dict[int, int]:
    """``count_rows`` for each of several values of an integer ``column``, in one statement: for every
    key, its rows that match ``where`` too, counted up to ``limit``.
    """
    if not keys:
        return {}
    connection = connections[router.db_for_read(model)]
    quote = connection.ops.quote_name
    rows = f"SELECT 1 FROM {quote(model._meta.db_table)} WHERE {quote(column)} = %s AND ({where}) LIMIT %s"
    # The key is a parameter of its own subquery: PostgreSQL wants its type, SQLite takes it as it is.
    key_column = "CAST(%s AS BIGINT)" if connection.vendor == "postgresql" else "%s"
    one = f"SELECT {key_column}, (SELECT COUNT(*) FROM ({rows}) AS matching)"
    values = _adapted(connection, params)
    with connection.cursor() as cursor:
        cursor.execute(
            " UNION ALL ".join([one] * len(keys)),
            [value for key in keys for value in (key, key, *values, limit)],
        )
        return {key: count for key, count in cursor.fetchall()}


_process_connections: dict[str, BaseDatabaseWrapper] = {}
_process_connections_guard = threading.Lock()


@contextmanager
def process_connection(alias: str = DEFAULT_DB_ALIAS) -> Iterator[None]:
    """Runs the block on this process's one shared connection to ``alias`` instead of the thread's own.

    For writers that take turns, never two at once (group commit's leaders): every thread has its own
    connection, and on SQLite a connection re-reads the pages that other connections wrote since its
    last transaction, which made a group written by whichever thread leads 30% dearer per task than on
    one connection. The shared connection is checked as Django checks a thread's own at each request
    (closed when it errored or outlived CONN_MAX_AGE, reopened on use).
    """
    own = connections[alias]
    if own.in_atomic_block:  # the caller's transaction: its statements must stay in it
        yield
        return
    with _process_connections_guard:
        shared = _process_connections.get(alias)
        if shared is None:
            shared = connections.create_connection(alias)
            shared.inc_thread_sharing()
            _process_connections[alias] = shared
    shared.close_if_unusable_or_obsolete()
    connections[alias] = shared
    try:
        yield
    finally:
        connections[alias] = own


def close_process_connections() -> None:
    """Closes the shared connections (``process_connection``), e.g. before a test database is dropped."""
    with _process_connections_guard:
        for connection in _process_connections.values():
            connection.close()
        _process_connections.clear()
