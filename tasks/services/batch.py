"""POST /tasks/batch: many tasks submitted all-or-nothing, in one transaction.

Each task is decided exactly as POST /tasks decides it (tasks.services.submission: the requested agent,
the quote, a repeat answer or Duke for ``auto`` labeling tasks, the buyer's submit limit), but the batch
succeeds or fails as a whole: an invalid item refuses the batch (400, errors keyed by item index), a total
quote beyond the buyer's available balance or daily spend cap refuses it (402 with the shortfall), and
nothing is created or held. Accepted, the tasks, one escrow hold each, are written in one transaction with
a few multi-row INSERTs (``_insert_held`` in chunks), and one drainer request covers them after commit.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from agents.models import Agent
from agents.selectors import agent_duke
from core.exceptions import DomainError, InsufficientFunds, NotFound
from core.perf.db import PreparedRow, prepare_row
from duke.router import RouteDecision, route
from ledger import entries
from ledger.models import ZERO
from ledger.services import hold_keys
from tasks import queue
from tasks.models import Task
from tasks.selectors import buyer_committed_today
from tasks.services.idempotency import request_fingerprint
from tasks.services.limits import SubmitLimit, buyer_daily_spend_cap
from tasks.services.repeat import (
    RepeatAnswer,
    repeat_agent,
    repeat_answers_find,
    repeat_complete,
    repeat_key,
)
from tasks.services.submission import (
    TaskRequest,
    _insert_held,
    _quoted_task,
    _repeat_quoted_task,
    _resolve_agent,
    _submit_served_by_duke,
)
from users.models import User

logger = logging.getLogger("tasks")

MAX_JSON_ITEMS = 1_000
MAX_NDJSON_ITEMS = 10_000
# Tasks per multi-row INSERT: bounded so a statement stays under SQLite's and PostgreSQL's limits on
# parameters (32,766 and 65,535; a task row has ~30), and a remainder is split into powers of two so the
# statements core.perf.db caches by their number of rows stay few.
WRITE_CHUNK = 512


class BatchInvalid(DomainError):
    """Some items cannot be submitted; ``fields`` maps each one's index (a string) to its messages."""

    code = "invalid"


class BatchAgentNotFound(BatchInvalid):
    """Every refused item names an agent that does not exist: 404, as POST /tasks answers for one."""

    status_code = 404
    code = "agent_not_found"


@dataclass
class _Planned:
    task: Task  # quoted, not saved
    row: PreparedRow | None = None  # written by _insert_held (LLM agents and repeat answers)
    answer: RepeatAnswer | None = None
    decision: RouteDecision | None = None
    request: TaskRequest | None = None


def batch_fingerprint(requests: Sequence[TaskRequest]) -> str:
    """The Idempotency-Key fingerprint of a batch: the same tasks in the same order hash the same however
    sent (JSON or NDJSON), and never like a single POST /tasks body."""
    digest = hashlib.sha256(b"batch")
    for request in requests:
        digest.update(request_fingerprint(request).encode())
    return digest.hexdigest()


def task_submit_batch(
    *, buyer: User, requests: Sequence[TaskRequest], limit: SubmitLimit | None = None
) -> list[Task]:
    """Submits every request or none; the tasks in input order (see the module docstring).

    Agents, repeat answers, Duke's routing and quotes are worked out before the writing transaction
    begins (on SQLite it holds the database's one write lock from BEGIN).
    """
    return batch_write(buyer=buyer, plan=batch_plan(buyer=buyer, requests=requests), limit=limit)


def batch_plan(*, buyer: User, requests: Sequence[TaskRequest]) -> list[_Planned]:
    """What does not need the write lock: agents (BatchInvalid / BatchAgentNotFound by index), Duke's
    decisions, repeat answers, quotes and the rows to insert. Nothing is written (but the repeat agent, once).
    """
    return _plan(buyer=buyer, requests=requests)


def batch_write(*, buyer: User, plan: Sequence[_Planned], limit: SubmitLimit | None = None) -> list[Task]:
    """A batch_plan written all-or-nothing in one transaction (402 on funds, 429 on the submit limit)."""
    return _write(buyer=buyer, planned=plan, limit=limit)


