"""Runs one task: claim, call the agent's LLM outside any transaction, then complete, retry or fail.

Not a service: it does network I/O, so it must not hold a database transaction while it waits.
Each database step it takes is an atomic, idempotent service.
"""

from __future__ import annotations

import logging
import uuid

from django.conf import settings

from agents import llm
from agents.models import Agent
from agents.pricing import token_cost
from tasks.models import Task
from tasks.services import Outcome, task_claim, task_complete, task_fail, task_retry_later

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


def settle_llm_error(task: Task, error: llm.LLMError) -> None:
    """Retryable errors go back to the queue until AICP_TASK_MAX_ATTEMPTS; anything else fails now."""
    if error.retryable and task.attempts < settings.AICP_TASK_MAX_ATTEMPTS:
        delay = max(error.retry_after or 0.0, settings.AICP_TASK_RETRY_DELAY_S * 2 ** (task.attempts - 1))
        logger.warning(
            "Task %s RETRY in %.1f s after %s: %s", task.short_id, delay, error.code, error.message
        )
        task_retry_later(task_id=task.id, error=error.message, error_code=error.code, delay_s=delay)
        return
    task_fail(task_id=task.id, error=error.message, error_code=error.code)


def run_task(task_id: uuid.UUID) -> None:
    task = task_claim(task_id=task_id)
    if task is None:
        return
    agent = task.agent
    try:
        completion = llm.complete(
            endpoint=endpoint_for(agent),
            text=task.description,
            labels=task.labels,
            max_attempts=settings.AICP_LLM_MAX_ATTEMPTS,
            backoff_s=settings.AICP_LLM_BACKOFF_S,
        )
    except llm.LLMError as error:
        settle_llm_error(task, error)
        return
    except Exception as error:  # noqa: BLE001 — a bug must fail the task (and refund), never strand it
        logger.exception("Task %s crashed in execution", task.short_id)
        task_fail(
            task_id=task.id, error=f"internal error: {type(error).__name__}: {error}", error_code="internal"
        )
        return
    task_complete(task_id=task.id, outcome=outcome_from_completion(agent, completion))
