"""Writes on tasks and money. Every state change is a conditional update, so repeats change nothing."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from agents.models import Agent
from agents.pricing import quantize_money, quote
from agents.selectors import agent_default_llm, agent_duke, agent_get
from agents.services import agent_record_outcome
from aicp.exceptions import DomainError
from duke.router import RouteDecision, route
from duke.services import sample_record
from tasks import ledger
from tasks.models import Account, Task
from users.models import User
from users.services import user_register

logger = logging.getLogger("tasks")


# --- buyers and money -----------------------------------------------------------------------------------


@transaction.atomic
def buyer_credit(*, user_id: int, amount: Decimal, memo: str = "operator credit") -> None:
    """Money enters the system: the funding account pays the buyer's available balance."""
    if amount <= 0:
        raise DomainError("A credit must be a positive amount.", code="invalid_amount")
    amount = quantize_money(amount)
    ledger.post(
        legs=[
            ledger.Leg(ledger.platform_account(kind=Account.Kind.FUNDING), -amount, "credit"),
            ledger.Leg(ledger.account_for_user(user_id=user_id, kind=Account.Kind.BUYER), amount, "credit"),
        ],
        memo=memo,
    )


@transaction.atomic
def buyer_register(*, username: str, password: str) -> User:
    user = user_register(username=username, password=password)
    ledger.account_for_user(user_id=user.pk, kind=Account.Kind.BUYER)
    ledger.account_for_user(user_id=user.pk, kind=Account.Kind.ESCROW)
    if settings.AICP_SIGNUP_CREDIT:
        buyer_credit(user_id=user.pk, amount=settings.AICP_SIGNUP_CREDIT, memo="signup credit")
    return user


def _hold(*, task: Task) -> None:
    ledger.post(
        legs=[
            ledger.Leg(
                ledger.account_for_user(user_id=task.buyer_id, kind=Account.Kind.BUYER), -task.price, "hold"
            ),
            ledger.Leg(
                ledger.account_for_user(user_id=task.buyer_id, kind=Account.Kind.ESCROW), task.price, "hold"
            ),
        ],
        task=task,
        memo=f"hold for task {task.id}",
    )


def _pay(*, task: Task, agent: Agent) -> Decimal:
    """Settles the hold to the executing agent (less the platform fee). Returns what the agent earned."""
    fee = (
        quantize_money(task.price * settings.AICP_PLATFORM_FEE) if settings.AICP_PLATFORM_FEE else Decimal(0)
    )
    earned = task.price - fee
    escrow = ledger.account_for_user(user_id=task.buyer_id, kind=Account.Kind.ESCROW)
    legs = [
        ledger.Leg(escrow, -earned, "payout"),
        ledger.Leg(ledger.account_for_agent(agent_id=agent.pk), earned, "payout"),
    ]
    if fee:
        legs += [
            ledger.Leg(escrow, -fee, "fee"),
            ledger.Leg(ledger.platform_account(kind=Account.Kind.PLATFORM_REVENUE), fee, "fee"),
        ]
    ledger.post(legs=legs, task=task, memo=f"payout for task {task.id}")
    return earned


def _release(*, task: Task) -> None:
    ledger.post(
        legs=[
            ledger.Leg(
                ledger.account_for_user(user_id=task.buyer_id, kind=Account.Kind.ESCROW),
                -task.price,
                "release",
            ),
            ledger.Leg(
                ledger.account_for_user(user_id=task.buyer_id, kind=Account.Kind.BUYER), task.price, "release"
            ),
        ],
        task=task,
        memo=f"release for task {task.id}",
    )


# --- submission -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskRequest:
    description: str
    complexity: int
    task_type: str = ""
    labels: tuple[str, ...] | None = None
    agent: str = "auto"


def _resolve_agent(requested: str) -> Agent:
    if requested == "auto":
        return agent_default_llm()
    agent = agent_get(name=requested)
    if not agent.is_active:
        raise DomainError(
            f"Agent {requested!r} is not active.", code="agent_inactive", fields={"agent": ["inactive"]}
        )
    if agent.backend == Agent.Backend.DUKE:
        # Duke only serves the tasks it is confident about; asking for it by name cannot bypass that.
        raise DomainError(
            "Duke is chosen automatically with agent 'auto'; it cannot be requested by name.",
            code="agent_not_requestable",
            fields={"agent": ["duke is routed automatically"]},
        )
    return agent


