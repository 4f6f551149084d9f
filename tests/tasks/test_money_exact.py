"""Money is exact on every backend: integer minor units in the column (core.money), exact SQL on them.

Before: SQLite kept a DecimalField as a REAL (15 significant digits), so 123456789012.3456 was read back as
123456789012.3460, and `earnings = earnings + 0.0001` was a float addition.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from django.apps import apps
from django.db import connection, models, transaction
from django.db.models import Max, Min, Sum
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from agents.models import Agent
from agents.pricing import quote
from agents.services import agent_record_outcome
from core.money import MoneyField, from_minor_units, plain, to_minor_units
from ledger import entries
from ledger.models import Account, LedgerEntry
from ledger.services import fee
from tasks.models import Task
from tasks.services.lifecycle import Outcome, task_claim, task_complete, task_fail
from tasks.services.submission import TaskRequest, task_submit
from tests.factories import make_buyer

pytestmark = pytest.mark.django_db

FOUR = Decimal("0.0001")
# Large (up to ~1e12) and tiny (the smallest unit) amounts, and everything between, at 4 places.
large = st.decimals(min_value=Decimal("1e11"), max_value=Decimal("999999999999.9999"), places=4)
tiny = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("0.0100"), places=4)
amounts = st.one_of(large, tiny, st.decimals(min_value=Decimal("0"), max_value=Decimal("1e12"), places=4))
costs = st.one_of(
    st.decimals(min_value=Decimal("0"), max_value=Decimal("0.000001"), places=8),
    st.decimals(min_value=Decimal("0"), max_value=Decimal("92233720368.54775807"), places=8),
)
EXAMPLES = hsettings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _money_fields() -> list[tuple[type[models.Model], models.Field]]:
    return [
        (model, field)
        for model in apps.get_models()
        for field in model._meta.concrete_fields
        if isinstance(field, MoneyField)
    ]


def _raw(model: type[models.Model], field: models.Field, pk: object) -> object:
    quote_name = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {quote_name(field.column)} FROM {quote_name(model._meta.db_table)} "
            f"WHERE {quote_name(model._meta.pk.column)} = %s",
            [model._meta.pk.get_db_prep_value(pk, connection)],
        )
        return cursor.fetchone()[0]


def _in_savepoint(check):
    """Each example in its own savepoint, rolled back: examples never see each other's rows."""

    def run(*args, **kwargs):
        with transaction.atomic():
            try:
                check(*args, **kwargs)
            finally:
                transaction.set_rollback(True)

    return run


# --- the field --------------------------------------------------------------------------------------------


def test_it_stores_every_money_field_as_integer_minor_units():
    fields = _money_fields()
    assert {f"{model._meta.label}.{field.name}" for model, field in fields} >= {
        "tasks.Task.price",
        "tasks.Task.cost",
        "tasks.Account.balance",
        "tasks.LedgerEntry.amount",
        "agents.Agent.earnings",
        "users.User.daily_spend_cap",
        "duke.ServedTask.llm_cost_estimate",
    }
    for _, field in fields:
        assert field.db_type(connection) == connection.data_types["BigIntegerField"]


def test_it_reads_back_what_failed_to_round_trip_on_sqlite_before():
    # The reproduction: on SQLite's REAL this came back as 123456789012.3460.
    account = Account.objects.create(kind=Account.Kind.FUNDING, balance=Decimal("123456789012.3456"))
    account.refresh_from_db()
    assert account.balance == Decimal("123456789012.3456")
    assert _raw(Account, Account._meta.get_field("balance"), account.pk) == 1234567890123456


@given(amount=amounts, cost=costs)
@EXAMPLES
def test_it_round_trips_large_and_tiny_amounts_exactly(buyer, amount, cost):
    @_in_savepoint
    def check():
        agent = Agent.objects.create(
            name=f"rt-{uuid.uuid4().hex[:10]}", model="m", price_per_unit=amount, earnings=amount
        )
        task = Task.objects.create(
            buyer=buyer, description="d", complexity=1, agent=agent, price=amount, cost=cost
        )
        agent.refresh_from_db()
        task.refresh_from_db()
        assert (agent.price_per_unit, agent.earnings, task.price, task.cost) == (amount, amount, amount, cost)
        assert str(task.price) == plain(amount, 4) and plain(task.cost) == plain(cost, 8)
        assert _raw(Task, Task._meta.get_field("cost"), task.pk) == int(cost.scaleb(8))
        # Lookups compare minor units with minor units.
        assert Task.objects.filter(pk=task.pk, price=amount, cost=cost, price__gte=amount).exists()
        assert not Task.objects.filter(pk=task.pk, price__gt=amount).exists()
        values = Task.objects.filter(pk=task.pk).values_list("price", "cost").get()
        assert values == (amount, cost)

    check()


@given(start=amounts, steps=st.lists(st.one_of(large, tiny), min_size=1, max_size=8))
@EXAMPLES
def test_it_adds_earnings_exactly_with_f_expressions(default_agents, start, steps):
    @_in_savepoint
    def check():
        agent = Agent.objects.create(name=f"f-{uuid.uuid4().hex[:10]}", model="m", price_per_unit=FOUR)
        Agent.objects.filter(pk=agent.pk).update(earnings=start)
        for earned in steps:
            agent_record_outcome(agent_id=agent.pk, success=True, earned=earned)
        agent.refresh_from_db()
        assert agent.earnings == start + sum(steps, Decimal(0))
        assert agent.success_count == len(steps)

    check()


