"""core.perf.db skips a field's get_db_prep_save only for values that call would return unchanged."""

from __future__ import annotations

import pytest
from django.apps import apps
from django.db import connection, models

from agents.models import Agent
from core.perf.db import _insert_fields, _insert_plan, _kept_types, prepare_row
from tasks.models import Task

# Both passes: SQLite by default, PostgreSQL (whose backend converts integers) with AICP_TEST_POSTGRES.
pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

PROBES: list[object] = [None, "", "text", "ünïcode ✓", " padded ", "0", 0, 1, -7, 2**40, True, False]
PROJECT_APPS = ("users", "agents", "tasks", "duke")


def _project_fields() -> list[models.Field]:
    return [
        field
        for app in PROJECT_APPS
        for model in apps.get_app_config(app).get_models()
        for field in _insert_fields(model)
    ]


def test_every_value_kept_as_it_is_is_what_the_field_itself_would_send():
    checked = 0
    for field in _project_fields():
        kept = _kept_types(field, connection)
        for value in PROBES:
            if type(value) not in kept:
                continue
            sent = field.get_db_prep_save(value, connection=connection)
            assert sent == value and type(sent) is type(value), (field, value, sent)
            checked += 1
    assert checked > 100  # the rules do cover the text, integer, boolean and nullable fields


def test_it_keeps_text_integers_and_nulls_but_not_values_fields_convert():
    fields = {field.attname: field for field in _insert_fields(Task)}
    assert str in _kept_types(fields["description"], connection)
    assert type(None) in _kept_types(fields["executed_by_id"], connection)  # a nullable foreign key
    assert type(None) not in _kept_types(fields["description"], connection)  # NOT NULL: left to the field
    for converted in ("id", "price", "labels", "created_at"):  # UUID, Decimal, JSON, datetime
        assert not _kept_types(fields[converted], connection) - {type(None)}
    integers_sent_as_they_are = connection.vendor == "sqlite"  # psycopg wraps each by column size
    assert (int in _kept_types(fields["complexity"], connection)) is integers_sent_as_they_are
    assert (int in _kept_types(fields["buyer_id"], connection)) is integers_sent_as_they_are


def test_a_prepared_row_equals_what_each_field_would_prepare(buyer):
    task = Task(
        buyer=buyer,
        description="Classify: ünïcode ✓",
        complexity=3,
        labels=["a", "b"],
        agent=Agent.objects.get(name="openai-gpt-4o-mini"),
        price="0.0601",
        status=Task.Status.RUNNING,
    )
    prepared = prepare_row(task).values
    plan = _insert_plan(Task, connection)
    expected = [
        field.get_db_prep_save(field.pre_save(task, True), connection=connection)
        for field in _insert_fields(Task)
    ]
    for field_plan, ours, theirs in zip(plan, prepared, expected, strict=True):
        if field_plan.field.attname in ("created_at", "updated_at"):
            continue  # stamped at each pre_save
        assert _sent(ours) == _sent(theirs), field_plan.field.attname


def _sent(value: object) -> object:
    # psycopg's wrappers (Jsonb) compare by identity: compare what they wrap.
    if type(value).__eq__ is object.__eq__ and hasattr(value, "obj"):
        return type(value), value.obj
    return value