@transaction.atomic
def task_submit(*, buyer: User, request: TaskRequest) -> Task:
    """Quotes, holds the quote in escrow and enqueues execution when the transaction commits."""
    if request.agent == "auto" and request.labels:
        decision = route(text=request.description, labels=request.labels, task_type=request.task_type)
        duke = agent_duke()
        if decision is not None and duke is not None:
            return _submit_served_by_duke(buyer=buyer, request=request, duke=duke, decision=decision)
    agent = _resolve_agent(request.agent)
    price = quote(
        price_per_unit=agent.price_per_unit,
        complexity=request.complexity,
        success_count=agent.success_count,
        failure_count=agent.failure_count,
    )
    task = Task.objects.create(
        buyer=buyer,
        description=request.description,
        complexity=request.complexity,
        task_type=request.task_type,
        labels=list(request.labels) if request.labels else None,
        requested_agent=request.agent,
        agent=agent,
        price=price,
    )
    _hold(task=task)
    from tasks import jobs

    transaction.on_commit(lambda: jobs.enqueue_execution(task.id))
    logger.info("Task %s SUBMITTED to %s at %s", task.short_id, agent.name, price)
    return task


def _submit_served_by_duke(
    *, buyer: User, request: TaskRequest, duke: Agent, decision: RouteDecision
) -> Task:
    """Duke answers in the request: quote, hold and payout in one transaction, no queue, no LLM call."""
    price = quote(
        price_per_unit=duke.price_per_unit,
        complexity=request.complexity,
        success_count=duke.success_count,
        failure_count=duke.failure_count,
    )
    task = Task.objects.create(
        buyer=buyer,
        description=request.description,
        complexity=request.complexity,
        task_type=request.task_type,
        labels=list(request.labels or ()),
        requested_agent=request.agent,
        agent=duke,
        price=price,
        status=Task.Status.RUNNING,
        attempts=1,
        started_at=timezone.now(),
    )
    _hold(task=task)
    task_complete(
        task_id=task.id,
        outcome=Outcome(result=decision.label, confidence=decision.confidence, latency_ms=0),
        executed_by_id=duke.pk,
    )
    task.refresh_from_db()
    return task


# --- execution ------------------------------------------------------------------------------------------


@transaction.atomic
def task_claim(*, task_id: uuid.UUID) -> Task | None:
    """Atomically moves a pending task to running with a lease; None if someone else has it or it is final."""
    now = timezone.now()
    claimed = Task.objects.filter(
        Q(not_before__isnull=True) | Q(not_before__lte=now), pk=task_id, status=Task.Status.PENDING
    ).update(
        status=Task.Status.RUNNING,
        lease_until=now + timedelta(seconds=settings.AICP_TASK_LEASE_S),
        started_at=now,
        updated_at=now,
    )
    if not claimed:
        return None
    task = Task.objects.select_related("agent").get(pk=task_id)
    Task.objects.filter(pk=task_id).update(attempts=task.attempts + 1)
    task.attempts += 1
    return task


@dataclass(frozen=True)
class Outcome:
    result: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: int = 0
    cost: Decimal = Decimal("0")
    confidence: float | None = None


@transaction.atomic
def task_complete(*, task_id: uuid.UUID, outcome: Outcome, executed_by_id: int | None = None) -> bool:
    """Stores the result and pays the agent, once. Returns False when the task was already final."""
    task = Task.objects.select_related("agent").get(pk=task_id)
    executor_id = executed_by_id or task.agent_id
    now = timezone.now()
    finished = Task.objects.filter(pk=task_id, status__in=[Task.Status.PENDING, Task.Status.RUNNING]).update(
        status=Task.Status.COMPLETED,
        result=outcome.result,
        executed_by_id=executor_id,
        confidence=outcome.confidence,
        prompt_tokens=outcome.prompt_tokens,
        completion_tokens=outcome.completion_tokens,
        latency_ms=outcome.latency_ms,
        cost=outcome.cost,
        error="",
        error_code="",
        lease_until=None,
        finished_at=now,
        updated_at=now,
    )
    if not finished:
        return False
    executor = task.agent if executor_id == task.agent_id else Agent.objects.get(pk=executor_id)
    earned = _pay(task=task, agent=executor)
    agent_record_outcome(agent_id=executor.pk, success=True, earned=earned)
    if executor.backend != Agent.Backend.DUKE:
        # Duke's own answers never become its training labels: it would learn its own mistakes.
        sample_record(
            task_id=task.id,
            text=task.description,
            task_type=task.task_type,
            complexity=task.complexity,
            labels=task.labels,
            output=outcome.result,
        )
    logger.info("Task %s COMPLETED by %s in %s ms", task.short_id, executor.name, outcome.latency_ms)
    return True


