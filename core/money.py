"""Money stored exactly on every backend, and rendered as plain decimal strings.

``MoneyField`` is a ``DecimalField`` to Python, forms, DRF and the admin (a ``Decimal`` with its
``max_digits`` and ``decimal_places``), but its column is a BIGINT of minor units (the amount times
10**decimal_places) on every backend. SQLite has no decimal type: a ``DecimalField`` there is a REAL, kept
to 15 significant digits (123456789012.3456 read back as 123456789012.3460) and summed or updated with
``F()`` as binary floats. Integers are exact on SQLite and PostgreSQL alike, and so is SQL on them:
``Sum("amount")``, ``Max``, comparisons and ``F(field) + money_value(field, amount)``.

Rules that follow from the column holding minor units:

- A value that goes into SQL next to a money column is prepared by that column's field (a lookup or a
  ``save`` does this; in an expression use ``money_value``), never as a bare ``Decimal``.
- SQL arithmetic only between money columns of the same ``decimal_places`` (a 4-place price minus an
  8-place cost would mix scales): do mixed arithmetic in Python.
- No ``Avg`` on money in SQL, and no ``output_field=DecimalField()`` over a money column: the field that
  reads the column back is the money field itself (``Model._meta.get_field(name)``).

Range: a BIGINT holds 9,223,372,036,854,775,807 minor units: 922,337,203,685,477.5807 at 4 places and
92,233,720,368.54775807 at 8. A value beyond it is refused with ``OverflowError`` before it reaches SQL.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any

from django.db import migrations, models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import F, Value
from django.db.models.expressions import CombinedExpression

BIGINT_MAX = 2**63 - 1


def plain(value: Decimal | int | str | None, places: int | None = None) -> str | None:
    """``value`` as a plain decimal string (never ``0E-8``), to ``places`` decimal places when given."""
    if value is None:
        return None
    amount = value if isinstance(value, Decimal) else Decimal(str(value))
    if places is not None:
        amount = amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
    text = format(amount, "f")
    return "0" + text[2:] if text.startswith("-0") and amount.is_zero() else text


def to_minor_units(value: Decimal, places: int) -> int:
    """``value`` in minor units (rounded half-even to ``places``, as the databases round a DecimalField)."""
    if not value.is_finite():
        raise ValueError(f"{value!r} is not a finite amount")
    context = Context(prec=60, rounding=ROUND_HALF_EVEN)
    minor = value.scaleb(places, context=context).to_integral_value(rounding=ROUND_HALF_EVEN, context=context)
    units = int(minor)
    if abs(units) > BIGINT_MAX:
        raise OverflowError(f"{value} is beyond what a money column holds at {places} places")
    return units


def from_minor_units(units: int | Decimal, places: int) -> Decimal:
    """Minor units (an int; PostgreSQL's SUM of a BIGINT is a numeric) as a Decimal with ``places``."""
    if isinstance(units, Decimal):
        if units != units.to_integral_value():
            raise ValueError(f"{units!r} is not a whole number of minor units")
        units = int(units)
    elif isinstance(units, float):
        # SQLite turns an integer SUM that overflowed into a REAL only with total(); SUM() raises. A float
        # here means a value that was never written by this field: refuse it rather than guess.
        raise TypeError(f"money column holds a float {units!r}: run the money migrations")
    return Decimal(units).scaleb(-places)


class MoneyField(models.DecimalField):
    """A ``DecimalField`` whose column is a BIGINT of minor units on every backend (see the module)."""

    description = "Money (exact: integer minor units)"

    def db_type(self, connection: BaseDatabaseWrapper) -> str:
        return connection.data_types["BigIntegerField"]

    def rel_db_type(self, connection: BaseDatabaseWrapper) -> str:
        return self.db_type(connection)

    def cast_db_type(self, connection: BaseDatabaseWrapper) -> str:
        return self.db_type(connection)

    def get_internal_type(self) -> str:
        # What backends key their converters and casts on: the column is an integer. (SQLite's decimal
        # converter would otherwise read the integer back through a 15-digit float context.)
        return "BigIntegerField"

    def get_db_prep_value(self, value: Any, connection: BaseDatabaseWrapper, prepared: bool = False) -> Any:
        if not prepared:
            value = self.get_prep_value(value)
        if value is None or hasattr(value, "as_sql"):
            return value
        if not isinstance(value, Decimal):
            value = self.to_python(value)
        return to_minor_units(value, self.decimal_places)

    def from_db_value(self, value: Any, expression: Any, connection: BaseDatabaseWrapper) -> Decimal | None:
        if value is None:
            return None
        return from_minor_units(value, self.decimal_places)


def money_value(field: models.Field, amount: Decimal) -> Value:
    """``amount`` as an SQL parameter prepared by money ``field`` (minor units), for ``F()`` arithmetic."""
    return Value(amount, output_field=field)


def money_add(model: type[models.Model], name: str, amount: Decimal) -> CombinedExpression:
    """``F(name) + amount``, exact: an integer addition of minor units on every backend."""
    return F(name) + money_value(model._meta.get_field(name), amount)


class DecimalToMoney(migrations.AlterField):
    """AlterField from a ``DecimalField`` to a ``MoneyField`` that converts every existing row exactly.

    PostgreSQL: one ``ALTER COLUMN … TYPE bigint USING round(column * 10^places)`` (numeric is exact).
    SQLite: the table is rebuilt with the integer column (Django's AlterField), then every value is read
    as stored and rewritten in minor units: an INTEGER as it is, a REAL through its shortest repr (the
    decimal it was written from, for every value of up to 15 significant digits; a value that had
    already drifted keeps its drift, rounded to the field's places), a TEXT as the decimal it spells.
    Reversible the same way.
    """

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        self._convert(app_label, schema_editor, from_state, to_state, forwards=True)

    def database_backwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        self._convert(app_label, schema_editor, from_state, to_state, forwards=False)

    def describe(self) -> str:
        return f"Store {self.model_name}.{self.name} as exact money (integer minor units)"

    @property
    def migration_name_fragment(self) -> str:
        return f"{self.model_name_lower}_{self.name_lower}_money"

    def _convert(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any, *, forwards: bool
    ) -> None:
        to_model = to_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, to_model):
            return
        from_model = from_state.apps.get_model(app_label, self.model_name)
        money = (to_model if forwards else from_model)._meta.get_field(self.name)
        decimal = (from_model if forwards else to_model)._meta.get_field(self.name)
        connection = schema_editor.connection
        quote = schema_editor.quote_name
        table, column = quote(to_model._meta.db_table), quote(money.column)
        scale = 10**money.decimal_places
        if connection.vendor == "postgresql":
            if forwards:
                using = f"round({column} * {scale})::bigint"
                sql = f"ALTER TABLE {table} ALTER COLUMN {column} TYPE bigint USING {using}"
            else:
                number = decimal.db_type(connection)
                using = f"({column}::numeric / {scale})"
                sql = f"ALTER TABLE {table} ALTER COLUMN {column} TYPE {number} USING {using}"
            schema_editor.execute(sql)
            return
        # Both ways AlterField's own table rebuild from the one state's field to the other's (its
        # database_backwards would call this class's database_forwards).
        migrations.AlterField.database_forwards(self, app_label, schema_editor, from_state, to_state)
        pk = quote(to_model._meta.pk.column)
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {pk}, {column} FROM {table} WHERE {column} IS NOT NULL")
            rows = cursor.fetchall()
            if forwards:
                changes = [
                    (to_minor_units(_stored_decimal(value), money.decimal_places), key) for key, value in rows
                ]
            else:
                changes = [
                    (plain(from_minor_units(int(value), money.decimal_places)), key) for key, value in rows
                ]
            cursor.executemany(f"UPDATE {table} SET {column} = %s WHERE {pk} = %s", changes)


def _stored_decimal(value: int | float | str | Decimal) -> Decimal:
    """What a DecimalField column held, as the decimal it was written from (see DecimalToMoney)."""
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(str(value)) if not isinstance(value, Decimal) else value
