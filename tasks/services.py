"""Writes on tasks and money. Every state change is a conditional update, so repeats change nothing."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import uuid
from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import cast

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from agents.llm import estimate_label_tokens
from agents.models import Agent
from agents.pricing import quantize_money, quote, token_cost
from agents.selectors import agent_default_llm, agent_duke, agent_get
from agents.services import agent_record_correction, agent_record_outcome
from aicp.db import PreparedRow, insert_rows, prepare_row, process_connection
from aicp.exceptions import (
    Conflict,
    DomainError,
    InsufficientFunds,
    NotFound,
    SpendCapExceeded,
    SubmitRateExceeded,
    Unprocessable,
)
from aicp.group_commit import GroupCommit
from duke.router import RouteDecision, route
from duke.services import audit as duke_audit
from duke.services import sample_correct, sample_record
from tasks import ledger
from tasks.models import ZERO, Account, DrainSlot, IdempotencyKey, Task
from tasks.selectors import (
    buyer_committed_today,
    buyer_submission_counts,
    buyer_submission_time,
    drain_slots_busy,
    utc_day_start,
)
from users.models import User
from users.services import user_register

logger = logging.getLogger("tasks")


# --- buyers and money -----------------------------------------------------------------------------------


# A typo guard, not a business limit: nobody means to add a billion in one credit.
MAX_CREDIT = Decimal("1000000000")


def _record_sample(task: Task, *, output: str) -> None:
    """The task as one of Duke's training samples (plain values: duke never imports tasks)."""
    sample_record(
        task_id=task.id,
        text=task.description,
        task_type=task.task_type,
        complexity=task.complexity,
        labels=task.labels,
        output=output,
    )


def _valid_credit_amount(amount: Decimal) -> Decimal:
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise DomainError(f"{amount!r} is not a decimal amount.", code="invalid_amount")
    if amount <= 0:
        raise DomainError(f"A credit must be a positive amount, got {amount}.", code="invalid_amount")
    if quantize_money(amount) != amount:
        # Rounding would silently credit something other than what the operator typed.
        raise DomainError(f"{amount} has more than 4 decimal places.", code="invalid_amount")
    if amount > MAX_CREDIT:
        raise DomainError(
            f"{amount} is more than the {MAX_CREDIT} a single credit may add.", code="invalid_amount"
        )
    return quantize_money(amount)