def _plan(*, buyer: User, requests: Sequence[TaskRequest]) -> list[_Planned]:
    agents: dict[str, Agent | DomainError] = {}
    errors: dict[str, list[str]] = {}
    all_not_found = True
    for index, request in enumerate(requests):
        if request.agent not in agents:
            try:
                agents[request.agent] = _resolve_agent(request.agent)
            except DomainError as refusal:
                agents[request.agent] = refusal
        agent = agents[request.agent]
        if isinstance(agent, DomainError):
            errors[str(index)] = [f"agent: {agent.message}"]
            all_not_found = all_not_found and isinstance(agent, NotFound)
    if errors:
        refusal = BatchAgentNotFound if all_not_found else BatchInvalid
        raise refusal(
            f"{len(errors)} of {len(requests)} tasks cannot be submitted; nothing was submitted.",
            fields=errors,
        )
    auto_labeling = [r.agent == "auto" and bool(r.labels) for r in requests]
    duke = agent_duke() if any(auto_labeling) else None
    # Duke first, as POST /tasks decides: it answers what its certificate covers.
    decisions = [
        route(text=r.description, labels=r.labels or (), task_type=r.task_type)
        if wanted and duke is not None
        else None
        for r, wanted in zip(requests, auto_labeling, strict=True)
    ]
    # Then the repeat store, for identical labeling tasks Duke does not take.
    keys = [
        repeat_key(task_type=r.task_type, labels=r.labels, text=r.description)
        if wanted and decision is None
        else ""
        for r, wanted, decision in zip(requests, auto_labeling, decisions, strict=True)
    ]
    answers = repeat_answers_find(keys=keys) if any(keys) else {}
    house = repeat_agent() if answers else None
    planned: list[_Planned] = []
    for request, key, decision in zip(requests, keys, decisions, strict=True):
        if decision is not None and duke is not None:
            # Written by _submit_served_by_duke in the batch's transaction; quoted here for the total.
            task = _quoted_task(buyer=buyer, request=request, agent=duke)
            planned.append(_Planned(task=task, decision=decision, request=request))
            continue
        answer = answers.get(key) if key else None
        if answer is not None and house is not None:
            task = _repeat_quoted_task(buyer=buyer, request=request, agent=house)
            planned.append(_Planned(task=task, row=prepare_row(task), answer=answer))
            continue
        agent = agents[request.agent]
        assert isinstance(agent, Agent)
        task = _quoted_task(buyer=buyer, request=request, agent=agent)
        planned.append(_Planned(task=task, row=prepare_row(task)))
    return planned


@transaction.atomic
def _write(*, buyer: User, planned: Sequence[_Planned], limit: SubmitLimit | None) -> list[Task]:
    total = sum((p.task.price for p in planned), ZERO)
    available_key, escrow_key = hold_keys(buyer.pk)
    locked = entries.lock({available_key, escrow_key})  # this buyer's submissions wait for ours from here
    _check_budget(buyer=buyer, total=total, available=locked[available_key].balance)
    held = [p for p in planned if p.row is not None]
    for start, end in _chunks(len(held)):
        chunk = held[start:end]
        for outcome in _insert_held(items=[(p.row, limit) for p in chunk if p.row is not None]):
            if isinstance(outcome, DomainError):
                raise outcome  # the submit limit (429), or funds moved under us: the whole batch goes
    answered = [(p.task, p.answer) for p in planned if p.answer is not None]
    if answered:
        repeat_complete(answered=answered)
        fresh = Task.objects.select_related("agent", "executed_by", "buyer").in_bulk(
            [task.pk for task, _ in answered]
        )
        for p in planned:
            if p.answer is not None:
                p.task = fresh[p.task.pk]
    for p in planned:
        if p.decision is not None and p.request is not None:
            p.task = _submit_served_by_duke(
                buyer=buyer, request=p.request, duke=p.task.agent, decision=p.decision, limit=limit
            )
    queued = [p.task.pk for p in planned if p.answer is None and p.decision is None]
    if queued:
        queue.enqueue_executions_on_commit(queued)
    logger.info(
        "Batch of %d tasks SUBMITTED by %s for %s (%d to agents, %d repeat answers, %d by Duke)",
        len(planned),
        buyer.username,
        total,
        len(queued),
        len(answered),
        len(planned) - len(queued) - len(answered),
    )
    return [p.task for p in planned]


def _chunks(count: int) -> list[tuple[int, int]]:
    """[start, end) ranges covering ``count`` items: WRITE_CHUNK at a time, the rest in powers of two."""
    ranges = []
    start = 0
    while start < count:
        left = count - start
        size = WRITE_CHUNK if left >= WRITE_CHUNK else 1 << (left.bit_length() - 1)
        ranges.append((start, start + size))
        start += size
    return ranges


def _check_budget(*, buyer: User, total: Decimal, available: Decimal) -> None:
    """402 with the shortfall when the batch's total quote exceeds the available balance or what is left
    of today's spend cap (checked with the buyer's accounts locked)."""
    if total > available:
        shortfall = total - available
        raise InsufficientFunds(
            f"Insufficient balance: this batch costs {total} but your available balance is {available} "
            f"(short by {shortfall}). Nothing was submitted; add credit or submit fewer tasks.",
            fields={"total": [str(total)], "balance": [str(available)], "shortfall": [str(shortfall)]},
        )
    cap = buyer_daily_spend_cap(user=buyer)
    if cap is None:
        return
    committed = buyer_committed_today(user_id=buyer.pk, now=timezone.now())
    if committed + total > cap:
        shortfall = committed + total - cap
        raise InsufficientFunds(
            f"Daily spend cap: this batch costs {total}, you have already committed {committed} today (UTC) "
            f"and your cap is {cap} (short by {shortfall}). Nothing was submitted.",
            code="spend_cap_exceeded",
            fields={
                "total": [str(total)],
                "committed_today": [str(committed)],
                "cap": [str(cap)],
                "shortfall": [str(shortfall)],
            },
        )
