"""The Batch API path (network I/O, not services): batch-priority tasks are collected per agent into
OpenAI Batch API jobs (a JSONL file upload and a batch), the jobs are polled, and their output files'
answers settled like any call's. Run by the ``tasks.jobs.run_llm_batches`` job (every minute on the
scheduler). A provider without the Batch API (404) sends the tasks back to normal execution.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict

from django.conf import settings
from django.utils import timezone

from agents import llm
from agents.llm_errors import LLMError
from agents.models import Agent
from agents.pricing import BATCH_API_TOKEN_PRICE_FACTOR, COST_PLACES, token_cost
from tasks.models import LLMBatch, Task
from tasks.services.batches import (
    batch_tasks_claim,
    batch_tasks_fall_back,
    llm_batch_finish,
    llm_batch_record,
)
from tasks.services.lifecycle import Completion, Outcome, task_complete_many, task_fail

logger = logging.getLogger("tasks")


def _endpoint(agent: Agent) -> llm.LLMEndpoint:
    return llm.endpoint_from_settings(agent.model, agent.base_url or None)


def _request(task: Task) -> llm.BatchRequest:
    return llm.BatchRequest(
        custom_id=str(task.id), text=task.description, labels=tuple(task.labels) if task.labels else None
    )


def submit_pending() -> list[LLMBatch]:
    """Claims the pending batch-priority tasks and sends each agent's as one Batch API job."""
    tasks = batch_tasks_claim(limit=settings.AICP_BATCH_MAX_TASKS)
    by_agent: dict[int, list[Task]] = defaultdict(list)
    for task in tasks:
        by_agent[task.agent_id].append(task)
    created = []
    for group in by_agent.values():
        agent = group[0].agent
        ids = [task.id for task in group]
        try:
            provider_id = llm.batch_submit(
                endpoint=_endpoint(agent), requests=[_request(task) for task in group]
            )
        except llm.BatchAPIUnavailable as exc:
            batch_tasks_fall_back(task_ids=ids, reason=str(exc))
            continue
        except LLMError as exc:
            # The provider could not take the batch now (down, rate limited, refused): run them normally.
            batch_tasks_fall_back(task_ids=ids, reason=f"{exc.code}: {exc.message}")
            continue
        except Exception as exc:  # noqa: BLE001 — whatever went wrong, these tasks must not wait for a lease
            logger.exception("Submitting a batch of %d task(s) failed", len(ids))
            batch_tasks_fall_back(task_ids=ids, reason=f"{type(exc).__name__}: {exc}")
            continue
        created.append(llm_batch_record(agent_id=agent.pk, provider_batch_id=provider_id, task_ids=ids))
    return created


def poll() -> int:
    """Checks every batch in progress; settles those the provider finished. Returns how many finished."""
    finished = 0
    for batch in LLMBatch.objects.select_related("agent").filter(status=LLMBatch.Status.IN_PROGRESS):
        endpoint = _endpoint(batch.agent)
        try:
            state = llm.batch_state(endpoint=endpoint, batch_id=batch.provider_batch_id)
        except (llm.BatchAPIUnavailable, LLMError) as exc:
            logger.warning("Batch %s could not be polled: %s", batch.provider_batch_id, exc)
            continue
        if not state.finished:
            continue
        finished += 1
        task_ids = [uuid.UUID(task_id) for task_id in batch.task_ids]
        if state.status != "completed" or not state.output_file_id:
            batch_tasks_fall_back(task_ids=task_ids, reason=f"batch {batch.provider_batch_id} {state.status}")
            llm_batch_finish(
                batch_id=batch.pk, status=LLMBatch.Status.FELL_BACK, provider_status=state.status
            )
            continue
        try:
            _settle(batch, endpoint, task_ids, state)
        except Exception:  # noqa: BLE001 — the batch stays in progress and is read again next round
            logger.exception(
                "Batch %s could not be settled; trying again next round", batch.provider_batch_id
            )
            finished -= 1
    return finished


def _settle(
    batch: LLMBatch, endpoint: llm.LLMEndpoint, task_ids: list[uuid.UUID], state: llm.BatchState
) -> None:
    tasks = {task.id: task for task in Task.objects.filter(pk__in=task_ids, status=Task.Status.RUNNING)}
    results = llm.batch_results(
        endpoint=endpoint,
        file_id=state.output_file_id or "",
        requests=[_request(task) for task in tasks.values()],
    )
    agent = batch.agent
    completions, missing = [], []
    for task_id, task in tasks.items():
        result = results.get(str(task_id))
        if result is None:
            missing.append(task_id)
        elif isinstance(result, LLMError):
            task_fail(task_id=task_id, error=result.message, error_code=result.code)
        else:
            cost = token_cost(
                prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens,
                prompt_token_price=agent.prompt_token_price,
                completion_token_price=agent.completion_token_price,
            )
            completions.append(
                Completion(
                    task_id,
                    Outcome(
                        result=result.text,
                        prompt_tokens=result.prompt_tokens,
                        completion_tokens=result.completion_tokens,
                        latency_ms=_latency_ms(task),
                        cost=(cost * BATCH_API_TOKEN_PRICE_FACTOR).quantize(COST_PLACES),
                    ),
                )
            )
    if completions:
        task_complete_many(completions=completions)
    if missing:
        batch_tasks_fall_back(
            task_ids=missing, reason=f"not in the output of batch {batch.provider_batch_id}"
        )
    llm_batch_finish(batch_id=batch.pk, status=LLMBatch.Status.COMPLETED, provider_status=state.status)
    logger.info(
        "Batch %s COMPLETED: %d answered, %d missing", batch.provider_batch_id, len(completions), len(missing)
    )


def _latency_ms(task: Task) -> int:
    started = task.started_at or task.created_at
    return max(0, round((timezone.now() - started).total_seconds() * 1000))


def run() -> tuple[int, int]:
    """One round: submit what is pending, poll what is in progress. (batches created, batches finished)"""
    return len(submit_pending()), poll()
