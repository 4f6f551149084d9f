"""Every money path: credit, hold (402 / 429), payout with the platform fee, release, reputation, crashes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from unittest import mock

import pytest
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from agents.models import Agent
from agents.pricing import quote
from core.exceptions import InsufficientFunds, SpendCapExceeded
from ledger import entries
from ledger.models import Account, LedgerEntry
from tasks.models import Task
from tasks.services.lifecycle import Outcome, task_claim, task_complete, task_fail, task_retry_later
from tests.factories import make_buyer, submit

pytestmark = pytest.mark.django_db

DEFAULT_AGENT = "openai-gpt-4o-mini"  # 0.0200 per complexity unit, reputation multiplier 1 when new


def _balance(user, kind=Account.Kind.BUYER) -> Decimal:
    return Account.objects.get(user=user, kind=kind).balance


def _entries_sum(user, kind) -> Decimal:
    return LedgerEntry.objects.filter(account__user=user, account__kind=kind).aggregate(t=Sum("amount"))[
        "t"
    ] or Decimal(0)


def _post_task(client, key=None, **body):
    payload = {"description": "Classify: great film", "complexity": 2, **body}
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return client.post("/tasks", payload, format="json", **headers)


def _drain(buyer, leave: Decimal = Decimal("0")) -> None:
    """Spends the buyer's available balance down to `leave` with one completed expensive task."""
    available = _balance(buyer)
    agent = Agent.objects.create(name="drain", backend="openai", model="m", price_per_unit=available - leave)
    task = submit(buyer, agent=agent.name)
    task_claim(task_id=task.id)
    task_complete(task_id=task.id, outcome=Outcome(result="ok"))
    assert _balance(buyer) == leave


# --- 402 ------------------------------------------------------------------------------------------------


def test_it_refuses_a_task_the_balance_cannot_cover_with_402_and_creates_nothing(
    buyer, buyer_client, llm_settings, django_capture_on_commit_callbacks
):
    _drain(buyer, leave=Decimal("0.0399"))
    tasks_before, entries_before = Task.objects.count(), LedgerEntry.objects.count()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = _post_task(buyer_client, complexity=2)  # costs 0.0400
    assert response.status_code == 402, response.content
    error = response.json()["error"]
    assert error["code"] == "insufficient_funds"
    assert "0.0400" in error["message"] and "0.0399" in error["message"]
    assert Task.objects.count() == tasks_before and LedgerEntry.objects.count() == entries_before
    assert _balance(buyer) == Decimal("0.0399")
    assert callbacks == [] and llm_settings.request_count == 0


def test_it_accepts_a_task_that_costs_exactly_the_available_balance(buyer, buyer_client):
    _drain(buyer, leave=Decimal("0.0400"))
    response = _post_task(buyer_client, complexity=2)
    assert response.status_code == 201
    assert _balance(buyer) == 0 and _balance(buyer, Account.Kind.ESCROW) == Decimal("0.0400")


def test_it_counts_held_money_as_unavailable(buyer):
    _drain(buyer, leave=Decimal("0.0600"))
    submit(buyer, complexity=2)
    with pytest.raises(InsufficientFunds):
        submit(buyer, complexity=2)
    assert _balance(buyer) == Decimal("0.0200") and _balance(buyer, Account.Kind.ESCROW) == Decimal("0.0400")


# --- payouts, fees, refunds -----------------------------------------------------------------------------


def test_it_pays_the_agent_the_price_less_the_platform_fee(buyer, settings):
    settings.AICP_PLATFORM_FEE = Decimal("0.1")
    task = submit(buyer, complexity=3)  # 0.0600
    task_claim(task_id=task.id)
    assert task_complete(task_id=task.id, outcome=Outcome(result="done"))
    agent = Agent.objects.get(name=DEFAULT_AGENT)
    revenue = Account.objects.get(kind=Account.Kind.PLATFORM_REVENUE, user=None, agent=None)
    assert Account.objects.get(kind=Account.Kind.AGENT, agent=agent).balance == Decimal("0.0540")
    assert revenue.balance == Decimal("0.0060")
    assert agent.earnings == Decimal("0.0540")
    assert _balance(buyer) == Decimal("99.9400") and _balance(buyer, Account.Kind.ESCROW) == 0
    kinds = {(e.kind, e.amount) for e in LedgerEntry.objects.filter(task=task).exclude(kind="hold")}
    assert kinds == {
        ("payout", Decimal("-0.0540")),
        ("payout", Decimal("0.0540")),
        ("fee", Decimal("-0.0060")),
        ("fee", Decimal("0.0060")),
    }