@transaction.atomic
def task_fail(*, task_id: uuid.UUID, error: str, error_code: str = "error") -> bool:
    """Marks the task failed and releases the buyer's hold, once. Returns False when already final."""
    task = Task.objects.select_related("agent").get(pk=task_id)
    now = timezone.now()
    finished = Task.objects.filter(pk=task_id, status__in=[Task.Status.PENDING, Task.Status.RUNNING]).update(
        status=Task.Status.FAILED,
        error=error[:4000],
        error_code=error_code[:32],
        lease_until=None,
        finished_at=now,
        updated_at=now,
    )
    if not finished:
        return False
    _release(task=task)
    agent_record_outcome(agent_id=task.agent_id, success=False)
    logger.info("Task %s FAILED on %s: %s", task.short_id, task.agent.name, error_code)
    return True


@transaction.atomic
def task_retry_later(*, task_id: uuid.UUID, error: str, error_code: str, delay_s: float) -> bool:
    """Gives a running task back to the queue after a retryable error; it stays billed to nobody."""
    now = timezone.now()
    released = Task.objects.filter(pk=task_id, status=Task.Status.RUNNING).update(
        status=Task.Status.PENDING,
        error=error[:4000],
        error_code=error_code[:32],
        lease_until=None,
        not_before=now + timedelta(seconds=delay_s),
        updated_at=now,
    )
    if released:
        from tasks import jobs

        transaction.on_commit(lambda: jobs.enqueue_execution(task_id, delay_s=delay_s))
    return bool(released)


@transaction.atomic
def task_requeue_expired() -> list[uuid.UUID]:
    """The reaper: running tasks whose lease ran out (their worker died) go back to pending, once."""
    now = timezone.now()
    expired = list(
        Task.objects.filter(status=Task.Status.RUNNING, lease_until__lt=now).values_list("pk", flat=True)[
            :1000
        ]
    )
    requeued = []
    for task_id in expired:
        if Task.objects.filter(pk=task_id, status=Task.Status.RUNNING, lease_until__lt=now).update(
            status=Task.Status.PENDING, lease_until=None, updated_at=now
        ):
            requeued.append(task_id)
    # A pending task untouched for a whole lease lost its queued job (a crash between commit and
    # enqueue, a purged queue): enqueue it again. A duplicate job is harmless, the claim is atomic.
    orphaned = list(
        Task.objects.filter(
            Q(not_before__isnull=True) | Q(not_before__lte=now),
            status=Task.Status.PENDING,
            updated_at__lt=now - timedelta(seconds=settings.AICP_TASK_LEASE_S),
        ).values_list("pk", flat=True)[:1000]
    )
    if requeued or orphaned:
        from tasks import jobs

        transaction.on_commit(lambda: [jobs.enqueue_execution(task_id) for task_id in requeued + orphaned])
    if requeued:
        logger.warning("Reaper re-queued %d task(s) whose lease expired", len(requeued))
    if orphaned:
        logger.warning("Reaper re-enqueued %d pending task(s) that had no job", len(orphaned))
    return requeued


@transaction.atomic
def task_resubmit(*, task_id: uuid.UUID) -> Task:
    """An operator's retry of a failed task: a new task with a new quote and hold, the old one stays."""
    original = Task.objects.select_related("buyer").get(pk=task_id)
    if original.status != Task.Status.FAILED:
        raise DomainError("Only failed tasks can be retried.", code="not_failed")
    return task_submit(
        buyer=original.buyer,
        request=TaskRequest(
            description=original.description,
            complexity=original.complexity,
            task_type=original.task_type,
            labels=tuple(original.labels) if original.labels else None,
            agent=original.requested_agent,
        ),
    )
