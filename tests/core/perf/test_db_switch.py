"""AICP_PERF_RAW_SQL off: core.perf.db's helpers go through the ORM, with the same rows and answers.

Every test of the raw statements (tests/tasks/services/test_submission_hot_path.py) runs again here with
the switch off; the last two show that the switch is read (off, the ORM's twins take a statement per
row or key where the raw path takes one).
"""

from decimal import Decimal

import pytest

from agents.models import Agent
from core.perf.db import count_rows_each, insert_rows, prepare_row, update_field
from ledger.models import Account
from tasks.models import Task
from tests.tasks.services.test_submission_hot_path import *  # noqa: F403  (the same tests, switch off)
from tests.tasks.services.test_submission_hot_path import TASK_FIELDS, _task

# Preparing a row ahead of the write (its values and stamps of that moment) is the trick itself: off, the
# ORM stamps the row when it inserts it. The test below checks the rest of that test's claims.
del test_a_row_prepared_before_the_write_is_inserted_with_the_values_of_that_moment  # noqa: F821


@pytest.fixture(autouse=True)
def _raw_sql_off(settings):
    settings.AICP_PERF_RAW_SQL = False


@pytest.mark.django_db
def test_switched_off_a_prepared_row_is_inserted_as_the_orm_would(buyer):
    agent = Agent.objects.get(name="openai-gpt-4o-mini")
    by_orm = _task(buyer, agent)
    by_orm.save()
    prepared = prepare_row(_task(buyer, agent))
    assert not Task.objects.filter(pk=prepared.row.pk).exists()
    insert_rows([prepared, _task(buyer, agent, complexity=4)])
    orm_row = Task.objects.filter(pk=by_orm.pk).values(*TASK_FIELDS).get()
    assert Task.objects.filter(pk=prepared.row.pk).values(*TASK_FIELDS).get() == orm_row
    assert Task.objects.get(pk=prepared.row.pk).created_at is not None
    assert not prepared.row._state.adding
    assert Task.objects.filter(buyer=buyer, complexity=4).count() == 1


@pytest.mark.django_db
def test_switched_off_it_updates_through_the_orm_a_statement_per_row(
    buyer, other_buyer, django_assert_num_queries
):
    mine = Account.objects.get(user=buyer, kind=Account.Kind.BUYER)
    theirs = Account.objects.get(user=other_buyer, kind=Account.Kind.BUYER)
    with django_assert_num_queries(2):
        update_field(Account, "balance", [(mine.pk, Decimal("1.5")), (theirs.pk, Decimal("2.5"))])
    assert Account.objects.get(pk=mine.pk).balance == Decimal("1.5")
    assert Account.objects.get(pk=theirs.pk).balance == Decimal("2.5")


@pytest.mark.django_db
def test_switched_off_it_counts_through_the_orm_a_statement_per_key(
    buyer, other_buyer, django_assert_num_queries
):
    with django_assert_num_queries(2):
        counts = count_rows_each(
            Task, "buyer_id", [buyer.pk, other_buyer.pk], "complexity >= %s", [0], limit=10
        )
    assert counts == {buyer.pk: 0, other_buyer.pk: 0}