@given(parts=st.lists(st.one_of(large, tiny), min_size=1, max_size=20))
@EXAMPLES
def test_it_sums_money_exactly_in_sql(buyer, parts):
    @_in_savepoint
    def check():
        funding = entries.platform_account(kind=Account.Kind.FUNDING)
        target = entries.account_for_user(user_id=buyer.pk, kind=Account.Kind.BUYER)
        ids = entries.post_many(
            postings=[
                entries.Posting([entries.Leg(funding, -part, "credit"), entries.Leg(target, part, "credit")])
                for part in parts
            ]
        )
        rows = LedgerEntry.objects.filter(transaction_id__in=ids)
        total = sum(parts, Decimal(0))
        assert rows.filter(amount__gt=0).aggregate(s=Sum("amount"))["s"] == total
        assert rows.aggregate(s=Sum("amount"))["s"] == 0
        assert rows.aggregate(top=Max("amount"), low=Min("amount")) == {"top": max(parts), "low": -max(parts)}

    check()


def test_it_refuses_an_amount_beyond_what_a_bigint_holds():
    assert to_minor_units(Decimal("922337203685477.5807"), 4) == 2**63 - 1
    with pytest.raises(OverflowError):
        to_minor_units(Decimal("922337203685477.5808"), 4)
    assert from_minor_units(2**63 - 1, 4) == Decimal("922337203685477.5807")
    # PostgreSQL's SUM of a BIGINT is a numeric: whole numbers of minor units read back the same.
    assert from_minor_units(Decimal("1234567890123456"), 4) == Decimal("123456789012.3456")


@pytest.mark.parametrize(
    ("value", "places", "text"),
    [
        (Decimal("0E-8"), None, "0.00000000"),
        (Decimal("1E-8"), None, "0.00000001"),
        (Decimal("-0.0000"), None, "0.0000"),
        (Decimal("1E+3"), 4, "1000.0000"),
        (Decimal("123456789012.3456"), None, "123456789012.3456"),
        (None, 4, None),
    ],
)
def test_it_renders_money_as_plain_decimal_strings(value, places, text):
    assert plain(value, places) == text


# --- the ledger at large and tiny amounts -----------------------------------------------------------------


@given(
    unit_price=st.one_of(
        st.decimals(min_value=Decimal("1e9"), max_value=Decimal("1.5e10"), places=4),
        st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("0.0010"), places=4),
    ),
    plan=st.lists(
        st.tuples(st.integers(1, 10), st.booleans(), costs),
        min_size=1,
        max_size=6,
    ),
)
@EXAMPLES
def test_it_keeps_holds_payouts_and_refunds_exact_at_large_and_tiny_amounts(
    settings, default_agents, unit_price, plan
):
    settings.AICP_PLATFORM_FEE = Decimal("0.1")
    settings.AICP_DAILY_SPEND_CAP = None

    @_in_savepoint
    def check():
        buyer = make_buyer(f"big-{uuid.uuid4().hex[:10]}")
        agent = Agent.objects.create(name=f"ag-{uuid.uuid4().hex[:10]}", model="m", price_per_unit=unit_price)
        funding = entries.platform_account(kind=Account.Kind.FUNDING)
        available = entries.account_for_user(user_id=buyer.pk, kind=Account.Kind.BUYER)
        start = available.balance
        # Enough for 6 tasks at 10 x 1.1 x 1.5e10; beyond MAX_CREDIT: posted directly, as funding does.
        credit = Decimal("999999999999.9999")
        entries.post(legs=[entries.Leg(funding, -credit, "credit"), entries.Leg(available, credit, "credit")])
        spent = earned = Decimal(0)
        successes = failures = 0
        for complexity, succeeds, cost in plan:
            price = quote(
                price_per_unit=unit_price,
                complexity=complexity,
                success_count=successes,
                failure_count=failures,
            )
            task = task_submit(
                buyer=buyer, request=TaskRequest(description="d", complexity=complexity, agent=agent.name)
            )
            assert task.price == price
            assert task_claim(task_id=task.id) is not None
            if succeeds:
                assert task_complete(task_id=task.id, outcome=Outcome(result="r", cost=cost))
                spent += price
                earned += price - fee(price)
                successes += 1
            else:
                assert task_fail(task_id=task.id, error="boom")
                failures += 1
            task.refresh_from_db()
            assert task.price == price
            if succeeds:
                assert task.cost == cost

        escrow = entries.account_for_user(user_id=buyer.pk, kind=Account.Kind.ESCROW)
        agent_account = entries.account_for_agent(agent_id=agent.pk)
        available.refresh_from_db()
        escrow.refresh_from_db()
        agent.refresh_from_db()
        assert available.balance == start + credit - spent
        assert escrow.balance == 0
        assert agent_account.balance == earned == agent.earnings
        for account in (available, escrow, agent_account):
            assert (account.entries.aggregate(s=Sum("amount"))["s"] or 0) == account.balance
        assert LedgerEntry.objects.aggregate(s=Sum("amount"))["s"] == 0
        assert Task.objects.filter(buyer=buyer, status="completed").aggregate(s=Sum("price"))["s"] == (
            spent or None
        )

    check()