def test_it_rounds_the_fee_to_four_places_and_keeps_the_sum_exact(buyer, settings):
    settings.AICP_PLATFORM_FEE = Decimal("0.1")
    agent = Agent.objects.create(name="odd", backend="openai", model="m", price_per_unit=Decimal("0.0333"))
    task = submit(buyer, agent=agent.name, complexity=1)
    task_claim(task_id=task.id)
    task_complete(task_id=task.id, outcome=Outcome(result="done"))
    agent_account = Account.objects.get(kind=Account.Kind.AGENT, agent=agent)
    revenue = Account.objects.get(kind=Account.Kind.PLATFORM_REVENUE)
    assert revenue.balance == Decimal("0.0033") and agent_account.balance == Decimal("0.0300")
    assert revenue.balance + agent_account.balance == task.price


def test_it_pays_the_whole_price_to_the_agent_without_a_fee(buyer, settings):
    settings.AICP_PLATFORM_FEE = Decimal("0")
    task = submit(buyer, complexity=3)
    task_claim(task_id=task.id)
    task_complete(task_id=task.id, outcome=Outcome(result="done"))
    assert not Account.objects.filter(kind=Account.Kind.PLATFORM_REVENUE, balance__gt=0).exists()
    assert Agent.objects.get(name=DEFAULT_AGENT).earnings == task.price


def test_it_refunds_the_whole_hold_on_failure_even_with_a_fee(buyer, settings):
    settings.AICP_PLATFORM_FEE = Decimal("0.1")
    task = submit(buyer, complexity=5)
    task_claim(task_id=task.id)
    assert task_fail(task_id=task.id, error="provider said no", error_code="auth")
    assert _balance(buyer) == Decimal("100.0000") and _balance(buyer, Account.Kind.ESCROW) == 0
    assert not LedgerEntry.objects.filter(kind__in=["payout", "fee"]).exists()
    assert Agent.objects.get(name=DEFAULT_AGENT).earnings == 0


def test_it_shows_an_agents_earnings_equal_to_its_ledger_account(buyer, settings, buyer_client):
    settings.AICP_PLATFORM_FEE = Decimal("0.1")
    for complexity in (1, 4, 7):
        task = submit(buyer, complexity=complexity)
        task_claim(task_id=task.id)
        task_complete(task_id=task.id, outcome=Outcome(result="r"))
    agent = Agent.objects.get(name=DEFAULT_AGENT)
    body = buyer_client.get(f"/agents/{DEFAULT_AGENT}").json()
    assert Decimal(body["earnings"]) == Account.objects.get(kind=Account.Kind.AGENT, agent=agent).balance
    assert Decimal(body["earnings"]) > 0


# --- reputation pricing ---------------------------------------------------------------------------------


def test_it_charges_exactly_the_quote_shown_at_submission(buyer, buyer_client):
    agent = Agent.objects.get(name=DEFAULT_AGENT)
    Agent.objects.filter(pk=agent.pk).update(success_count=7, failure_count=5)
    expected = quote(price_per_unit=agent.price_per_unit, complexity=7, success_count=7, failure_count=5)
    assert expected != agent.price_per_unit * 7  # the reputation multiplier really moves this quote

    response = _post_task(buyer_client, complexity=7)
    shown = Decimal(response.json()["price"])
    assert shown == expected
    # Reputation moves after submission; the quote the buyer saw is still what is charged.
    Agent.objects.filter(pk=agent.pk).update(success_count=100, failure_count=0)
    task_id = response.json()["id"]
    task_claim(task_id=task_id)
    task_complete(task_id=task_id, outcome=Outcome(result="r"))

    hold = LedgerEntry.objects.get(task_id=task_id, kind="hold", amount__lt=0)
    payout = LedgerEntry.objects.get(task_id=task_id, kind="payout", amount__gt=0)
    assert -hold.amount == shown == payout.amount
    assert _balance(buyer) == Decimal("100.0000") - shown
    me = buyer_client.get("/auth/me").json()
    assert Decimal(me["balance"]) == Decimal("100.0000") - shown and Decimal(me["held"]) == 0