@transaction.atomic
def buyer_credit(*, user_id: int, amount: Decimal, memo: str = "operator credit") -> uuid.UUID:
    """Money enters the system: the funding account pays the buyer's available balance."""
    amount = _valid_credit_amount(amount)
    if not User.objects.filter(pk=user_id).exists():
        raise NotFound(f"No user with id {user_id}.", code="user_not_found")
    return ledger.post(
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
        buyer_credit(
            user_id=user.pk, amount=quantize_money(settings.AICP_SIGNUP_CREDIT), memo="signup credit"
        )
    return user


def buyer_daily_spend_cap(*, user: User) -> Decimal | None:
    """The buyer's own cap if an operator set one, else the global AICP_DAILY_SPEND_CAP; None: no cap."""
    return user.daily_spend_cap if user.daily_spend_cap is not None else settings.AICP_DAILY_SPEND_CAP


def _check_spend_cap(*, task: Task, committed_alongside: Decimal = ZERO) -> None:
    """Refuses a task whose quote would take today's (UTC) committed spend over the buyer's cap.

    Runs after the buyer's accounts are locked, so two concurrent submissions cannot both squeeze under it.
    ``committed_alongside``: the buyer's quotes accepted earlier in the same transaction, not written yet.
    """
    cap = buyer_daily_spend_cap(user=task.buyer)
    if cap is None:
        return
    now = timezone.now()
    committed = buyer_committed_today(user_id=task.buyer_id, now=now, exclude_task_id=task.pk)
    committed += committed_alongside
    if committed + task.price <= cap:
        return
    midnight = utc_day_start(now) + timedelta(days=1)
    retry_after_s = max(1, math.ceil((midnight - now).total_seconds()))
    raise SpendCapExceeded(
        f"Daily spend cap reached: this task costs {task.price}, you have already committed {committed} "
        f"today (UTC) and your cap is {cap}. Try again after midnight UTC, or ask an operator to raise "
        "your cap.",
        retry_after_s=retry_after_s,
    )


def _hold_keys(buyer_id: int) -> tuple[ledger.AccountKey, ledger.AccountKey]:
    """The buyer's available balance and escrow: where a hold takes the quote from and puts it."""
    return (
        ledger.user_key(user_id=buyer_id, kind=Account.Kind.BUYER),
        ledger.user_key(user_id=buyer_id, kind=Account.Kind.ESCROW),
    )


@dataclass(frozen=True)
class SubmitLimit:
    """At most ``count`` tasks per buyer in any ``window_s`` seconds (the API's AICP_THROTTLE_SUBMIT)."""

    count: int
    window_s: int


def _check_submit_limit(
    *, task: Task, limit: SubmitLimit, created: int, created_alongside: int, now: datetime
) -> None:
    """Refuses a task that would be the buyer's (count + 1)-th in the window (SubmitRateExceeded, 429).

    ``created``: the buyer's tasks in the window, counted up to the limit; ``created_alongside``: those
    accepted earlier in the same transaction, not written yet. Checked with the buyer's accounts locked,
    so concurrent submissions cannot pass it together.
    """
    if created + created_alongside < limit.count:
        return
    window = timedelta(seconds=limit.window_s)
    # A place frees up when the oldest of the last `count` submissions leaves the window.
    index = limit.count - 1 - created_alongside
    oldest = (
        buyer_submission_time(user_id=task.buyer_id, since=now - window, newest_first_index=index)
        if index >= 0
        else None
    )
    wait_s = (oldest + window - now).total_seconds() if oldest else float(limit.window_s)
    retry_after_s = max(1, math.ceil(wait_s))
    raise SubmitRateExceeded(
        f"Too many submissions: at most {limit.count} tasks per {limit.window_s} s. "
        f"Try again in {retry_after_s} s.",
        retry_after_s=retry_after_s,
    )


def _created_in_window(
    items: Sequence[tuple[Task, SubmitLimit | None]], now: datetime
) -> dict[tuple[int, SubmitLimit], int]:
    """Each limited buyer's tasks in its limit's window, counted up to the limit; a statement per limit."""
    buyers_by_limit: dict[SubmitLimit, set[int]] = defaultdict(set)
    for task, limit in items:
        if limit is not None:
            buyers_by_limit[limit].add(task.buyer_id)
    created: dict[tuple[int, SubmitLimit], int] = {}
    for limit, buyer_ids in buyers_by_limit.items():
        since = now - timedelta(seconds=limit.window_s)
        counts = buyer_submission_counts(user_ids=buyer_ids, since=since, limit=limit.count)
        created |= {(buyer_id, limit): count for buyer_id, count in counts.items()}
    return created


def _insert_held(*, items: Sequence[tuple[PreparedRow, SubmitLimit | None]]) -> list[Task | DomainError]:
    """Holds each task's quote in escrow and inserts the tasks held; returns each task or its refusal.

    The tasks (quoted, their rows prepared by ``prepare_row``, not saved; each with the buyer's submit
    limit, if any) are decided one by one in order, exactly as if submitted one after the other: a task
    is refused (SubmitRateExceeded and SpendCapExceeded, 429; InsufficientFunds, 402) on the tasks, the
    day's spend and the balance its buyer has after the tasks before it. Those held are written with one
    INSERT of tasks, one of ledger entries and one balance UPDATE statement. The caller holds the
    transaction.
    """
    tasks = [(cast(Task, row.row), limit) for row, limit in items]
    keys = {key for task, _ in tasks for key in _hold_keys(task.buyer_id)}
    # Found and locked in one statement; the posting below reuses the locked rows instead of locking again.
    locked = ledger.lock(keys)
    now = timezone.now()
    created = _created_in_window(tasks, now)
    held_alongside: dict[int, Decimal] = defaultdict(lambda: ZERO)
    created_alongside: dict[int, int] = defaultdict(int)
    outcomes: list[Task | DomainError] = []
    postings = []
    held_rows: list[PreparedRow] = []
    for (task, limit), (row, _) in zip(tasks, items, strict=True):
        available_key, escrow_key = _hold_keys(task.buyer_id)
        earlier = held_alongside[task.buyer_id]
        available = locked[available_key].balance - earlier
        try:
            if limit is not None:
                _check_submit_limit(
                    task=task,
                    limit=limit,
                    created=created[(task.buyer_id, limit)],
                    created_alongside=created_alongside[task.buyer_id],
                    now=now,
                )
            _check_spend_cap(task=task, committed_alongside=earlier)
            if available < task.price:
                raise InsufficientFunds(
                    f"Insufficient balance: this task costs {task.price} but your available balance is "
                    f"{available} ({locked[escrow_key].balance + earlier} is held for unfinished tasks). "
                    "Add credit or lower the complexity.",
                    fields={"price": [str(task.price)], "balance": [str(available)]},
                )
        except DomainError as refusal:
            outcomes.append(refusal)
            continue
        held_alongside[task.buyer_id] = earlier + task.price
        held_rows.append(row)
        created_alongside[task.buyer_id] += 1
        outcomes.append(task)
        postings.append(
            ledger.Posting(
                [
                    ledger.Leg(locked[available_key], -task.price, "hold"),
                    ledger.Leg(locked[escrow_key], task.price, "hold"),
                ],
                task,
                f"hold for task {task.id}",
            )
        )
    insert_rows(held_rows)
    ledger.post_many(postings=postings, locked=locked.values())
    return outcomes


def _fee(price: Decimal) -> Decimal:
    return quantize_money(price * settings.AICP_PLATFORM_FEE) if settings.AICP_PLATFORM_FEE else Decimal(0)


def _payout_keys(*, task: Task, agent_id: int) -> list[ledger.AccountKey]:
    keys = [
        ledger.user_key(user_id=task.buyer_id, kind=Account.Kind.ESCROW),
        ledger.agent_key(agent_id=agent_id),
    ]
    if _fee(task.price):
        keys.append(ledger.platform_key(kind=Account.Kind.PLATFORM_REVENUE))
    return keys


def _payout(
    *, task: Task, agent_id: int, accounts: dict[ledger.AccountKey, Account]
) -> tuple[ledger.Posting, Decimal]:
    """Settles the hold to the executing agent (less the platform fee): the posting, what the agent earned.

    ``accounts``: the locked accounts of ``_payout_keys``.
    """
    fee = _fee(task.price)
    earned = task.price - fee
    escrow = accounts[ledger.user_key(user_id=task.buyer_id, kind=Account.Kind.ESCROW)]
    legs = [
        ledger.Leg(escrow, -earned, "payout"),
        ledger.Leg(accounts[ledger.agent_key(agent_id=agent_id)], earned, "payout"),
    ]
    if fee:
        legs += [
            ledger.Leg(escrow, -fee, "fee"),
            ledger.Leg(accounts[ledger.platform_key(kind=Account.Kind.PLATFORM_REVENUE)], fee, "fee"),
        ]
    return ledger.Posting(legs, task, f"payout for task {task.id}"), earned


def _release(*, task: Task) -> None:
    escrow_key = ledger.user_key(user_id=task.buyer_id, kind=Account.Kind.ESCROW)
    available_key = ledger.user_key(user_id=task.buyer_id, kind=Account.Kind.BUYER)
    locked = ledger.lock([escrow_key, available_key])
    ledger.post(
        legs=[
            ledger.Leg(locked[escrow_key], -task.price, "release"),
            ledger.Leg(locked[available_key], task.price, "release"),
        ],
        task=task,
        memo=f"release for task {task.id}",
        locked=locked.values(),
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


def _quoted_task(*, buyer: User, request: TaskRequest, agent: Agent, **fields: object) -> Task:
    """The task the request describes, with the agent's quote as its price; not saved."""
    price = quote(
        price_per_unit=agent.price_per_unit,
        complexity=request.complexity,
        success_count=agent.success_count,
        failure_count=agent.failure_count,
    )
    return Task(
        buyer=buyer,
        description=request.description,
        complexity=request.complexity,
        task_type=request.task_type,
        labels=list(request.labels) if request.labels else None,
        requested_agent=request.agent,
        agent=agent,
        price=price,
        **fields,
    )


def _create_held_task(
    *, buyer: User, request: TaskRequest, agent: Agent, limit: SubmitLimit | None, **fields: object
) -> Task:
    """One submission: the agent's quote, the task row, and the quote held in escrow (or a refusal)."""
    task = _quoted_task(buyer=buyer, request=request, agent=agent, **fields)
    (outcome,) = _insert_held(items=[(prepare_row(task), limit)])
    if isinstance(outcome, DomainError):
        raise outcome
    return outcome


@dataclass(frozen=True)
class Submission:
    buyer: User
    request: TaskRequest
    limit: SubmitLimit | None = None


def task_submit(*, buyer: User, request: TaskRequest, limit: SubmitLimit | None = None) -> Task:
    """Quotes, holds the quote in escrow and enqueues execution when the transaction commits.

    ``limit``: the buyer's submit limit (the API's throttle), checked inside the writing transaction.

    Routing comes first, outside the writing transaction (unless the caller has one): it may encode the
    text (tens of ms), and on SQLite a transaction holds the database's one write lock from BEGIN on, so
    every other writer (submissions, the drainers) would wait for it. A submission for an agent is
    written with the others arriving in this process meanwhile (``task_submit_many``, group commit).
    """
    if request.agent == "auto" and request.labels:
        duke = agent_duke()
        # Without an active Duke agent nobody could serve its answer: don't compute one.
        decision = (
            route(text=request.description, labels=request.labels, task_type=request.task_type)
            if duke is not None
            else None
        )
        if duke is not None and decision is not None:
            return _submit_served_by_duke(
                buyer=buyer, request=request, duke=duke, decision=decision, limit=limit
            )
    submission = Submission(buyer, request, limit)
    if transaction.get_connection().in_atomic_block:
        # The caller's transaction decides when this commits, so it cannot join a group's.
        (outcome,) = task_submit_many(submissions=[submission])
    else:
        outcome = _submissions.submit(submission)
    if isinstance(outcome, DomainError):
        raise outcome
    return outcome


def task_submit_many(*, submissions: Sequence[Submission]) -> list[Task | DomainError]:
    """Submissions for agents (not answered by Duke) written together; each task or its refusal, in order.

    Each is decided exactly as if submitted alone, one after the other in this order: the requested
    agent (read just before the writing transaction, so the quote uses its current reputation), the
    quote, the buyer's submit limit, spend cap and balance. The accepted ones share one transaction and
    its INSERTs, and one request for a drainer when it commits.

    What does not depend on the balances (agents, quotes, the task rows' values) is done before the
    transaction begins: on SQLite it holds the database's one write lock from BEGIN, and every other
    writer in every process waits for it.
    """
    agents: dict[str, Agent] = {}
    outcomes: list[Task | DomainError | None] = []
    quoted: list[tuple[int, PreparedRow, SubmitLimit | None]] = []
    for submission in submissions:
        name = submission.request.agent
        try:
            if name not in agents:
                agents[name] = _resolve_agent(name)
        except DomainError as refusal:  # each its own: an exception object is raised in one thread only
            outcomes.append(refusal)
            continue
        task = _quoted_task(buyer=submission.buyer, request=submission.request, agent=agents[name])
        quoted.append((len(outcomes), prepare_row(task), submission.limit))
        outcomes.append(None)
    held = _hold_and_enqueue(items=[(row, limit) for _, row, limit in quoted])
    for (index, _, _), outcome in zip(quoted, held, strict=True):
        outcomes[index] = outcome
    for task in held:
        if isinstance(task, Task):
            logger.info("Task %s SUBMITTED to %s at %s", task.short_id, task.agent.name, task.price)
    return outcomes  # type: ignore[return-value]


@transaction.atomic
def _hold_and_enqueue(*, items: Sequence[tuple[PreparedRow, SubmitLimit | None]]) -> list[Task | DomainError]:
    """``_insert_held``, and one request for a drainer for the tasks held when the transaction commits."""
    outcomes = _insert_held(items=items)
    accepted = [outcome.id for outcome in outcomes if isinstance(outcome, Task)]
    if accepted:
        from tasks import jobs

        transaction.on_commit(lambda: jobs.enqueue_executions(accepted))
    return outcomes


def _write_submission_group(group: Sequence[Submission]) -> list[Task | DomainError]:
    # Whichever thread leads, the group is written on the process's one writing connection (see there).
    with process_connection():
        return task_submit_many(submissions=group)


# Concurrent submissions in this process are written in groups (see aicp.group_commit).
_submissions: GroupCommit[Submission, Task | DomainError] = GroupCommit(
    _write_submission_group, max_group=lambda: settings.AICP_SUBMIT_GROUP_MAX
)


@transaction.atomic
def _submit_served_by_duke(
    *,
    buyer: User,
    request: TaskRequest,
    duke: Agent,
    decision: RouteDecision,
    limit: SubmitLimit | None = None,
) -> Task:
    """Duke answers in the request: quote, hold and payout in one transaction, no queue, no LLM call.

    What the LLM would have cost is recorded with it (the savings); a sampled few also go to the LLM
    after commit, unbilled, to measure live agreement.
    """
    task = _create_held_task(
        buyer=buyer,
        request=request,
        agent=duke,
        limit=limit,
        status=Task.Status.RUNNING,
        attempts=1,
        started_at=timezone.now(),
    )
    task_complete(
        task_id=task.id,
        outcome=Outcome(
            result=decision.label,
            confidence=decision.confidence,
            latency_ms=round(decision.encode_ms + decision.decide_ms),
        ),
        executed_by_id=duke.pk,
    )
    llm_agent, llm_price, llm_cost = _llm_alternative(request=request)
    duke_audit.served_record(
        task_id=task.id,
        task_type=task.task_type,
        model_version=decision.model_version,
        label=decision.label,
        confidence=decision.confidence,
        price=task.price,
        llm_agent=llm_agent,
        llm_price=llm_price,
        llm_cost_estimate=llm_cost,
        audit=decision.audit,
    )
    if decision.audit:
        from tasks import jobs

        transaction.on_commit(lambda: jobs.enqueue_duke_audit(task.id))
    task.refresh_from_db()
    return task


def _llm_alternative(*, request: TaskRequest) -> tuple[str, Decimal, Decimal]:
    """The default LLM agent `auto` would have used now: its name, its quote and its token cost estimate."""
    try:
        agent = agent_default_llm()
    except NotFound:
        return "", Decimal("0"), Decimal("0")
    price = quote(
        price_per_unit=agent.price_per_unit,
        complexity=request.complexity,
        success_count=agent.success_count,
        failure_count=agent.failure_count,
    )
    prompt_tokens, completion_tokens = estimate_label_tokens(
        text=request.description, labels=request.labels or ()
    )
    cost = token_cost(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        prompt_token_price=agent.prompt_token_price,
        completion_token_price=agent.completion_token_price,
    )
    return agent.name, price, cost


# --- idempotent submission -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SubmitResult:
    task: Task
    status_code: int
    body: dict
    replayed: bool


class _KeyTakenConcurrently(Exception):
    """A concurrent request with the same key committed between our lookup and our insert."""


def request_fingerprint(request: TaskRequest) -> str:
    """sha256 of the canonical JSON of the validated input: the same request hashes the same however sent."""
    canonical = json.dumps(asdict(request), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _find_key(*, user_id: int, key: str) -> IdempotencyKey | None:
    return IdempotencyKey.objects.select_related("task").filter(user_id=user_id, key=key).first()


@transaction.atomic
def _submit_once_with_key(
    *,
    buyer: User,
    request: TaskRequest,
    key: str,
    render: Callable[[Task], dict],
    limit: SubmitLimit | None,
) -> SubmitResult:
    # Locking the buyer's accounts serialises this buyer's submissions (PostgreSQL; SQLite's IMMEDIATE
    # transactions already do): a duplicate that arrives while the first is in flight waits here, then sees
    # the committed key and replays.
    ledger.lock_accounts(
        [
            ledger.account_for_user(user_id=buyer.pk, kind=Account.Kind.BUYER),
            ledger.account_for_user(user_id=buyer.pk, kind=Account.Kind.ESCROW),
        ]
    )
    now = timezone.now()
    IdempotencyKey.objects.filter(
        user=buyer, created_at__lt=now - timedelta(hours=settings.AICP_IDEMPOTENCY_TTL_H)
    ).delete()
    fingerprint = request_fingerprint(request)
    existing = _find_key(user_id=buyer.pk, key=key)
    if existing is not None:
        if existing.request_hash != fingerprint:
            raise Unprocessable(
                "This Idempotency-Key was already used with a different request body. "
                "Use a new key for a new task.",
                code="idempotency_key_reused",
            )
        return SubmitResult(
            task=existing.task,
            status_code=existing.response_status,
            body=existing.response_body,
            replayed=True,
        )
    task = task_submit(buyer=buyer, request=request, limit=limit)
    body = json.loads(json.dumps(render(task), cls=DjangoJSONEncoder))
    try:
        with transaction.atomic():
            IdempotencyKey.objects.create(
                user=buyer,
                key=key,
                request_hash=fingerprint,
                task=task,
                response_status=201,
                response_body=body,
            )
    except IntegrityError:
        if not IdempotencyKey.objects.filter(user=buyer, key=key).exists():
            raise
        raise _KeyTakenConcurrently from None
    return SubmitResult(task=task, status_code=201, body=body, replayed=False)


def task_submit_idempotent(
    *,
    buyer: User,
    request: TaskRequest,
    key: str,
    render: Callable[[Task], dict],
    limit: SubmitLimit | None = None,
) -> SubmitResult:
    """task_submit guarded by an Idempotency-Key: one task and one hold per (buyer, key), ever.

    A replay creates no task, so the submit limit never refuses it.

    The key row is written in the task's transaction with the rendered first response, so a replay returns
    exactly that response; the same key with a different body is refused (422).
    """
    for _ in range(2):
        try:
            return _submit_once_with_key(buyer=buyer, request=request, key=key, render=render, limit=limit)
        except _KeyTakenConcurrently:
            # Our task and hold were rolled back with the transaction; the next pass replays the winner.
            continue
    raise Conflict(
        "Another request with this Idempotency-Key is still being processed; retry shortly.",
        code="idempotency_in_progress",
    )


# --- execution ------------------------------------------------------------------------------------------


def claimable_tasks(
    *,
    now: datetime | None = None,
    exclude_agent_ids: Collection[int] = (),
    task_ids: Collection[uuid.UUID] | None = None,
    only_agent_id: int | None = None,
) -> QuerySet[Task]:
    """Pending tasks whose retry backoff has passed: what a claim may take (a read the drainer shares)."""
    now = now or timezone.now()
    tasks = Task.objects.filter(
        Q(not_before__isnull=True) | Q(not_before__lte=now), status=Task.Status.PENDING
    )
    if only_agent_id is not None:
        tasks = tasks.filter(agent_id=only_agent_id)
    if exclude_agent_ids:
        tasks = tasks.exclude(agent_id__in=list(exclude_agent_ids))
    if task_ids is not None:
        tasks = tasks.filter(pk__in=list(task_ids))
    return tasks


@transaction.atomic
def task_claim_batch(
    *,
    limit: int,
    exclude_agent_ids: Collection[int] = (),
    task_ids: Collection[uuid.UUID] | None = None,
    only_agent_id: int | None = None,
) -> list[Task]:
    """Moves up to ``limit`` claimable tasks, oldest first, to running with a lease; each to one caller only.

    PostgreSQL locks the candidates with SKIP LOCKED, so concurrent claimers take different rows; SQLite's
    IMMEDIATE transactions serialise claimers, so nobody writes between our read and our update.
    """
    if limit <= 0:
        return []
    now = timezone.now()
    candidates = claimable_tasks(
        now=now, exclude_agent_ids=exclude_agent_ids, task_ids=task_ids, only_agent_id=only_agent_id
    )
    ids = list(
        candidates.order_by("created_at")
        .select_for_update(skip_locked=True)
        .values_list("pk", flat=True)[:limit]
    )
    if not ids:
        return []
    # One statement for the batch. The candidates are ours alone (row locks, or SQLite's write lock), and
    # the status condition still guards the update; the rows stamped with this claim's instant are ours.
    Task.objects.filter(pk__in=ids, status=Task.Status.PENDING).update(
        status=Task.Status.RUNNING,
        lease_until=now + timedelta(seconds=settings.AICP_TASK_LEASE_S),
        started_at=now,
        updated_at=now,
        attempts=F("attempts") + 1,
    )
    return list(
        Task.objects.select_related("agent")
        .filter(pk__in=ids, status=Task.Status.RUNNING, started_at=now)
        .order_by("created_at")
    )


@transaction.atomic
def task_claim(*, task_id: uuid.UUID) -> Task | None:
    """Atomically moves a pending task to running with a lease; None if someone else has it or it is final."""
    claimed = task_claim_batch(limit=1, task_ids=[task_id])
    return claimed[0] if claimed else None


@transaction.atomic
def task_release_claims(
    *, task_ids: Collection[uuid.UUID], not_before: datetime | None, error: str = "", error_code: str = ""
) -> int:
    """Gives running tasks back to pending without counting the attempt: their call never had a fair try
    (the agent's circuit breaker is open). Nobody is billed; a drainer takes them again after not_before."""
    now = timezone.now()
    released = Task.objects.filter(pk__in=list(task_ids), status=Task.Status.RUNNING, attempts__gt=0).update(
        status=Task.Status.PENDING,
        attempts=F("attempts") - 1,
        lease_until=None,
        not_before=not_before,
        error=error[:4000],
        error_code=error_code[:32],
        updated_at=now,
    )
    if released:
        from tasks import jobs

        delay_s = max(0.0, (not_before - now).total_seconds()) if not_before else 0.0
        transaction.on_commit(lambda: jobs.request_drain(delay_s=delay_s))
    return released


@transaction.atomic
def task_extend_leases(*, task_ids: Collection[uuid.UUID]) -> int:
    """Renews the lease of tasks a live worker still holds, so the reaper leaves them alone."""
    now = timezone.now()
    return Task.objects.filter(pk__in=list(task_ids), status=Task.Status.RUNNING).update(
        lease_until=now + timedelta(seconds=settings.AICP_TASK_LEASE_S), updated_at=now
    )


@dataclass(frozen=True)
class Outcome:
    result: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: int = 0
    cost: Decimal = Decimal("0")
    confidence: float | None = None


@dataclass(frozen=True)
class Completion:
    task_id: uuid.UUID
    outcome: Outcome
    executed_by_id: int | None = None  # None: the assigned agent


@transaction.atomic
def task_complete(*, task_id: uuid.UUID, outcome: Outcome, executed_by_id: int | None = None) -> bool:
    """Stores the result and pays the agent, once. Returns False when the task was already final."""
    return _complete(completions=[Completion(task_id, outcome, executed_by_id)])[0]


@transaction.atomic
def task_complete_many(*, completions: Sequence[Completion]) -> list[bool]:
    """task_complete for several tasks in one transaction; per completion, whether it completed the task.

    The same effects as one task_complete each, with a few statements for the whole batch instead of a
    dozen per task: the tasks' rows are read (and, on PostgreSQL, locked) together, the accounts are
    found and locked together, the payouts are one INSERT and one balance UPDATE per account, and each
    agent's counters one UPDATE. Each task still goes final through its own conditional UPDATE, so a
    task another worker already settled is skipped (False), and the ledger's unique settlement constraint
    still refuses a second payout. A failure rolls back the whole batch (callers that must keep the rest
    retry task by task).
    """
    return _complete(completions=completions)


def _complete(*, completions: Sequence[Completion]) -> list[bool]:
    # Callers may name a task by its id's string, as a lookup by pk would accept.
    completions = [
        c
        if isinstance(c.task_id, uuid.UUID)
        else Completion(uuid.UUID(str(c.task_id)), c.outcome, c.executed_by_id)
        for c in completions
    ]
    ids = [c.task_id for c in completions]
    open_statuses = [Task.Status.PENDING, Task.Status.RUNNING]
    tasks = {
        task.pk: task
        for task in Task.objects.select_related("agent")
        .select_for_update(of=("self",))
        .filter(pk__in=ids, status__in=open_statuses)
        .order_by("pk")  # row locks in one order: concurrent batches cannot deadlock on PostgreSQL
    }
    now = timezone.now()
    finished: list[tuple[Task, Completion]] = []
    for completion in completions:
        task = tasks.pop(completion.task_id, None)  # popped: a task listed twice completes once
        if task is None:
            continue
        outcome = completion.outcome
        executor_id = completion.executed_by_id or task.agent_id
        # The status condition is the guarantee; the lock above only makes it the expected outcome.
        if Task.objects.filter(pk=task.pk, status__in=open_statuses).update(
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
        ):
            finished.append((task, Completion(task.pk, outcome, executor_id)))
    if not finished:
        return [False] * len(completions)

    others = {c.executed_by_id for t, c in finished if c.executed_by_id != t.agent_id}
    executors = {t.agent_id: t.agent for t, _ in finished} | Agent.objects.in_bulk(others)
    accounts = ledger.lock(
        {key for t, c in finished for key in _payout_keys(task=t, agent_id=c.executed_by_id)}
    )
    postings = []
    earnings: dict[int, list[Decimal]] = defaultdict(list)
    for task, completion in finished:
        posting, earned = _payout(task=task, agent_id=completion.executed_by_id, accounts=accounts)
        postings.append(posting)
        earnings[completion.executed_by_id].append(earned)
    ledger.post_many(postings=postings, locked=accounts.values())
    for agent_id, earned in earnings.items():
        agent_record_outcome(
            agent_id=agent_id, success=True, earned=sum(earned, Decimal(0)), count=len(earned)
        )
    for task, completion in finished:
        executor = executors[completion.executed_by_id]
        if executor.backend != Agent.Backend.DUKE:
            # Duke's own answers never become its training labels: it would learn its own mistakes.
            _record_sample(task, output=completion.outcome.result)
        logger.info(
            "Task %s COMPLETED by %s in %s ms", task.short_id, executor.name, completion.outcome.latency_ms
        )
    done = {task.pk for task, _ in finished}
    results = []
    for completion in completions:
        results.append(completion.task_id in done)
        done.discard(completion.task_id)  # a task listed twice counts once, at its first listing
    return results


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
    requeued = [
        task_id
        for task_id in expired
        if Task.objects.filter(pk=task_id, status=Task.Status.RUNNING, lease_until__lt=now).update(
            status=Task.Status.PENDING, lease_until=None, updated_at=now
        )
    ]
    # Claimable work with no drainer (a crash between commit and enqueue, a purged queue, a drainer that
    # died) must not wait for the next submission: ask for one; the drain slots make a spare request free.
    if requeued or claimable_tasks(now=now).exists():
        from tasks import jobs

        transaction.on_commit(jobs.request_drain)
    if requeued:
        logger.warning("Reaper re-queued %d task(s) whose lease expired", len(requeued))
    return requeued


# --- drainer slots --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlotLease:
    number: int
    token: uuid.UUID


def _take_drain_slot(*, number: int, token: uuid.UUID, state: str, lease_s: float, now: datetime) -> bool:
    return bool(
        DrainSlot.objects.filter(Q(lease_until__isnull=True) | Q(lease_until__lte=now), number=number).update(
            token=token, state=state, lease_until=now + timedelta(seconds=lease_s), updated_at=now
        )
    )


def _take_any_drain_slot(*, slots: int, state: str, lease_s: float) -> SlotLease | None:
    now = timezone.now()
    if drain_slots_busy(slots=slots, now=now) >= slots:
        return None  # the usual answer under load, found without building an ORM query
    leases = dict(DrainSlot.objects.filter(number__lt=slots).values_list("number", "lease_until"))
    if len(leases) < slots:
        DrainSlot.objects.bulk_create(
            [DrainSlot(number=n) for n in range(slots) if n not in leases], ignore_conflicts=True
        )
    for number in range(slots):
        if leases.get(number) is not None and leases[number] > now:
            continue
        token = uuid.uuid4()
        if _take_drain_slot(number=number, token=token, state=state, lease_s=lease_s, now=now):
            return SlotLease(number, token)
    return None


# Not @transaction.atomic on purpose: every submission calls this, and on SQLite an atomic block takes the
# write lock at BEGIN even to find that all slots are busy. Each UPDATE on its own is atomic.
def drain_slot_reserve(*, slots: int, ttl_s: float) -> SlotLease | None:
    """Reserves a free drainer slot for a job about to be enqueued; None when all are busy (one read)."""
    return _take_any_drain_slot(slots=slots, state=DrainSlot.State.QUEUED, lease_s=ttl_s)


def drain_slot_acquire(*, slots: int, lease_s: float, reserved: SlotLease | None = None) -> SlotLease | None:
    """A starting drainer takes the slot reserved for it, or any free one; None: enough drainers run."""
    if reserved is not None:
        now = timezone.now()
        if DrainSlot.objects.filter(number=reserved.number, token=reserved.token).update(
            state=DrainSlot.State.RUNNING, lease_until=now + timedelta(seconds=lease_s), updated_at=now
        ):
            return reserved
    return _take_any_drain_slot(slots=slots, state=DrainSlot.State.RUNNING, lease_s=lease_s)


def drain_slot_renew(*, lease: SlotLease, lease_s: float) -> bool:
    now = timezone.now()
    return bool(
        DrainSlot.objects.filter(number=lease.number, token=lease.token).update(
            lease_until=now + timedelta(seconds=lease_s), updated_at=now
        )
    )


def drain_slot_release(*, lease: SlotLease) -> None:
    DrainSlot.objects.filter(number=lease.number, token=lease.token).update(
        state=DrainSlot.State.IDLE, token=None, lease_until=None, updated_at=timezone.now()
    )


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


# --- buyer feedback -------------------------------------------------------------------------------------


class NotTaskOwner(DomainError):
    status_code = 403
    code = "not_task_owner"


@transaction.atomic
def task_feedback(*, user: User, task_id: uuid.UUID | str, accepted: bool, correct_label: str = "") -> Task:
    """The buyer's verdict on a completed labeling task, given once (an identical repeat changes nothing).

    A rejection (accepted false, or a correction) counts against the executing agent's reputation and,
    for Duke, against its live agreement; a correction becomes the task's training label.
    """
    try:
        task = Task.objects.select_related("executed_by").filter(pk=uuid.UUID(str(task_id))).first()
    except ValueError:
        task = None
    if task is None or task.buyer_id != user.pk:
        if task is not None and user.is_operator:
            raise NotTaskOwner("Only the buyer who submitted the task can give feedback on it.")
        raise NotFound("No such task.", code="task_not_found")
    if not task.is_labeling or task.status != Task.Status.COMPLETED:
        kind = "labeling task" if task.is_labeling else "free-form task"
        raise Conflict(
            f"Feedback is for completed labeling tasks; this is a {task.status} {kind}.",
            code="feedback_not_applicable",
        )
    correction = _validated_correction(task=task, accepted=accepted, correct_label=correct_label)
    now = timezone.now()
    given = Task.objects.filter(pk=task.pk, accepted__isnull=True).update(
        accepted=accepted, correct_label=correction, updated_at=now
    )
    if not given:
        task.refresh_from_db(fields=["accepted", "correct_label"])
        if task.accepted == accepted and task.correct_label == correction:
            return task
        raise Conflict("Feedback was already given for this task.", code="feedback_exists")
    executor = task.executed_by
    by_duke = executor is not None and executor.backend == Agent.Backend.DUKE
    if not accepted and executor is not None:
        agent_record_correction(agent_id=executor.pk)
    if by_duke:
        duke_audit.served_verdict(task_id=task.id, accepted=accepted)
    if correction:
        # Duke's own answers are never samples (unless an audit made one), so the correction is the label.
        _record_sample(task, output=correction if by_duke else task.result)
        sample_correct(task_id=task.id, correct_label=correction)
    verdict = "accepted" if accepted else f"corrected to {correction!r}" if correction else "rejected"
    logger.info("Task %s FEEDBACK %s (executed by %s)", task.short_id, verdict, executor)
    task.refresh_from_db()
    return task


def _validated_correction(*, task: Task, accepted: bool, correct_label: str) -> str:
    """The correction to store: empty for an acceptance; a label of the task's, other than its result."""
    if not correct_label:
        return ""
    if correct_label not in task.labels:
        raise DomainError(
            f"{correct_label!r} is not one of this task's labels.",
            code="invalid_label",
            fields={"correct_label": [f"Must be one of: {', '.join(task.labels)}."]},
        )
    if correct_label == task.result:
        if not accepted:
            raise DomainError(
                "correct_label is the task's own result: a rejection must name another label.",
                code="contradictory_feedback",
                fields={"correct_label": ["Equals the result."]},
            )
        return ""  # naming the answer it already has confirms it
    if accepted:
        raise DomainError(
            "accepted is true but correct_label names a different label.",
            code="contradictory_feedback",
            fields={"accepted": ["Must be false when correct_label differs from the result."]},
        )
    return correct_label
