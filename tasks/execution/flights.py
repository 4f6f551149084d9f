"""A drainer's working parts: its tuning, the process's I/O loop, a claimed task's flight (its requests so
far), one request on the loop, and the drainer's counts."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from agents import llm
from tasks.execution.watchdog import start_lease_watchdog
from tasks.models import Task

logger = logging.getLogger("tasks")


# A running drainer's hold on its slot, renewed every DRAIN_RENEW_S (and claimed tasks' leases with it): a
# dead drainer's slot is free again within DRAIN_LEASE_S, so the reaper's request for a drainer finds one.
DRAIN_LEASE_S = 15.0
DRAIN_RENEW_S = 3.0
POLL_S = 0.05  # how often a drainer with free capacity looks for newly submitted tasks
SHARED_REFRESH_S = 0.5  # how often it re-reads breakers and Retry-After blocks other workers wrote
CLAIM_BATCH_DIVISOR = 8  # with calls in flight, claim once at least 1/8 of the window is free
# Answers that waited longer than this to be written mean the window is bigger than the CPU can serve.
SETTLE_LAG_TARGET_S = 0.25
SETTLE_CHUNK = 16  # settlements per transaction: fewer commits, still short write locks
# Work due within this long (a retry's backoff, a breaker's cooldown) is waited for, looking for new work
# every IDLE_POLL_S meanwhile; later work gets a scheduled drainer. django-q2's scheduler only looks at
# its schedules every 30 s, so a shorter wait here would turn a 5 s backoff into up to 30 s.
IDLE_WAIT_MAX_S = 30.0
IDLE_POLL_S = 0.5
TRIAL_RECHECK_S = 0.2
FREE_FORM_COMPLETION_TOKENS = 256  # what a free-form answer is assumed to cost before we know

_loop_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_loop_pid: int | None = None


def io_loop() -> asyncio.AbstractEventLoop:
    """The process's LLM loop; its AsyncOpenAI connection pools live as long as the worker process."""
    global _loop, _loop_pid
    with _loop_lock:
        # A forked worker inherits the variable but not the thread: start its own.
        if _loop is None or _loop_pid != os.getpid() or _loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="aicp-llm-io", daemon=True).start()
            _loop, _loop_pid = loop, os.getpid()
        return _loop


def warm_up() -> None:
    """A queue worker has just started: its I/O loop and LLM client are ready before its first drainer, and
    its lease watchdog (the fast reaper, tasks.execution.watchdog) runs.

    Otherwise the first drainer's first calls wait for the openai import, the client and its loop.
    """
    start_lease_watchdog()
    llm.warm_up()
    # Clients are per base URL, key and timeout, not per model: this is the one every agent without a
    # base URL of its own shares.
    endpoint = llm.endpoint_from_settings("any model")
    try:
        asyncio.run_coroutine_threadsafe(llm.warm_up_async(endpoint), io_loop()).result(timeout=30)
    except llm.LLMError:
        pass  # no API key configured: the first call reports that, with its task


@dataclass(eq=False)
class Flight:
    """A claimed task and its requests so far (one claim may make up to AICP_LLM_MAX_ATTEMPTS requests)."""

    task: Task
    key: str  # the agent's name: rate-limit and breaker key
    endpoint: llm.LLMEndpoint
    estimate: int  # tokens charged to the limiter per request before the real usage is known
    claimed_at: float = field(default_factory=time.monotonic)
    lease_ends: float = 0.0  # monotonic; when the claim's lease runs out unless renewed
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_sent: float | None = None
    ready_at: float = 0.0  # monotonic; a retry waits for its backoff or a permit
    trial: bool = False  # the half-open breaker's one trial call


@dataclass(eq=False)
class Done:
    flight: Flight
    completion: llm.Completion | None = None
    error: llm.LLMError | None = None
    crash: BaseException | None = None
    finished: float = field(default_factory=time.monotonic)  # when the answer (or error) arrived


@dataclass
class DrainStats:
    claimed: int = 0
    requests: int = 0
    completed: int = 0
    failed: int = 0
    retried: int = 0  # given back to the queue after a retryable error (counts an attempt)
    released: int = 0  # given back without counting an attempt (breaker open, drainer stopping)
    duplicates: int = 0  # settlements that found the task already final (another worker had it)
    peak_inflight: int = 0  # most requests in flight at once

    @property
    def settled(self) -> int:
        return self.completed + self.failed + self.retried + self.released


async def attempt(flight: Flight) -> Done:
    try:
        completion = await llm.request_async(
            endpoint=flight.endpoint, text=flight.task.description, labels=flight.task.labels
        )
    except llm.LLMError as error:
        return Done(flight, error=error)
    except Exception as error:  # noqa: BLE001 — a bug must fail the task (and refund), never strand it
        return Done(flight, crash=error)
    return Done(flight, completion=completion)


def estimate_tokens(task: Task) -> int:
    """Tokens one request for the task is assumed to use, for the TPM limit (corrected after the call)."""
    if task.labels:
        try:
            prompt, completion = llm.estimate_label_tokens(text=task.description, labels=task.labels)
            return prompt + completion
        except ValueError:
            pass  # labels the call itself will refuse; any estimate will do
    return math.ceil(len(task.description) / 4) + 60 + FREE_FORM_COMPLETION_TOKENS


def epoch_to_datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)