def test_it_moves_the_quote_with_the_agents_reputation(buyer):
    agent = Agent.objects.get(name=DEFAULT_AGENT)
    new_quote = submit(buyer, complexity=5).price
    assert new_quote == Decimal("0.1000")  # a new agent is priced at the prior: multiplier 1
    Agent.objects.filter(pk=agent.pk).update(failure_count=10)
    worse = submit(buyer, complexity=5).price
    Agent.objects.filter(pk=agent.pk).update(failure_count=0, success_count=50)
    better = submit(buyer, complexity=5).price
    assert worse < new_quote < better


def test_it_counts_each_final_task_once_for_reputation(buyer):
    agent = Agent.objects.get(name=DEFAULT_AGENT)
    ok, bad, retried = submit(buyer), submit(buyer), submit(buyer)
    for task in (ok, bad, retried):
        task_claim(task_id=task.id)
    task_complete(task_id=ok.id, outcome=Outcome(result="r"))
    task_complete(task_id=ok.id, outcome=Outcome(result="again"))
    task_fail(task_id=ok.id, error="late")
    task_fail(task_id=bad.id, error="x")
    task_fail(task_id=bad.id, error="x again")
    task_retry_later(task_id=retried.id, error="timeout", error_code="timeout", delay_s=0)
    agent.refresh_from_db()
    assert (agent.success_count, agent.failure_count) == (1, 1)


def test_it_quotes_the_next_task_from_the_updated_counts(buyer):
    agent = Agent.objects.get(name=DEFAULT_AGENT)
    first = submit(buyer, complexity=10)
    task_claim(task_id=first.id)
    task_fail(task_id=first.id, error="x")
    agent.refresh_from_db()
    second = submit(buyer, complexity=10)
    assert second.price == quote(
        price_per_unit=agent.price_per_unit, complexity=10, success_count=0, failure_count=1
    )
    assert second.price < first.price


# --- crashes and retries --------------------------------------------------------------------------------


def test_it_pays_once_when_completion_runs_twice(buyer):
    task = submit(buyer, complexity=4)
    task_claim(task_id=task.id)
    assert task_complete(task_id=task.id, outcome=Outcome(result="x"))
    assert not task_complete(task_id=task.id, outcome=Outcome(result="x"))
    assert LedgerEntry.objects.filter(task=task, kind="payout", amount__gt=0).count() == 1
    assert Agent.objects.get(name=DEFAULT_AGENT).earnings == task.price
    assert _balance(buyer) == Decimal("100.0000") - task.price


def test_it_pays_once_when_completion_is_followed_by_a_failure(buyer):
    task = submit(buyer, complexity=4)
    task_claim(task_id=task.id)
    assert task_complete(task_id=task.id, outcome=Outcome(result="x"))
    assert not task_fail(task_id=task.id, error="the worker retried after a crash")
    assert not LedgerEntry.objects.filter(task=task, kind="release").exists()
    task.refresh_from_db()
    assert task.status == Task.Status.COMPLETED
    assert _balance(buyer) == Decimal("100.0000") - task.price


def test_it_refunds_once_when_failure_is_followed_by_a_completion(buyer):
    task = submit(buyer, complexity=4)
    task_claim(task_id=task.id)
    assert task_fail(task_id=task.id, error="x")
    assert not task_complete(task_id=task.id, outcome=Outcome(result="late answer"))
    assert not LedgerEntry.objects.filter(task=task, kind="payout").exists()
    assert _balance(buyer) == Decimal("100.0000")


def test_it_leaves_no_money_moved_when_completion_crashes_midway_and_pays_once_on_retry(buyer):
    task = submit(buyer, complexity=4)
    task_claim(task_id=task.id)
    with mock.patch("tasks.services.lifecycle.sample_record", side_effect=RuntimeError("worker killed")):
        with pytest.raises(RuntimeError):
            task_complete(task_id=task.id, outcome=Outcome(result="x"))
    task.refresh_from_db()
    assert task.status == Task.Status.RUNNING
    assert not LedgerEntry.objects.filter(task=task, kind="payout").exists()
    assert Agent.objects.get(name=DEFAULT_AGENT).success_count == 0
    assert _balance(buyer, Account.Kind.ESCROW) == task.price

    assert task_complete(task_id=task.id, outcome=Outcome(result="x"))
    assert not task_complete(task_id=task.id, outcome=Outcome(result="x"))
    assert LedgerEntry.objects.filter(task=task, kind="payout", amount__gt=0).count() == 1
    assert Agent.objects.get(name=DEFAULT_AGENT).success_count == 1


