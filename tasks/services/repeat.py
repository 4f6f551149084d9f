"""Exact repeat answers: a labeling task identical to one an LLM already answered is answered from that
stored result, at Duke's price, without an LLM call.

What "identical" means (the repeat key, a sha256 stored on every labeling task at submission, under a
partial index):

- the same ``task_type`` (exactly: it is a slug),
- the same label *set* (each label exactly as given; order and duplicates do not matter): the stored
  answer must be one of the new task's labels verbatim, so labels are not case-folded or normalised,
- the same text after normalisation: Unicode NFC (canonical composition: "é" typed as one code point or
  as "e" + combining accent is the same text), every run of whitespace (any Unicode space, tabs,
  newlines) collapsed to one space, leading and trailing whitespace dropped. Case is kept: "US" and "us",
  "Apple" and "apple" can take different labels, and a repeat must be an exact one. NFKC is not used
  either: it folds "x²" into "x2" and full-width forms into ASCII, which can change what a text says.

Which answers are reused: those of tasks *completed by an LLM agent* (backend ``openai``) whose
``finished_at`` is within ``AICP_REPEAT_TTL`` seconds (default 7 days; 0 turns the store off), and whose
buyer did not reject them (``accepted`` false); the newest such answer wins. Failed tasks never answer.
Duke's own answers are not reused: Duke answers an identical text identically by itself, under its live
certificate and audits (a suspended task type must not keep being answered from Duke's old outputs).
Repeat answers are not reused either (their source is). Free-form tasks carry no key and are never
answered from the store. Only tasks submitted with ``agent: "auto"`` are served from it: a buyer who names
an agent gets that agent. Duke comes first: a task its certificate covers is Duke's (at the same price);
the store answers the identical tasks Duke does not take (before it is certified for the task type, or
below its threshold).

A repeat answer is executed by the ``repeat`` agent (``executed_by: "repeat"``): a house agent like Duke
(backend ``duke``, so lifecycle records no training sample for it and settles it exactly like a
Duke-served task: the quote held, then paid to the agent's account with the platform fee), created on
first use, inactive so that it can be neither requested by name nor mistaken for Duke by routing. Its
quote is Duke's (``agent_duke()``'s price and reputation; the repeat agent's own, equal by default, when
no Duke agent is active).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.utils import timezone

from agents.models import Agent
from agents.pricing import quote
from agents.selectors import agent_duke
from tasks.models import Task
from tasks.services.lifecycle import Completion, Outcome, task_complete_many
from users.models import User

logger = logging.getLogger("tasks")

REPEAT_AGENT = "repeat"
_REPEAT_AGENT_DEFAULTS = {
    "backend": Agent.Backend.DUKE,
    "model": "repeat-store",
    "price_per_unit": Decimal("0.0020"),
    "is_active": False,
}
# Keys looked up per statement (a batch of 10,000 tasks asks in chunks).
_LOOKUP_CHUNK = 500


def normalise_text(text: str) -> str:
    """NFC, whitespace runs collapsed to one space, stripped (see the module's docstring)."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def repeat_key(*, task_type: str, labels: Sequence[str] | None, text: str) -> str:
    """The task's repeat key: hex sha256 of (task type, sorted distinct labels, normalised text); "" for a
    free-form task (no labels)."""
    if not labels:
        return ""
    canonical = json.dumps(
        [task_type, sorted(set(labels)), normalise_text(text)], ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class RepeatAnswer:
    source_id: uuid.UUID
    label: str
    lookup_ms: int = 0


def repeat_answers_find(*, keys: Sequence[str]) -> dict[str, RepeatAnswer]:
    """The newest reusable answer for each key that has one (empty keys, and all keys while the store is
    off, have none)."""
    ttl_s = settings.AICP_REPEAT_TTL
    wanted = sorted({key for key in keys if key})
    if ttl_s <= 0 or not wanted:
        return {}
    started = time.perf_counter()
    since = timezone.now() - timedelta(seconds=ttl_s)
    found: dict[str, tuple[object, uuid.UUID, str]] = {}
    for start in range(0, len(wanted), _LOOKUP_CHUNK):
        rows = (
            Task.objects.filter(
                repeat_key__in=wanted[start : start + _LOOKUP_CHUNK],
                status=Task.Status.COMPLETED,
                finished_at__gte=since,
                executed_by__backend=Agent.Backend.OPENAI,
            )
            .exclude(accepted=False)
            .exclude(repeat_key="")  # spelled out: the partial index's condition, for the planner
            .order_by("repeat_key", "-finished_at")
            .values_list("repeat_key", "finished_at", "pk", "result")
        )
        for key, finished_at, pk, result in rows:
            found.setdefault(key, (finished_at, pk, result))  # rows come newest first per key
    lookup_ms = round((time.perf_counter() - started) * 1000)
    return {key: RepeatAnswer(pk, result, lookup_ms) for key, (_, pk, result) in found.items()}


def repeat_answer_find(*, task_type: str, labels: Sequence[str] | None, text: str) -> RepeatAnswer | None:
    """The stored answer an identical labeling task may reuse now, or None."""
    if not labels or settings.AICP_REPEAT_TTL <= 0:
        return None
    key = repeat_key(task_type=task_type, labels=labels, text=text)
    return repeat_answers_find(keys=[key]).get(key)


def repeat_agent() -> Agent:
    """The house agent repeat answers are executed by (created on first use; see the module docstring)."""
    agent, _ = Agent.objects.get_or_create(name=REPEAT_AGENT, defaults=_REPEAT_AGENT_DEFAULTS)
    return agent


def repeat_task(
    *,
    buyer: User,
    description: str,
    complexity: int,
    task_type: str,
    labels: Sequence[str],
    agent: Agent,
) -> Task:
    """An unsaved task for a repeat answer: assigned to the repeat agent, quoted at Duke's price, running."""
    pricing = agent_duke() or agent
    price = quote(
        price_per_unit=pricing.price_per_unit,
        complexity=complexity,
        success_count=pricing.success_count,
        failure_count=pricing.failure_count,
    )
    return Task(
        buyer=buyer,
        description=description,
        complexity=complexity,
        task_type=task_type,
        labels=list(labels),
        requested_agent="auto",
        agent=agent,
        price=price,
        status=Task.Status.RUNNING,
        attempts=1,
        started_at=timezone.now(),
        repeat_key=repeat_key(task_type=task_type, labels=labels, text=description),
    )


def repeat_complete(*, answered: Sequence[tuple[Task, RepeatAnswer]]) -> None:
    """Completes held repeat tasks with their stored answers: the repeat agent paid, no training sample.

    The caller holds the transaction in which the tasks and their holds were written.
    """
    task_complete_many(
        completions=[
            Completion(task.id, Outcome(result=answer.label, latency_ms=answer.lookup_ms), task.agent_id)
            for task, answer in answered
        ]
    )
    for task, answer in answered:
        logger.info("Task %s answered from the repeat store (source %s)", task.short_id, answer.source_id)
