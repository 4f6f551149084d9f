"""Submissions written in groups (group commit): each decided as if alone, the money exact, none lost."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from unittest import mock

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core.exceptions import InsufficientFunds, NotFound, SpendCapExceeded, SubmitRateExceeded
from ledger.models import Account, LedgerEntry
from tasks.models import Task
from tasks.services import submission as services
from tasks.services.limits import SubmitLimit
from tasks.services.submission import Submission, TaskRequest, task_submit, task_submit_many
from tests.factories import make_buyer

pytestmark = pytest.mark.django_db

SUMMARY = TaskRequest(description="Summarise this.", complexity=1)  # quoted 0.0200 by the default agent


def _balances(user) -> tuple[Decimal, Decimal]:
    accounts = {a.kind: a.balance for a in Account.objects.filter(user=user)}
    return accounts[Account.Kind.BUYER], accounts[Account.Kind.ESCROW]


def _set_available(user, amount: str) -> None:
    Account.objects.filter(user=user, kind=Account.Kind.BUYER).update(balance=Decimal(amount))


def test_each_submission_in_a_group_is_decided_on_what_the_ones_before_it_left(
    buyer, other_buyer, django_capture_on_commit_callbacks
):
    _set_available(buyer, "0.0300")  # enough for one 0.0200 task, not two
    with django_capture_on_commit_callbacks() as callbacks:
        outcomes = task_submit_many(
            submissions=[
                Submission(buyer, SUMMARY),
                Submission(other_buyer, SUMMARY),
                Submission(buyer, SUMMARY),
                Submission(buyer, TaskRequest(description="x", complexity=1, agent="no-such-agent")),
                Submission(other_buyer, SUMMARY),
            ]
        )

    first, other_first, refused, unknown, other_second = outcomes
    assert all(isinstance(task, Task) for task in (first, other_first, other_second))
    assert isinstance(refused, InsufficientFunds)
    # What the buyer has after the group's first hold, and what that hold put in escrow.
    assert refused.fields["balance"] == ["0.0100"] and "(0.0200 is held" in refused.message
    assert isinstance(unknown, NotFound)

    assert set(Task.objects.values_list("pk", flat=True)) == {first.pk, other_first.pk, other_second.pk}
    assert _balances(buyer) == (Decimal("0.0100"), Decimal("0.0200"))
    assert _balances(other_buyer) == (Decimal("99.9600"), Decimal("0.0400"))
    holds = LedgerEntry.objects.filter(kind="hold")
    assert holds.count() == 6 and sum(entry.amount for entry in holds) == 0
    assert {entry.task_id for entry in holds} == {first.pk, other_first.pk, other_second.pk}
    # A drainer claims every pending task: one request for the whole group.
    assert len(callbacks) == 1


def test_the_spend_cap_counts_the_buyers_earlier_submissions_in_the_same_group(buyer, settings):
    settings.AICP_DAILY_SPEND_CAP = Decimal("0.0500")
    first, second, third = task_submit_many(submissions=[Submission(buyer, SUMMARY)] * 3)
    assert isinstance(first, Task) and isinstance(second, Task)
    assert isinstance(third, SpendCapExceeded)
    assert "already committed 0.0400" in third.message
    assert Task.objects.filter(buyer=buyer).count() == 2


def test_the_quote_uses_the_agents_reputation_as_read_inside_the_groups_transaction(buyer):
    from agents.models import Agent

    agent = Agent.objects.get(name="openai-gpt-4o-mini")
    (before,) = task_submit_many(submissions=[Submission(buyer, SUMMARY)])
    Agent.objects.filter(pk=agent.pk).update(success_count=0, failure_count=50)
    (after,) = task_submit_many(submissions=[Submission(buyer, SUMMARY)])
    assert after.price < before.price


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_submissions_are_grouped_and_every_one_is_held_exactly_once(default_agents):
    buyers = [make_buyer(f"grouped-{n}") for n in range(4)]
    groups: list[int] = []
    real_submit_many = services.task_submit_many
    first_group_open = threading.Event()
    callers = 12

    def held_first_group(*, submissions):
        # The first group waits inside its write until every other caller has queued behind it, so the
        # rest must be written as groups (of at most AICP_SUBMIT_GROUP_MAX).
        groups.append(len(submissions))
        if len(groups) == 1:
            first_group_open.set()
            deadline = time.monotonic() + 20
            while len(services._submissions._queued) < callers - 1 and time.monotonic() < deadline:
                time.sleep(0.002)
        return real_submit_many(submissions=submissions)

    results: list = []
    errors: list = []

    def send(index: int) -> None:
        try:
            if index:
                assert first_group_open.wait(20)
            results.append(task_submit(buyer=buyers[index % len(buyers)], request=SUMMARY))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    with (
        mock.patch.object(services, "task_submit_many", held_first_group),
        mock.patch("django.conf.settings.AICP_SUBMIT_GROUP_MAX", 5),
        mock.patch("tasks.queue.enqueue_executions") as enqueued,
    ):
        threads = [threading.Thread(target=send, args=(n,)) for n in range(callers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)

    assert not errors
    assert groups == [1, 5, 5, 1]
    # One drainer request per group, naming every task it wrote.
    assert enqueued.call_count == len(groups)
    assert sorted(id_ for call in enqueued.call_args_list for id_ in call.args[0]) == sorted(
        task.pk for task in results
    )
    assert len({task.pk for task in results}) == callers
    assert Task.objects.count() == callers
    for buyer in buyers:
        assert _balances(buyer) == (Decimal("99.9400"), Decimal("0.0600"))  # three tasks of 0.0200 each
    holds = LedgerEntry.objects.filter(kind="hold")
    assert holds.count() == 2 * callers and sum(entry.amount for entry in holds) == 0
    assert {entry.task_id for entry in holds} == {task.pk for task in results}


def test_inside_a_callers_transaction_a_submission_is_written_there_and_then(buyer):
    from django.db import transaction

    with mock.patch.object(services._submissions, "submit") as grouped, transaction.atomic():
        task = task_submit(buyer=buyer, request=SUMMARY)
        assert Task.objects.filter(pk=task.pk).exists()
    grouped.assert_not_called()


def test_the_submit_limit_counts_the_buyers_earlier_submissions_in_the_same_group(buyer, other_buyer):
    limit = SubmitLimit(count=2, window_s=60)
    outcomes = task_submit_many(
        submissions=[
            Submission(buyer, SUMMARY, limit),
            Submission(buyer, SUMMARY, limit),
            Submission(other_buyer, SUMMARY, limit),
            Submission(buyer, SUMMARY, limit),
            Submission(buyer, SUMMARY),  # no limit given (not through the API): not limited
        ]
    )
    first, second, others, refused, unlimited = outcomes
    assert all(isinstance(task, Task) for task in (first, second, others, unlimited))
    assert isinstance(refused, SubmitRateExceeded) and refused.code == "throttled"
    # Both of the buyer's tasks in the window were created just now: a place frees up in a full window.
    assert refused.retry_after_s == 60
    assert Task.objects.filter(buyer=buyer).count() == 3
    assert _balances(buyer) == (Decimal("99.9400"), Decimal("0.0600"))


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_submissions_of_one_buyer_cannot_pass_the_submit_limit_together(default_agents):
    from tests.postgres.threads import run_concurrently

    buyer = make_buyer("eager")
    limit = SubmitLimit(count=3, window_s=60)
    with mock.patch("tasks.queue.enqueue_executions"):
        outcomes = run_concurrently(lambda _: task_submit(buyer=buyer, request=SUMMARY, limit=limit), 8)

    assert len(outcomes) == 8
    assert sum(isinstance(outcome, Task) for outcome in outcomes) == 3
    assert sum(isinstance(outcome, SubmitRateExceeded) for outcome in outcomes) == 5
    assert Task.objects.filter(buyer=buyer).count() == 3
    assert _balances(buyer) == (Decimal("99.9400"), Decimal("0.0600"))


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_every_group_is_written_on_the_processs_one_writing_connection(default_agents):
    from django.db import connections

    buyer = make_buyer("one-writer")
    writers: list = []
    afterwards: list = []
    real_submit_many = services.task_submit_many

    def spy(*, submissions):
        writers.append(connections["default"])
        return real_submit_many(submissions=submissions)

    def send() -> None:
        try:
            task_submit(buyer=buyer, request=SUMMARY)
            afterwards.append(connections["default"])  # the thread's own again
        finally:
            connection.close()

    with mock.patch.object(services, "task_submit_many", spy), mock.patch("tasks.queue.enqueue_executions"):
        for _ in range(3):
            thread = threading.Thread(target=send)
            thread.start()
            thread.join(timeout=30)
        send()  # and this thread too

    assert len(writers) == 4 and all(writer is writers[0] for writer in writers)
    assert len(afterwards) == 4 and all(own is not writers[0] for own in afterwards)
    assert len({id(own) for own in afterwards}) == 4
    assert Task.objects.filter(buyer=buyer).count() == 4


def test_only_what_depends_on_the_locked_balances_runs_inside_the_write_transaction(buyer, other_buyer):
    limit = SubmitLimit(count=100, window_s=60)
    with CaptureQueriesContext(connection) as captured:
        outcomes = task_submit_many(
            submissions=[Submission(buyer, SUMMARY, limit), Submission(other_buyer, SUMMARY, limit)]
        )
    assert all(isinstance(task, Task) for task in outcomes)

    statements = [query["sql"] for query in captured.captured_queries]
    # Inside the test's transaction the service's own transaction is a savepoint: it marks where the
    # writing transaction (on SQLite, the database's write lock) begins and ends.
    begin = next(i for i, sql in enumerate(statements) if sql.startswith("SAVEPOINT"))
    end = next(i for i, sql in enumerate(statements) if sql.startswith("RELEASE SAVEPOINT"))
    assert any("agents_agent" in sql for sql in statements[:begin])  # the agent and its quote: before
    inside = [sql.split(" WHERE ")[0] for sql in statements[begin + 1 : end]]
    assert len(inside) == 5, inside
    assert 'FROM "tasks_account"' in inside[0]  # the buyers' accounts, locked
    assert 'FROM "tasks_task"' in inside[1]  # their submissions in the limit's window
    assert inside[2].startswith('INSERT INTO "tasks_task"')
    assert inside[3].startswith('INSERT INTO "tasks_ledgerentry"')
    assert 'UPDATE "tasks_account" SET "balance"' in inside[4]