# --- balances -------------------------------------------------------------------------------------------


def test_it_shows_balance_and_held_equal_to_the_ledger(buyer, buyer_client):
    done, pending = submit(buyer, complexity=3), submit(buyer, complexity=2)
    task_claim(task_id=done.id)
    task_complete(task_id=done.id, outcome=Outcome(result="r"))
    body = buyer_client.get("/auth/me").json()
    assert body["username"] == buyer.username and body["role"] == "buyer"
    assert Decimal(body["balance"]) == _entries_sum(buyer, Account.Kind.BUYER) == Decimal("99.9000")
    assert Decimal(body["held"]) == _entries_sum(buyer, Account.Kind.ESCROW) == pending.price


# --- spend caps -----------------------------------------------------------------------------------------


def _seconds_to_utc_midnight() -> float:
    now = datetime.now(UTC)
    return (now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1) - now).total_seconds()


def test_it_refuses_a_task_over_the_global_daily_cap_with_429_and_retry_after(
    buyer, buyer_client, settings, llm_settings, django_capture_on_commit_callbacks
):
    settings.AICP_DAILY_SPEND_CAP = Decimal("0.0700")
    assert _post_task(buyer_client, complexity=2).status_code == 201  # 0.0400 committed
    tasks_before, balance_before = Task.objects.count(), _balance(buyer)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = _post_task(buyer_client, complexity=2)  # 0.0800 > 0.0700
    assert response.status_code == 429
    error = response.json()["error"]
    assert error["code"] == "spend_cap_exceeded"
    assert "0.0700" in error["message"] and "midnight UTC" in error["message"]
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= 86400 and abs(retry_after - _seconds_to_utc_midnight()) < 5
    assert Task.objects.count() == tasks_before and _balance(buyer) == balance_before
    assert callbacks == [] and llm_settings.request_count == 0


def test_it_allows_a_task_that_reaches_the_cap_exactly(buyer, settings):
    settings.AICP_DAILY_SPEND_CAP = Decimal("0.0800")
    submit(buyer, complexity=2)
    submit(buyer, complexity=2)
    with pytest.raises(SpendCapExceeded):
        submit(buyer, complexity=1)


def test_it_lets_the_buyers_own_cap_override_the_global_one(buyer, other_buyer, settings):
    settings.AICP_DAILY_SPEND_CAP = Decimal("0.0500")
    buyer.daily_spend_cap = Decimal("1.0000")
    buyer.save(update_fields=["daily_spend_cap"])
    submit(buyer, complexity=10)  # 0.2000, under the buyer's own cap
    with pytest.raises(SpendCapExceeded):
        submit(other_buyer, complexity=3)  # 0.0600, over the global cap
    other_buyer.daily_spend_cap = Decimal("0")
    other_buyer.save(update_fields=["daily_spend_cap"])
    with pytest.raises(SpendCapExceeded):
        submit(other_buyer, complexity=1)


def test_it_has_no_cap_when_neither_is_set(buyer, settings):
    settings.AICP_DAILY_SPEND_CAP = None
    for _ in range(3):
        submit(buyer, complexity=10)
    assert Task.objects.filter(buyer=buyer).count() == 3


def test_it_counts_pending_and_completed_but_not_failed_tasks_against_the_cap(buyer, settings):
    completed, failed = submit(buyer, complexity=2), submit(buyer, complexity=5)
    for task in (completed, failed):
        task_claim(task_id=task.id)
    task_complete(task_id=completed.id, outcome=Outcome(result="r"))
    task_fail(task_id=failed.id, error="x")
    settings.AICP_DAILY_SPEND_CAP = Decimal("0.1000")
    submit(buyer, complexity=3)  # 0.04 completed + 0.06 pending = 0.10, the refunded 0.10 does not count
    with pytest.raises(SpendCapExceeded):
        submit(buyer, complexity=1)


