"""Submitting tasks: quote, limits, escrow hold and route (Duke answers in the request, or a drainer is
asked for on commit); written in groups per process (group commit); an operator's resubmission."""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import cast

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents.llm import estimate_label_tokens
from agents.models import Agent
from agents.pricing import batch_quote, quote, token_cost
from agents.selectors import agent_default_llm, agent_duke, agent_get
from core.exceptions import (
    DomainError,
    InsufficientFunds,
    NotFound,
)
from core.perf.db import PreparedRow, insert_rows, prepare_row, process_connection
from core.perf.group_commit import Committed, GroupCommit
from duke.router import RouteDecision, route
from duke.services import audit as duke_audit
from ledger import entries
from ledger.models import ZERO
from ledger.services import (
    hold_keys,
    hold_posting,
)
from tasks import queue
from tasks.models import Task
from tasks.services.lifecycle import Outcome, task_complete
from tasks.services.limits import SubmitLimit, check_spend_cap, check_submit_limit, created_in_window
from tasks.services.repeat import (
    RepeatAnswer,
    repeat_agent,
    repeat_answer_find,
    repeat_complete,
    repeat_key,
    repeat_task,
)
from users.models import User

logger = logging.getLogger("tasks")


@dataclass(frozen=True)
class TaskRequest:
    description: str
    complexity: int
    task_type: str = ""
    labels: tuple[str, ...] | None = None
    agent: str = "auto"
    callback_url: str = ""  # checked by tasks.webhooks.addresses before it gets here
    priority: str = Task.Priority.NORMAL


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
    if request.priority == Task.Priority.BATCH and agent.backend != Agent.Backend.DUKE:
        price = batch_quote(
            quote=price,
            llm_cost_estimate=_llm_cost_estimate(request, agent),
            discount=settings.AICP_BATCH_DISCOUNT,
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
        repeat_key=repeat_key(task_type=request.task_type, labels=request.labels, text=request.description),
        callback_url=request.callback_url,
        priority=request.priority,
        **fields,
    )


# A free-form answer's length is unknown before it is written; this many tokens stand for it in estimates.
_FREE_FORM_COMPLETION_TOKENS_ESTIMATE = 256


def _llm_cost_estimate(request: TaskRequest, agent: Agent) -> Decimal:
    """The agent's token cost of the call the task would make (what the Batch API discount applies to)."""
    if request.labels:
        prompt_tokens, completion_tokens = estimate_label_tokens(
            text=request.description, labels=request.labels
        )
    else:
        prompt_tokens = len(request.description) // 4 + 20
        completion_tokens = _FREE_FORM_COMPLETION_TOKENS_ESTIMATE
    return token_cost(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        prompt_token_price=agent.prompt_token_price,
        completion_token_price=agent.completion_token_price,
    )


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
    keys = {key for task, _ in tasks for key in hold_keys(task.buyer_id)}
    # Found and locked in one statement; the posting below reuses the locked rows instead of locking again.
    locked = entries.lock(keys)
    now = timezone.now()
    created = created_in_window(tasks, now)
    held_alongside: dict[int, Decimal] = defaultdict(lambda: ZERO)
    created_alongside: dict[int, int] = defaultdict(int)
    outcomes: list[Task | DomainError] = []
    postings = []
    held_rows: list[PreparedRow] = []
    for (task, limit), (row, _) in zip(tasks, items, strict=True):
        available_key, escrow_key = hold_keys(task.buyer_id)
        earlier = held_alongside[task.buyer_id]
        available = locked[available_key].balance - earlier
        try:
            if limit is not None:
                check_submit_limit(
                    task=task,
                    limit=limit,
                    created=created[(task.buyer_id, limit)],
                    created_alongside=created_alongside[task.buyer_id],
                    now=now,
                )
            check_spend_cap(task=task, committed_alongside=earlier)
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
            hold_posting(accounts=locked, buyer_id=task.buyer_id, task_id=task.id, price=task.price)
        )
    insert_rows(held_rows)
    entries.post_many(postings=postings, locked=locked.values())
    return outcomes


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
        # What Duke does not take, an identical task's stored LLM answer may (tasks.services.repeat).
        answer = repeat_answer_find(
            task_type=request.task_type, labels=request.labels, text=request.description
        )
        if answer is not None:
            return _submit_served_by_repeat(buyer=buyer, request=request, answer=answer, limit=limit)
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
    its INSERTs, and one request for a drainer when it commits. Outside a caller's transaction, a failure
    after the commit raises ``Committed`` with the outcomes (the tasks exist: never write them again).

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
    after_commit: Committed | None = None
    try:
        held = _hold_and_enqueue(items=[(row, limit) for _, row, limit in quoted])
    except Committed as committed:
        held, after_commit = committed.results, committed
    for (index, _, _), outcome in zip(quoted, held, strict=True):
        outcomes[index] = outcome
    for task in held:
        if isinstance(task, Task):
            logger.info("Task %s SUBMITTED to %s at %s", task.short_id, task.agent.name, task.price)
    if after_commit is not None:
        raise Committed(outcomes) from after_commit.__cause__
    return outcomes  # type: ignore[return-value]


