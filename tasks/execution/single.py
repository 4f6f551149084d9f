"""Runs tasks: the LLM call happens outside any transaction; each database step is an atomic service.

Tasks run in batches on a drainer (tasks.execution.drainer), which keeps many calls in flight;
``run_task`` is the same machinery for one given task. Not a service: it does network I/O.
"""

from __future__ import annotations

import logging
import uuid

from django.conf import settings

from agents import llm
from agents.models import Agent
from agents.pricing import token_cost
from agents.selectors import agent_default_llm
from core.exceptions import NotFound
from duke.services import audit as duke_audit
from tasks.execution.drainer import Drainer
from tasks.models import Task
from tasks.services.lifecycle import Outcome

logger = logging.getLogger("tasks")


def endpoint_for(agent: Agent) -> llm.LLMEndpoint:
    return llm.endpoint_from_settings(agent.model, base_url=agent.base_url or None)


def outcome_from_completion(agent: Agent, completion: llm.Completion) -> Outcome:
    return Outcome(
        result=completion.text,
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
        latency_ms=completion.latency_ms,
        cost=token_cost(
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            prompt_token_price=agent.prompt_token_price,
            completion_token_price=agent.completion_token_price,
        ),
    )


def run_task(task_id: uuid.UUID) -> None:
    """Claims the task if it is claimable, runs its call (with retries) and settles it, once."""
    Drainer(concurrency=1, task_ids=[task_id]).run()


def run_duke_audit(task_id: uuid.UUID) -> None:
    """Asks the default LLM agent the question Duke answered, unbilled, and records what it said.

    The buyer already has Duke's answer and paid for it: nothing here touches the task or the ledger.
    """
    task = Task.objects.filter(pk=task_id).only("description", "labels", "complexity").first()
    if task is None or not task.labels or not duke_audit.audit_pending(task_id=task_id):
        return
    try:
        agent = agent_default_llm()
        completion = llm.complete(
            endpoint=endpoint_for(agent),
            text=task.description,
            labels=task.labels,
            max_attempts=settings.AICP_LLM_MAX_ATTEMPTS,
            backoff_s=settings.AICP_LLM_BACKOFF_S,
        )
    except (llm.LLMError, NotFound) as error:
        duke_audit.audit_fail(task_id=task_id, error=str(error))
        return
    duke_audit.audit_record(
        task_id=task_id,
        llm_label=completion.text,
        cost=outcome_from_completion(agent, completion).cost,
        text=task.description,
        complexity=task.complexity,
        labels=task.labels,
    )