def test_it_starts_a_new_day_at_midnight_utc(buyer, settings):
    settings.AICP_DAILY_SPEND_CAP = Decimal("0.1000")
    yesterday = submit(buyer, complexity=5)
    start_of_today = timezone.now().astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    Task.objects.filter(pk=yesterday.pk).update(created_at=start_of_today - timedelta(seconds=1))
    submit(buyer, complexity=5)
    with pytest.raises(SpendCapExceeded):
        submit(buyer, complexity=1)


def test_it_applies_the_cap_and_the_balance_to_tasks_duke_serves(buyer, settings):
    from duke.router import RouteDecision

    decision = RouteDecision(label="a", confidence=0.99, model_version=1, audit=False)
    settings.AICP_DAILY_SPEND_CAP = Decimal("0.0100")
    with mock.patch("tasks.services.submission.route", return_value=decision):
        task = submit(buyer, complexity=5, labels=["a", "b"], task_type="t")
        duke = Agent.objects.get(name="duke")
        assert task.executed_by == duke and task.status == Task.Status.COMPLETED
        assert task.price == Decimal("0.0100")  # Duke's price, not the LLM's 0.1000
        assert _balance(buyer) == Decimal("99.9900")
        with pytest.raises(SpendCapExceeded):
            submit(buyer, complexity=1, labels=["a", "b"], task_type="t")
        settings.AICP_DAILY_SPEND_CAP = None
        _drain(buyer, leave=Decimal("0.0019"))
        with pytest.raises(InsufficientFunds):
            submit(buyer, complexity=1, labels=["a", "b"], task_type="t")
    assert Task.objects.filter(agent=duke).count() == 1


def test_it_makes_a_second_buyer_independent_of_the_first(buyer, settings):
    settings.AICP_DAILY_SPEND_CAP = Decimal("0.0400")
    other = make_buyer("third-buyer")
    submit(buyer, complexity=2)
    submit(other, complexity=2)
    assert Task.objects.count() == 2


# --- lock order (PostgreSQL) ----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_it_never_deadlocks_duke_submissions_against_completions_for_the_same_buyer(monkeypatch, settings):
    """A Duke-served submission holds then pays in one transaction, while workers pay the same buyer's
    other tasks: both must take the account locks in one global order, or PostgreSQL aborts one."""
    from django.db import connection

    from duke.router import RouteDecision
    from tests.postgres.threads import run_concurrently

    if connection.vendor != "postgresql":
        pytest.skip("row-lock ordering needs PostgreSQL's real concurrent writers")
    monkeypatch.setattr("tasks.queue.enqueue_execution", lambda task_id, **kwargs: None)
    monkeypatch.setattr("tasks.queue.enqueue_executions", lambda task_ids: None)
    settings.AICP_PLATFORM_FEE = Decimal("0.1")
    # As in any live system: agents and the platform were paid before this buyer signed up, so their
    # accounts have the lower ids.
    with transaction.atomic():
        for agent in Agent.objects.all():
            entries.account_for_agent(agent_id=agent.pk)
        entries.platform_account(kind=Account.Kind.PLATFORM_REVENUE)
    buyer = make_buyer("busy-buyer")
    llm_tasks = [submit(buyer, f"LLM task {i}") for i in range(12)]
    Task.objects.filter(pk__in=[t.pk for t in llm_tasks]).update(status=Task.Status.RUNNING)
    decision = RouteDecision(label="a", confidence=0.99, model_version=1, audit=False)
    monkeypatch.setattr("tasks.services.submission.route", lambda **kwargs: decision)

    def act(index: int) -> object:
        if index % 2:
            return submit(buyer, f"Duke task {index}", labels=["a", "b"], task_type="t")
        return task_complete(task_id=llm_tasks[index // 2].id, outcome=Outcome(result="done"))

    results = run_concurrently(act, 24)

    assert [r for r in results if isinstance(r, BaseException)] == []
    assert Task.objects.filter(buyer=buyer, status=Task.Status.COMPLETED).count() == 24
    spent = sum(Task.objects.filter(buyer=buyer).values_list("price", flat=True), Decimal(0))
    assert _balance(buyer) == Decimal("100.0000") - spent and _balance(buyer, Account.Kind.ESCROW) == 0