def _hold_and_enqueue(*, items: Sequence[tuple[PreparedRow, SubmitLimit | None]]) -> list[Task | DomainError]:
    """``_insert_held`` in a transaction, and one request for a drainer for the tasks held on commit.

    The enqueue is guarded (it never raises); should anything else fail once the transaction has
    committed (a commit callback that is not guarded), this raises ``Committed`` with the outcomes: the
    tasks exist and are held, and whoever retries a failed write (group commit) must answer them, not
    write them again.
    """
    outcomes: list[Task | DomainError] = []
    accepted: list[uuid.UUID] = []
    try:
        with transaction.atomic():
            outcomes = _insert_held(items=items)
            accepted = [outcome.id for outcome in outcomes if isinstance(outcome, Task)]
            if accepted:
                queue.enqueue_executions_on_commit(accepted)
    except Exception as error:
        if accepted and _committed(accepted):
            raise Committed(outcomes) from error
        raise
    return outcomes


def _committed(task_ids: Sequence[uuid.UUID]) -> bool:
    """After an error left the submission's transaction: did it commit? The database says (this runs only
    on that rare path; inside a caller's transaction nothing has committed yet)."""
    if transaction.get_connection().in_atomic_block:
        return False
    try:
        return Task.objects.filter(pk=task_ids[0]).exists()
    except Exception:  # noqa: BLE001 - a database that cannot answer: the original error is raised
        return False


def _write_submission_group(group: Sequence[Submission]) -> list[Task | DomainError]:
    # Whichever thread leads, the group is written on the process's one writing connection (see there).
    with process_connection():
        return task_submit_many(submissions=group)


# Concurrent submissions in this process are written in groups (see core.perf.group_commit).
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
        queue.enqueue_duke_audit_on_commit(task.id)
    task.refresh_from_db()
    return task


def _repeat_quoted_task(*, buyer: User, request: TaskRequest, agent: Agent) -> Task:
    """The unsaved task a repeat answer serves, quoted at Duke's price (tasks.services.repeat)."""
    return repeat_task(
        buyer=buyer,
        description=request.description,
        complexity=request.complexity,
        task_type=request.task_type,
        labels=request.labels or (),
        agent=agent,
    )


@transaction.atomic
def _submit_served_by_repeat(
    *, buyer: User, request: TaskRequest, answer: RepeatAnswer, limit: SubmitLimit | None = None
) -> Task:
    """An identical labeling task was answered by an LLM within AICP_REPEAT_TTL (tasks.services.repeat):
    quote (Duke's price), hold and payout in one transaction, no queue, no LLM call, no training sample."""
    task = _repeat_quoted_task(buyer=buyer, request=request, agent=repeat_agent())
    (outcome,) = _insert_held(items=[(prepare_row(task), limit)])
    if isinstance(outcome, DomainError):
        raise outcome
    repeat_complete(answered=[(task, answer)])
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
            callback_url=original.callback_url,
            priority=original.priority,
        ),
    )
