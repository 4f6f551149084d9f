"""The statements POST /tasks writes without the ORM building them, and its submit limit, counted."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.utils import timezone
from rest_framework.throttling import SimpleRateThrottle

from agents.models import Agent
from core.perf.db import fetch_models, insert_rows, insert_values, prepare_row, update_field
from ledger.models import Account, LedgerEntry
from tasks.models import DrainSlot, Task
from tasks.selectors import buyer_submission_counts, drain_slots_busy
from tests.factories import DEFAULT_PASSWORD, authenticated_client, make_buyer

pytestmark = pytest.mark.django_db

STAMPS = ("created_at", "updated_at")
TASK_FIELDS = [f.attname for f in Task._meta.concrete_fields if f.attname not in ("id", *STAMPS)]


def _task(buyer, agent: Agent, **overrides) -> Task:
    fields = {
        "buyer": buyer,
        "description": "Classify: ünïcode ✓ and 'quotes'",
        "complexity": 3,
        "task_type": "sentiment",
        "labels": ["positive", "negative"],
        "requested_agent": "auto",
        "agent": agent,
        "price": Decimal("0.0601"),
    }
    return Task(**(fields | overrides))


def test_it_inserts_a_task_exactly_as_the_orm_would(buyer):
    agent = Agent.objects.get(name="openai-gpt-4o-mini")
    by_orm = _task(buyer, agent)
    by_orm.save()
    by_statement = _task(buyer, agent)
    insert_rows([by_statement])

    assert not by_statement._state.adding
    orm_row = Task.objects.filter(pk=by_orm.pk).values(*TASK_FIELDS).get()
    statement_row = Task.objects.filter(pk=by_statement.pk).values(*TASK_FIELDS).get()
    assert statement_row == orm_row
    assert statement_row["labels"] == ["positive", "negative"]
    assert statement_row["price"] == Decimal("0.0601")
    reread = Task.objects.get(pk=by_statement.pk)
    for stamp in STAMPS:  # auto_now(_add) applied, as save() would
        assert abs(getattr(reread, stamp) - timezone.now()) < timedelta(seconds=5)
        assert getattr(reread, stamp) == getattr(by_statement, stamp)


def test_it_inserts_several_rows_in_one_statement_and_nulls_stay_null(buyer, django_assert_num_queries):
    agent = Agent.objects.get(name="openai-gpt-4o-mini")
    task = _task(buyer, agent, labels=None, task_type="")
    insert_rows([task])
    account = Account.objects.get(user=buyer, kind=Account.Kind.BUYER)
    transaction_id = uuid.uuid4()
    entries = [
        LedgerEntry(transaction_id=transaction_id, account=account, amount=Decimal("-0.0100"), kind="hold"),
        LedgerEntry(transaction_id=transaction_id, account=account, amount=Decimal("0.0100"), kind="hold"),
    ]
    with django_assert_num_queries(1):
        insert_rows(entries)
    assert Task.objects.get(pk=task.pk).labels is None
    stored = list(LedgerEntry.objects.filter(transaction_id=transaction_id).order_by("amount"))
    assert [e.amount for e in stored] == [Decimal("-0.0100"), Decimal("0.0100")]
    assert all(e.task_id is None and e.memo == "" and e.created_at is not None for e in stored)


def test_a_row_prepared_before_the_write_is_inserted_with_the_values_of_that_moment(buyer):
    agent = Agent.objects.get(name="openai-gpt-4o-mini")
    by_orm = _task(buyer, agent)
    by_orm.save()
    prepared = prepare_row(_task(buyer, agent))
    stamped_at = prepared.row.created_at  # auto_now_add ran when it was prepared
    assert stamped_at is not None and not Task.objects.filter(pk=prepared.row.pk).exists()

    insert_rows([prepared, _task(buyer, agent, complexity=4)])  # prepared and unprepared, one statement

    orm_row = Task.objects.filter(pk=by_orm.pk).values(*TASK_FIELDS).get()
    assert Task.objects.filter(pk=prepared.row.pk).values(*TASK_FIELDS).get() == orm_row
    assert Task.objects.get(pk=prepared.row.pk).created_at == stamped_at
    assert not prepared.row._state.adding
    assert Task.objects.filter(buyer=buyer, complexity=4).count() == 1


def test_it_inserts_rows_given_as_values_exactly_as_the_orm_would(buyer, django_assert_num_queries):
    account = Account.objects.get(user=buyer, kind=Account.Kind.BUYER)
    agent = Agent.objects.get(name="openai-gpt-4o-mini")
    task = _task(buyer, agent)
    task.save()
    transaction_id = uuid.uuid4()
    by_orm = LedgerEntry.objects.create(
        transaction_id=transaction_id,
        account=account,
        amount=Decimal("-0.0601"),
        kind="fee",
        task=task,
        memo="hold ✓",
    )
    with django_assert_num_queries(1):
        insert_values(
            LedgerEntry,
            [
                {
                    "transaction_id": transaction_id,
                    "account_id": account.pk,
                    "amount": Decimal("-0.0601"),
                    "kind": "fee",
                    "task_id": task.pk,
                    "memo": "hold ✓",
                },
                {
                    "transaction_id": transaction_id,
                    "account_id": account.pk,
                    "amount": Decimal("0.0601"),
                    "kind": "release",
                },  # task and memo left out: their defaults, as save() would
            ],
        )

    columns = [f.attname for f in LedgerEntry._meta.concrete_fields if f.attname not in ("id", "created_at")]
    rows = list(LedgerEntry.objects.filter(transaction_id=transaction_id).order_by("id").values(*columns))
    assert rows[1] == rows[0] == LedgerEntry.objects.filter(pk=by_orm.pk).values(*columns).get()
    assert rows[2] | {"amount": Decimal("-0.0601"), "kind": "fee"} == rows[0] | {"task_id": None, "memo": ""}
    created = LedgerEntry.objects.filter(transaction_id=transaction_id).exclude(pk=by_orm.pk)
    assert all(abs(entry.created_at - timezone.now()) < timedelta(seconds=5) for entry in created)


def test_it_updates_one_field_of_several_rows_by_key(buyer, other_buyer):
    mine = Account.objects.get(user=buyer, kind=Account.Kind.BUYER)
    theirs = Account.objects.get(user=other_buyer, kind=Account.Kind.BUYER)
    untouched = Account.objects.get(user=buyer, kind=Account.Kind.ESCROW)
    update_field(Account, "balance", [(mine.pk, Decimal("12.3456")), (theirs.pk, Decimal("0.0001"))])
    balances = dict(Account.objects.values_list("pk", "balance"))
    assert balances[mine.pk] == Decimal("12.3456")
    assert balances[theirs.pk] == Decimal("0.0001")
    assert balances[untouched.pk] == untouched.balance


def _field_values(instance) -> dict:
    return {f.attname: getattr(instance, f.attname) for f in type(instance)._meta.concrete_fields}


def test_it_reads_rows_into_instances_exactly_as_the_orm_would(buyer):
    Account.objects.filter(user=buyer, kind=Account.Kind.BUYER).update(balance=Decimal("12.3456"))
    accounts = fetch_models(Account, 'SELECT id, kind, user_id, agent_id, balance FROM "tasks_account"', [])
    assert accounts, "there are accounts to read"
    by_orm = {a.pk: a for a in Account.objects.only("id", "kind", "user_id", "agent_id", "balance")}
    for account in accounts:
        expected = by_orm[account.pk]
        for name in ("id", "kind", "user_id", "agent_id", "balance"):
            assert getattr(account, name) == getattr(expected, name)
            assert type(getattr(account, name)) is type(getattr(expected, name))
        assert not account._state.adding and account._state.db == "default"
    mine = next(a for a in accounts if a.user_id == buyer.pk and a.kind == Account.Kind.BUYER)
    assert mine.balance == Decimal("12.3456") and isinstance(mine.balance, Decimal)

    agent = Agent.objects.get(name="openai-gpt-4o-mini")
    (read,) = fetch_models(Agent, 'SELECT * FROM "agents_agent" WHERE name = %s', [agent.name])
    assert _field_values(read) == _field_values(agent)
    assert {name: type(value) for name, value in _field_values(read).items()} == {
        name: type(value) for name, value in _field_values(agent).items()
    }
    assert fetch_models(Agent, 'SELECT * FROM "agents_agent" WHERE name = %s', ["nobody"]) == []


def test_it_counts_each_buyers_submissions_in_the_window_up_to_the_limit(buyer, other_buyer):
    agent = Agent.objects.get(name="openai-gpt-4o-mini")
    insert_rows([_task(buyer, agent) for _ in range(5)] + [_task(other_buyer, agent)])
    old = _task(buyer, agent)
    insert_rows([old])
    Task.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    since = timezone.now() - timedelta(minutes=1)
    nobody = other_buyer.pk + 1000
    both = [buyer.pk, other_buyer.pk, nobody]
    assert buyer_submission_counts(user_ids=both, since=since, limit=100) == {
        buyer.pk: 5,
        other_buyer.pk: 1,
        nobody: 0,
    }
    assert buyer_submission_counts(user_ids=both, since=since, limit=3) == {
        buyer.pk: 3,
        other_buyer.pk: 1,
        nobody: 0,
    }
    assert buyer_submission_counts(user_ids=[other_buyer.pk], since=since, limit=1) == {other_buyer.pk: 1}
    assert buyer_submission_counts(user_ids=[], since=since, limit=1) == {}


def test_it_counts_only_drain_slots_with_a_live_lease():
    now = timezone.now()
    DrainSlot.objects.bulk_create(
        [
            DrainSlot(number=0, lease_until=now + timedelta(seconds=30), state=DrainSlot.State.RUNNING),
            DrainSlot(number=1, lease_until=now - timedelta(seconds=1), state=DrainSlot.State.RUNNING),
            DrainSlot(number=2),
            DrainSlot(number=3, lease_until=now + timedelta(seconds=30), state=DrainSlot.State.QUEUED),
        ]
    )
    assert drain_slots_busy(slots=3, now=now) == 1  # slot 3 is beyond the configured three
    assert drain_slots_busy(slots=4, now=now) == 2


# --- the submit throttle -----------------------------------------------------------------------------


@pytest.fixture
def submit_rate(monkeypatch):
    cache.clear()

    def set_rate(rate: str) -> None:
        monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "submit", rate)

    return set_rate


BODY = {"description": "Summarise this.", "complexity": 1}


def test_it_counts_created_tasks_and_says_when_the_oldest_leaves_the_window(buyer, buyer_client, submit_rate):
    submit_rate("2/minute")
    first = buyer_client.post("/tasks", BODY, format="json")
    assert first.status_code == 201
    # The first task is 40 s old: the window frees a place in about 20 s, and Retry-After says so.
    Task.objects.filter(pk=first.json()["id"]).update(created_at=timezone.now() - timedelta(seconds=40))
    assert buyer_client.post("/tasks", BODY, format="json").status_code == 201
    refused = buyer_client.post("/tasks", BODY, format="json")
    assert refused.status_code == 429
    assert 19 <= int(refused["Retry-After"]) <= 21
    assert Task.objects.filter(buyer=buyer).count() == 2

    Task.objects.filter(pk=first.json()["id"]).update(created_at=timezone.now() - timedelta(seconds=61))
    assert buyer_client.post("/tasks", BODY, format="json").status_code == 201


def test_it_does_not_count_refused_submissions_or_idempotent_replays(db, default_agents, submit_rate):
    submit_rate("2/minute")
    poor = make_buyer("poor-buyer", password=DEFAULT_PASSWORD)
    Account.objects.filter(user=poor, kind=Account.Kind.BUYER).update(balance=Decimal("0.0150"))
    client = authenticated_client(poor)
    # 0.02 each: more than the balance, so nothing is created, however often it is asked.
    for _ in range(3):
        assert client.post("/tasks", BODY, format="json").status_code == 402
    Account.objects.filter(user=poor, kind=Account.Kind.BUYER).update(balance=Decimal("10"))
    keyed = client.post("/tasks", BODY, format="json", HTTP_IDEMPOTENCY_KEY="order-1")
    assert keyed.status_code == 201
    for _ in range(3):
        replay = client.post("/tasks", BODY, format="json", HTTP_IDEMPOTENCY_KEY="order-1")
        assert replay.status_code == 201 and replay["Idempotent-Replayed"] == "true"
    assert client.post("/tasks", BODY, format="json").status_code == 201
    assert client.post("/tasks", BODY, format="json").status_code == 429
