"""A Hypothesis state machine over submit / claim / complete / fail / retry / crash / credit / caps.

After every step it checks the ledger's invariants against the database and against an independent model:
a buyer's money only ever leaves their balance as the exact quotes of their completed tasks, whatever
fails, retries, repeats or is refused.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from decimal import Decimal
from unittest import mock

import pytest
from django.db import connection, transaction
from hypothesis import HealthCheck, event
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from agents.models import Agent
from agents.pricing import quantize_money, quote
from core.exceptions import InsufficientFunds, SpendCapExceeded, Unprocessable
from ledger.models import Account, LedgerEntry
from ledger.services import buyer_credit
from tasks.models import Task
from tasks.services.idempotency import request_fingerprint, task_submit_idempotent
from tasks.services.lifecycle import Outcome, task_claim, task_complete, task_fail, task_retry_later
from tasks.services.submission import TaskRequest, task_submit
from tests.factories import make_buyer

FEE = Decimal("0.1")
SIGNUP = Decimal("1.0000")
AGENT_PRICES = {"sm-cheap": Decimal("0.0333"), "sm-mid": Decimal("0.0700"), "sm-dear": Decimal("0.2500")}
PENDING, RUNNING, COMPLETED, FAILED = "pending", "running", "completed", "failed"

money = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("3"), places=4)


class MoneyMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # Each example runs in its own savepoint, rolled back in teardown: examples never see each other.
        self._atomic = transaction.atomic()
        self._atomic.__enter__()
        self.buyer = make_buyer(f"sm-{uuid.uuid4().hex[:12]}")
        self.agents = {
            name: Agent.objects.create(name=name, backend="openai", model="m", price_per_unit=price)
            for name, price in AGENT_PRICES.items()
        }
        self.counts: dict[str, list[int]] = {name: [0, 0] for name in AGENT_PRICES}  # [success, failure]
        self.credited = SIGNUP
        self.tasks: dict[uuid.UUID, dict] = {}
        self.order: list[uuid.UUID] = []
        self.keys: dict[str, tuple[uuid.UUID, str, TaskRequest]] = {}
        self.cap: Decimal | None = None

    def teardown(self) -> None:
        transaction.set_rollback(True)
        self._atomic.__exit__(None, None, None)

    # --- the model ------------------------------------------------------------------------------------

    def _sum(self, *statuses: str) -> Decimal:
        return sum((t["price"] for t in self.tasks.values() if t["status"] in statuses), Decimal("0"))

    @property
    def spent(self) -> Decimal:
        return self._sum(COMPLETED)

    @property
    def held(self) -> Decimal:
        return self._sum(PENDING, RUNNING)

    @property
    def available(self) -> Decimal:
        return self.credited - self.spent - self.held

    def _task(self, index: int) -> uuid.UUID:
        return self.order[index % len(self.order)]

    # --- rules ----------------------------------------------------------------------------------------

    @rule(amount=money)
    def credit(self, amount: Decimal) -> None:
        buyer_credit(user_id=self.buyer.pk, amount=amount)
        self.credited += amount

    @rule(cap=st.none() | st.decimals(min_value=Decimal("0"), max_value=Decimal("2"), places=4))
    def set_cap(self, cap: Decimal | None) -> None:
        self.buyer.daily_spend_cap = cap
        self.buyer.save(update_fields=["daily_spend_cap"])
        self.cap = cap

    @rule(
        agent=st.sampled_from(sorted(AGENT_PRICES)),
        complexity=st.integers(1, 10),
        key=st.none() | st.sampled_from(["k1", "k2", "k3"]),
        text=st.sampled_from(["a", "b"]),
    )
    def submit_task(self, agent: str, complexity: int, key: str | None, text: str) -> None:
        request = TaskRequest(description=text, complexity=complexity, agent=agent)
        fingerprint = request_fingerprint(request)
        if key is not None and key in self.keys:
            task_id, known, _ = self.keys[key]
            if known != fingerprint:
                event("submit: key reused with another body (422)")
                with pytest.raises(Unprocessable):
                    self._submit(request, key)
                return
            event("submit: replayed")
            result = self._submit(request, key)
            assert result.replayed and result.task.pk == task_id
            assert result.body == {"id": str(task_id), "price": str(self.tasks[task_id]["price"])}
            return
        success, failure = self.counts[agent]
        price = quote(
            price_per_unit=AGENT_PRICES[agent],
            complexity=complexity,
            success_count=success,
            failure_count=failure,
        )
        tasks_before = Task.objects.count()
        if self.cap is not None and self._sum(PENDING, RUNNING, COMPLETED) + price > self.cap:
            event("submit: over the cap (429)")
            with pytest.raises(SpendCapExceeded):
                self._submit(request, key)
        elif price > self.available:
            event("submit: insufficient funds (402)")
            with pytest.raises(InsufficientFunds):
                self._submit(request, key)
        else:
            event("submit: accepted")
            task = self._submit(request, key)
            task = task.task if key is not None else task
            assert task.price == price  # the quote shown is the one computed from the current reputation
            self.tasks[task.pk] = {"price": price, "status": PENDING, "agent": agent}
            self.order.append(task.pk)
            if key is not None:
                self.keys[key] = (task.pk, fingerprint, request)
            return
        assert Task.objects.count() == tasks_before  # a refused submission leaves nothing behind

    def _submit(self, request: TaskRequest, key: str | None):  # noqa: ANN202
        if key is None:
            return task_submit(buyer=self.buyer, request=request)
        return task_submit_idempotent(
            buyer=self.buyer,
            request=request,
            key=key,
            render=lambda task: {"id": str(task.pk), "price": str(task.price)},
        )

    @precondition(lambda self: self.keys)
    @rule(index=st.integers(0, 50))
    def repeat_a_keyed_submission(self, index: int) -> None:
        """A client retrying the exact request after a timeout: the first response, nothing charged."""
        key = sorted(self.keys)[index % len(self.keys)]
        task_id, _, request = self.keys[key]
        entries_before = LedgerEntry.objects.count()
        result = self._submit(request, key)
        event("submit: replayed")
        assert result.replayed and result.task.pk == task_id
        assert result.body == {"id": str(task_id), "price": str(self.tasks[task_id]["price"])}
        assert LedgerEntry.objects.count() == entries_before

    @precondition(lambda self: self.order)
    @rule(
        index=st.integers(0, 50),
        action=st.sampled_from(
            ["claim", "complete", "complete", "fail", "crash_during_completion", "retry_later"]
        ),
    )
    def work_on_a_task(self, index: int, action: str) -> None:
        """What a worker, a retried job or the reaper may do to any task, in any state, at any time."""
        getattr(self, f"_{action}")(self._task(index))

    def _claim(self, task_id: uuid.UUID) -> None:
        claimed = task_claim(task_id=task_id)
        assert (claimed is not None) == (self.tasks[task_id]["status"] == PENDING)
        if claimed is not None:
            self.tasks[task_id]["status"] = RUNNING

    def _complete(self, task_id: uuid.UUID) -> None:
        task = self.tasks[task_id]
        finished = task_complete(task_id=task_id, outcome=Outcome(result="done"))
        assert finished == (task["status"] in (PENDING, RUNNING))
        event(f"complete: {'paid' if finished else 'already final'}")
        if finished:
            task["status"] = COMPLETED
            self.counts[task["agent"]][0] += 1

    def _fail(self, task_id: uuid.UUID) -> None:
        task = self.tasks[task_id]
        finished = task_fail(task_id=task_id, error="provider error", error_code="server_error")
        assert finished == (task["status"] in (PENDING, RUNNING))
        event(f"fail: {'refunded' if finished else 'already final'}")
        if finished:
            task["status"] = FAILED
            self.counts[task["agent"]][1] += 1

    def _crash_during_completion(self, task_id: uuid.UUID) -> None:
        """The worker dies after paying but before committing: the whole completion must roll back."""
        with mock.patch("tasks.services.lifecycle.sample_record", side_effect=RuntimeError("killed")):
            if self.tasks[task_id]["status"] in (PENDING, RUNNING):
                with pytest.raises(RuntimeError):
                    task_complete(task_id=task_id, outcome=Outcome(result="done"))
            else:
                assert not task_complete(task_id=task_id, outcome=Outcome(result="done"))

    def _retry_later(self, task_id: uuid.UUID) -> None:
        released = task_retry_later(task_id=task_id, error="timeout", error_code="timeout", delay_s=0)
        assert released == (self.tasks[task_id]["status"] == RUNNING)
        if released:
            self.tasks[task_id]["status"] = PENDING

    # --- invariants -----------------------------------------------------------------------------------

    @invariant()
    def money_is_exactly_accounted_for(self) -> None:
        # Four queries per step (they dominate the run time, on PostgreSQL especially); the checks are Python.
        entries = list(
            LedgerEntry.objects.values_list("transaction_id", "account_id", "amount", "kind", "task_id")
        )
        accounts = {a.pk: a for a in Account.objects.all()}
        tasks = {
            pk: (status, price) for pk, status, price in Task.objects.values_list("pk", "status", "price")
        }
        agents = {a.name: a for a in Agent.objects.filter(name__in=AGENT_PRICES)}
        self._check_ledger(entries, accounts)
        self._check_buyer(entries, accounts, tasks)
        self._check_agents_and_platform(accounts, agents)

    def _check_ledger(self, entries: list, accounts: dict[int, Account]) -> None:
        per_transaction: dict[uuid.UUID, Decimal] = defaultdict(Decimal)
        per_account: dict[int, Decimal] = defaultdict(Decimal)
        holds: dict[uuid.UUID, int] = defaultdict(int)
        settlements: dict[uuid.UUID, int] = defaultdict(int)
        for transaction_id, account_id, amount, kind, task_id in entries:
            per_transaction[transaction_id] += amount
            per_account[account_id] += amount
            if amount < 0 and kind == "hold":
                holds[task_id] += 1
            if amount < 0 and kind in ("payout", "release"):
                settlements[task_id] += 1
        assert all(total == 0 for total in per_transaction.values()), "a transaction does not sum to zero"
        for account in accounts.values():
            assert account.balance == per_account[account.pk], f"cached balance drifted on {account}"
            assert account.kind == Account.Kind.FUNDING or account.balance >= 0, f"{account} is negative"
        assert all(count == 1 for count in holds.values()) and set(holds) == set(self.tasks)
        assert all(count == 1 for count in settlements.values())

    def _check_buyer(self, entries: list, accounts: dict[int, Account], tasks: dict) -> None:
        mine = {a.kind: a for a in accounts.values() if a.user_id == self.buyer.pk}
        available, held = mine[Account.Kind.BUYER].balance, mine[Account.Kind.ESCROW].balance
        credited = sum(
            (
                amount
                for _, account_id, amount, kind, _ in entries
                if account_id == mine[Account.Kind.BUYER].pk and kind == "credit"
            ),
            Decimal("0"),
        )
        spent = sum((price for status, price in tasks.values() if status == COMPLETED), Decimal("0"))
        # The buyer's money only ever left as the exact prices of their completed tasks.
        assert available + held + spent == credited
        # … and the database agrees with the independent model, task by task.
        assert (available, held, spent, credited) == (self.available, self.held, self.spent, self.credited)
        assert {pk: status for pk, (status, _) in tasks.items()} == {
            task_id: task["status"] for task_id, task in self.tasks.items()
        }

    def _check_agents_and_platform(self, accounts: dict[int, Account], agents: dict[str, Agent]) -> None:
        earned_by_agent = {a.agent_id: a.balance for a in accounts.values() if a.kind == Account.Kind.AGENT}
        paid = Decimal("0")
        for name, agent in agents.items():
            earned = earned_by_agent.get(agent.pk, Decimal("0"))
            assert agent.earnings == earned
            assert [agent.success_count, agent.failure_count] == self.counts[name]
            paid += earned
        fees = sum(
            (a.balance for a in accounts.values() if a.kind == Account.Kind.PLATFORM_REVENUE), Decimal("0")
        )
        assert paid + fees == self.spent
        assert fees == sum(
            (quantize_money(t["price"] * FEE) for t in self.tasks.values() if t["status"] == COMPLETED),
            Decimal("0"),
        )


@pytest.mark.django_db
def test_it_never_loses_or_invents_money(settings):
    settings.AICP_PLATFORM_FEE = FEE
    settings.AICP_SIGNUP_CREDIT = SIGNUP
    settings.AICP_DAILY_SPEND_CAP = None
    run_state_machine_as_test(
        MoneyMachine,
        settings=hsettings(
            # Queries dominate: each is an in-process call on SQLite but a network round trip on PostgreSQL,
            # whose pass is about real concurrency, so it explores fewer sequences (< 30 s on either).
            max_examples=15 if connection.vendor == "postgresql" else 40,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
