"""The batch executor ("drainer"): one queue job keeps up to AICP_LLM_CONCURRENCY LLM calls in flight.

Two threads. The job's own thread does every database step, each a short transaction through the
services: claim a batch of tasks, settle finished calls (several per transaction), rate-limit and breaker
updates. The calls run on one asyncio loop per process, in a background thread, with the async OpenAI
client; that thread never touches the database. Keeping the database on the caller's thread also keeps
sync-mode tests honest: they see the same connection and transaction as the code that submitted.

Each call is a single request (``complete_async(max_attempts=1)``); retries are decided here so that every
request passes the shared rate limiter and counts for the circuit breaker, and a Retry-After pauses the
agent for every worker. Exactly-once effects still come from the database: claims and settlements are
conditional updates, so a task a dead drainer held is re-run after the reaper frees it and paid once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import os
import queue
import random
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings
from django.db import OperationalError, transaction
from django_q.conf import Conf

from agents import llm
from agents.models import Agent
from agents.pricing import token_cost
from agents.ratelimit import (
    CLOSED,
    Breaker,
    CircuitBreaker,
    breaker_policy_from_settings,
    limiter_from_settings,
    limits_from_settings,
)
from tasks.execution.slots import SlotLease, drain_slot_acquire, drain_slot_release, drain_slot_renew
from tasks.models import Task
from tasks.queue import draining, request_drain
from tasks.selectors import claimable_tasks
from tasks.services.lifecycle import (
    Completion,
    Outcome,
    task_claim_batch,
    task_complete,
    task_complete_many,
    task_extend_leases,
    task_fail,
    task_release_claims,
    task_retry_later,
)

logger = logging.getLogger("tasks")

DRAIN_LEASE_S = 30.0  # a running drainer's hold on its slot; renewed every DRAIN_RENEW_S
DRAIN_RENEW_S = 5.0
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
# llm.py appends this when a call of one attempt gives up; the attempts are counted here instead.
_ONE_ATTEMPT_SUFFIX = " (gave up after 1 attempt)"

# --- the I/O loop: one asyncio loop per process, in a daemon thread ------------------------------------

_loop_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_loop_pid: int | None = None


def _io_loop() -> asyncio.AbstractEventLoop:
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
    """A queue worker has just started: its I/O loop and LLM client are ready before its first drainer.

    Otherwise the first drainer's first calls wait for the openai import, the client and its loop.
    """
    llm.warm_up()
    # Clients are per base URL, key and timeout, not per model: this is the one every agent without a
    # base URL of its own shares.
    endpoint = llm.endpoint_from_settings("any model")
    try:
        asyncio.run_coroutine_threadsafe(llm.warm_up_async(endpoint), _io_loop()).result(timeout=30)
    except llm.LLMError:
        pass  # no API key configured: the first call reports that, with its task


# --- bookkeeping ---------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Flight:
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
class _Done:
    flight: _Flight
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


@dataclass(frozen=True)
class _Decision:
    kind: str  # complete | fail | retry_task | release | retry_local
    outcome: Outcome | None = None
    error: str = ""
    error_code: str = ""
    delay_s: float = 0.0
    not_before: float = 0.0  # epoch seconds, for release


async def _attempt(flight: _Flight) -> _Done:
    try:
        completion = await llm.complete_async(
            endpoint=flight.endpoint,
            text=flight.task.description,
            labels=flight.task.labels,
            max_attempts=1,
            backoff_s=0.0,
        )
    except llm.LLMError as error:
        return _Done(flight, error=error)
    except Exception as error:  # noqa: BLE001 — a bug must fail the task (and refund), never strand it
        return _Done(flight, crash=error)
    return _Done(flight, completion=completion)


def estimate_tokens(task: Task) -> int:
    """Tokens one request for the task is assumed to use, for the TPM limit (corrected after the call)."""
    if task.labels:
        try:
            prompt, completion = llm.estimate_label_tokens(text=task.description, labels=task.labels)
            return prompt + completion
        except ValueError:
            pass  # labels the call itself will refuse; any estimate will do
    return math.ceil(len(task.description) / 4) + 60 + FREE_FORM_COMPLETION_TOKENS


def task_retry_delay_s(*, attempts: int, retry_after: float | None) -> float:
    """Backoff before a task that failed retryably is claimed again: doubling, at least the Retry-After."""
    return max(retry_after or 0.0, settings.AICP_TASK_RETRY_DELAY_S * 2 ** max(0, attempts - 1))


def _epoch_to_datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


# --- the drainer ---------------------------------------------------------------------------------------


class Drainer:
    """Claims, calls and settles until no claimable work is left (or its slice ends)."""

    def __init__(
        self,
        *,
        concurrency: int | None = None,
        task_ids: Collection[uuid.UUID] | None = None,
        slot: SlotLease | None = None,
        slice_s: float | None = None,
    ) -> None:
        self.concurrency = concurrency or settings.AICP_LLM_CONCURRENCY
        self.min_claim = max(1, self.concurrency // CLAIM_BATCH_DIVISOR)
        self.window = self.concurrency  # adaptive in-flight bound, at most AICP_LLM_CONCURRENCY
        self.task_ids = list(task_ids) if task_ids is not None else None
        self.slot = slot
        self.slice_s = slice_s
        self.limits = limits_from_settings()
        self.limiter = limiter_from_settings()
        self.breaker = CircuitBreaker(breaker_policy_from_settings())
        self.max_calls = settings.AICP_LLM_MAX_ATTEMPTS
        self.stats = DrainStats()

        self.agents: dict[str, int] = {}  # agent name (the key) → id, for claim filters
        self.breakers: dict[str, Breaker] = {}
        self.blocked: dict[str, float] = {}  # key → epoch until which no request may start
        self.inflight: dict[concurrent.futures.Future[_Done], _Flight] = {}
        self.waiting: list[_Flight] = []  # claimed, not in flight: retry backoff, permits, trials
        self.done: queue.SimpleQueue[concurrent.futures.Future[_Done]] = queue.SimpleQueue()

        self.started = time.monotonic()
        self.next_claim = 0.0
        self.next_refresh = 0.0
        # A short task lease (tests, fault drills) needs renewing more often than the slot.
        self.renew_s = min(DRAIN_RENEW_S, settings.AICP_TASK_LEASE_S / 3)
        self.next_renew = time.monotonic() + self.renew_s
        self.idle_until = 0.0

    # -- main loop ---------------------------------------------------------------------------------------

    def run(self) -> DrainStats:
        try:
            with draining():
                self._run()
        finally:
            # No longer draining: the successor the hand-over asks for must really be enqueued.
            self._abandon()
            if self.slot is not None:
                self._hand_over()
        return self.stats

    def _run(self) -> None:
        self._load_agents()
        while True:
            self._settle(self._collect(self._wait_s()))
            self._housekeeping()
            self._dispatch()
            if not self._closing():
                self._claim()
            if self.inflight or self.waiting:
                continue
            if self._closing():
                return
            now = time.monotonic()
            if now < self.idle_until:
                continue  # waiting for work known to be due soon
            due_in = self._next_work_in()
            if due_in is not None and due_in <= IDLE_WAIT_MAX_S:
                self.idle_until = now + min(due_in, IDLE_POLL_S)
                continue
            if due_in is not None and self.task_ids is None:
                request_drain(delay_s=due_in)  # blocked for long: a drainer comes back for it
            if self._stop():
                return

    def _closing(self) -> bool:
        return self.slice_s is not None and time.monotonic() - self.started >= self.slice_s

    def _wait_s(self) -> float:
        """How long the loop may block on finished calls before something else needs doing."""
        now = time.monotonic()
        deadlines = [now + SHARED_REFRESH_S, self.next_renew]
        if self.waiting:
            deadlines.append(min(flight.ready_at for flight in self.waiting))
        if self._wants_claim() and not self._closing():
            deadlines.append(max(self.next_claim, self.idle_until))
        return max(0.0, min(deadlines) - now)

    def _wants_claim(self) -> bool:
        free = self._free()
        return free >= self.min_claim or (free > 0 and not self.inflight)

    def _free(self) -> int:
        return self.window - len(self.inflight) - len(self.waiting)

    def _collect(self, timeout: float) -> list[_Done]:
        futures = []
        try:
            futures.append(self.done.get(timeout=timeout) if timeout > 0 else self.done.get_nowait())
            while True:
                futures.append(self.done.get_nowait())
        except queue.Empty:
            pass
        done = []
        for future in futures:
            flight = self.inflight.pop(future)
            if future.cancelled():
                continue
            done.append(future.result())
            if flight.trial:
                flight.trial = False
        return done

    # -- claiming and sending ---------------------------------------------------------------------------

    def _claim(self) -> None:
        now = time.monotonic()
        free = self._free()
        # Claim in batches, not one task per finished call: each claim is a write transaction.
        if not self._wants_claim() or now < self.next_claim:
            return
        epoch = time.time()
        blocked_ids = [self.agents[k] for k in self._blocked_keys(epoch) if k in self.agents]
        limit = free if self.limits.unlimited else min(free, math.ceil(self.limits.request_capacity))
        tasks = task_claim_batch(limit=limit, exclude_agent_ids=blocked_ids, task_ids=self.task_ids)
        # Agents whose breaker is due a trial are excluded above; each gets one task for its trial.
        for key in self._trial_due_keys(epoch):
            if key in self.agents and len(tasks) < free:
                tasks += task_claim_batch(limit=1, task_ids=self.task_ids, only_agent_id=self.agents[key])
        self.next_claim = 0.0 if len(tasks) >= free else now + POLL_S
        for task in tasks:
            self.agents.setdefault(task.agent.name, task.agent_id)
            self.waiting.append(
                _Flight(
                    task=task,
                    key=task.agent.name,
                    endpoint=llm.endpoint_from_settings(
                        task.agent.model, base_url=task.agent.base_url or None
                    ),
                    estimate=0 if self.limits.unlimited else estimate_tokens(task),
                    lease_ends=now + settings.AICP_TASK_LEASE_S,
                )
            )
        self.stats.claimed += len(tasks)
        if tasks:
            self.idle_until = 0.0
            self._dispatch()

    def _blocked_keys(self, epoch: float) -> list[str]:
        keys = [key for key, until in self.blocked.items() if until > epoch]
        keys += [key for key, breaker in self.breakers.items() if breaker.state != CLOSED]
        return keys

    def _trial_due_keys(self, epoch: float) -> list[str]:
        return [
            key
            for key, breaker in self.breakers.items()
            if breaker.state != CLOSED
            and not breaker.blocked_until(epoch)
            and self.blocked.get(key, 0.0) <= epoch
            and not any(f.key == key for f in self.waiting)
            and not any(f.key == key and f.trial for f in self.inflight.values())
        ]

    def _dispatch(self) -> None:
        """Sends every waiting flight whose time has come and that the breaker and the limiter allow."""
        now = time.monotonic()
        ready = [flight for flight in self.waiting if flight.ready_at <= now]
        if not ready:
            return
        by_key: dict[str, list[_Flight]] = defaultdict(list)
        for flight in ready:
            by_key[flight.key].append(flight)
        epoch = time.time()
        releases: list[tuple[_Flight, float]] = []
        for key, flights in by_key.items():
            breaker = self.breakers.get(key, Breaker())
            if breaker.state != CLOSED:
                if any(f.key == key and f.trial for f in self.inflight.values()):
                    self._wait(flights, TRIAL_RECHECK_S)
                    continue
                granted, breaker = self.breaker.permit(key, 1, now=epoch)
                self.breakers[key] = breaker
                if not granted:
                    releases += [(f, breaker.blocked_until(epoch) or epoch) for f in flights]
                    continue
                flights[0].trial = True
                logger.warning("Circuit breaker for %s is half-open: one trial call", key)
                self._wait(flights[1:], TRIAL_RECHECK_S)
                flights = flights[:1]
            blocked_until = self.blocked.get(key, 0.0)
            if blocked_until > epoch:
                self._wait(flights, blocked_until - epoch)
                continue
            if not self.limits.unlimited:
                grant = self.limiter.take(key, self.limits, [f.estimate for f in flights], now=epoch)
                if grant.granted < len(flights):
                    self.blocked[key] = epoch + grant.wait_s
                    self._wait(flights[grant.granted :], grant.wait_s)
                    flights = flights[: grant.granted]
            for flight in flights:
                self._send(flight)
        if releases:
            self._release(releases, error="circuit breaker open", error_code="circuit_open")

    def _wait(self, flights: list[_Flight], seconds: float) -> None:
        ready_at = time.monotonic() + max(0.0, seconds)
        for flight in flights:
            flight.ready_at = ready_at

    def _send(self, flight: _Flight) -> None:
        self.waiting.remove(flight)
        flight.calls += 1
        if flight.first_sent is None:
            flight.first_sent = time.monotonic()
        future = asyncio.run_coroutine_threadsafe(_attempt(flight), _io_loop())
        self.inflight[future] = flight
        self.stats.requests += 1
        self.stats.peak_inflight = max(self.stats.peak_inflight, len(self.inflight))
        future.add_done_callback(self.done.put)

    # -- settling ---------------------------------------------------------------------------------------

    def _settle(self, done: list[_Done]) -> None:
        for start in range(0, len(done), SETTLE_CHUNK):
            self._settle_chunk(done[start : start + SETTLE_CHUNK])
            if start + SETTLE_CHUNK < len(done):
                # Refill between chunks: calls that finish together must not leave the window empty
                # while the rest of them are written.
                self._dispatch()
                if not self._closing():
                    self._claim()
        if done:
            self._adapt_window(time.monotonic() - min(d.finished for d in done))

    def _adapt_window(self, lag_s: float) -> None:
        """Fewer calls in flight while answers wait to be written, back up to the bound when they don't.

        When the CPU (or the database) cannot settle answers as fast as they arrive, more calls in flight
        add only waiting, not throughput: every claimed task would take longer. Multiplicative decrease,
        additive increase, as in TCP.
        """
        if lag_s > SETTLE_LAG_TARGET_S:
            self.window = max(self.min_claim, int(self.window * 0.9))
        elif self.window < self.concurrency:
            self.window += 1

    def _settle_chunk(self, chunk: list[_Done]) -> None:
        epoch = time.time()
        outcomes: dict[str, list[bool]] = defaultdict(list)
        corrections: dict[str, int] = defaultdict(int)
        retry_after: dict[str, float] = {}
        for done in chunk:
            flight = done.flight
            used = done.completion or done.error
            if used is not None:
                flight.prompt_tokens += used.prompt_tokens
                flight.completion_tokens += used.completion_tokens
                corrections[flight.key] += used.prompt_tokens + used.completion_tokens - flight.estimate
            if done.crash is not None:
                continue
            # A service that answered is up, whatever it answered; only retryable errors mean it is not.
            down = done.error is not None and done.error.retryable and done.error.code != "invalid_answer"
            outcomes[flight.key].append(not down)
            if down and done.error.retry_after:
                retry_after[flight.key] = max(retry_after.get(flight.key, 0.0), done.error.retry_after)
        for key, seconds in retry_after.items():
            self.blocked[key] = max(self.blocked.get(key, 0.0), epoch + seconds)
            self.limiter.block(key, epoch + seconds)

        for attempt in range(3):
            try:
                with transaction.atomic():
                    breakers = {
                        key: self.breaker.record(key, results, now=epoch)
                        for key, results in outcomes.items()
                        if not (all(results) and self.breakers.get(key, Breaker()) == Breaker())
                    }
                    view = {**self.breakers, **breakers}
                    decisions = [self._decide(done, view, epoch) for done in chunk]
                    applied = self._apply_all(chunk, decisions)
                break
            except OperationalError:
                # SQLite gave up waiting for the write lock: the results are only in memory, try again.
                if attempt == 2:
                    raise
                logger.warning("Settling %d task(s) hit a locked database; retrying", len(chunk))
                time.sleep(0.2 * 2**attempt)
        for key, breaker in breakers.items():
            if breaker.state != self.breakers.get(key, Breaker()).state:
                logger.warning("Circuit breaker for %s is %s", key, breaker.state)
            self.breakers[key] = breaker
        for done, decision, ok in zip(chunk, decisions, applied, strict=True):
            self._account(done.flight, decision, ok)
        if not self.limits.unlimited:
            for key, tokens in corrections.items():
                self.limiter.charge(key, self.limits, tokens, now=epoch)

    def _decide(self, done: _Done, breakers: dict[str, Breaker], epoch: float) -> _Decision:
        flight = done.flight
        if done.completion is not None:
            agent = flight.task.agent
            latency_ms = round((time.monotonic() - (flight.first_sent or flight.claimed_at)) * 1000)
            return _Decision(
                "complete",
                outcome=Outcome(
                    result=done.completion.text,
                    prompt_tokens=flight.prompt_tokens,
                    completion_tokens=flight.completion_tokens,
                    latency_ms=latency_ms,
                    cost=token_cost(
                        prompt_tokens=flight.prompt_tokens,
                        completion_tokens=flight.completion_tokens,
                        prompt_token_price=agent.prompt_token_price,
                        completion_token_price=agent.completion_token_price,
                    ),
                ),
            )
        if done.crash is not None:
            error = done.crash
            return _Decision(
                "fail", error=f"internal error: {type(error).__name__}: {error}", error_code="internal"
            )
        error = done.error
        assert error is not None
        message = error.message.removesuffix(_ONE_ATTEMPT_SUFFIX)
        tried = f"gave up after {flight.calls} attempt{'s' if flight.calls != 1 else ''}"
        if error.code == "invalid_answer":
            if flight.calls < self.max_calls:
                return _Decision("retry_local", delay_s=self._backoff_s(flight, None))
            return _Decision("fail", error=f"{message} ({tried})", error_code=error.code)
        if not error.retryable:
            return _Decision("fail", error=message, error_code=error.code)
        breaker = breakers.get(flight.key, Breaker())
        if breaker.state != CLOSED:
            # Not the task's fault: it waits, unbilled and with its attempt given back, for the agent.
            return _Decision(
                "release",
                error=f"{message} (circuit breaker open)",
                error_code="circuit_open",
                not_before=breaker.blocked_until(epoch) or epoch,
            )
        if flight.calls < self.max_calls and (error.retry_after or 0.0) <= llm.MAX_RETRY_AFTER_S:
            return _Decision("retry_local", delay_s=self._backoff_s(flight, error.retry_after))
        message = f"{message} ({tried})"
        if flight.task.attempts < settings.AICP_TASK_MAX_ATTEMPTS:
            delay = task_retry_delay_s(attempts=flight.task.attempts, retry_after=error.retry_after)
            return _Decision("retry_task", error=message, error_code=error.code, delay_s=delay)
        return _Decision("fail", error=message, error_code=error.code)

    def _backoff_s(self, flight: _Flight, retry_after: float | None) -> float:
        ceiling = min(settings.AICP_LLM_BACKOFF_S * 2 ** (flight.calls - 1), llm.MAX_BACKOFF_S)
        # Jitter, so that many calls that failed together don't retry in lockstep.
        return max(retry_after or 0.0, ceiling * random.uniform(0.5, 1.0))

    def _apply_all(self, chunk: list[_Done], decisions: list[_Decision]) -> list[bool]:
        """The decisions' database effects. Completions, the bulk of them, are settled together: settling
        costs CPU per statement far more than per row, and the cluster's CPU is what bounds throughput."""
        applied: list[bool | None] = [None] * len(chunk)
        completes = [i for i, decision in enumerate(decisions) if decision.kind == "complete"]
        if len(completes) > 1:
            try:
                results = task_complete_many(
                    completions=[Completion(chunk[i].flight.task.id, decisions[i].outcome) for i in completes]
                )
            except OperationalError:
                raise  # the database itself: retry the chunk
            except Exception:  # noqa: BLE001 — its savepoint is rolled back; one by one finds the culprit
                logger.exception(
                    "Settling %d completions together failed; one by one instead", len(completes)
                )
            else:
                for i, ok in zip(completes, results, strict=True):
                    applied[i] = ok
        return [
            self._apply(done, decision) if ok is None else ok
            for done, decision, ok in zip(chunk, decisions, applied, strict=True)
        ]

    def _apply(self, done: _Done, decision: _Decision) -> bool:
        """The decision's database effect. Each service is atomic: nested here it is a savepoint, so one
        task's failure rolls back only its own writes and the rest of the chunk still commits."""
        task_id = done.flight.task.id
        try:
            if decision.kind == "complete":
                return task_complete(task_id=task_id, outcome=decision.outcome)
            if decision.kind == "fail":
                return task_fail(task_id=task_id, error=decision.error, error_code=decision.error_code)
            if decision.kind == "retry_task":
                return task_retry_later(
                    task_id=task_id,
                    error=decision.error,
                    error_code=decision.error_code,
                    delay_s=decision.delay_s,
                )
            if decision.kind == "release":
                return bool(
                    task_release_claims(
                        task_ids=[task_id],
                        not_before=_epoch_to_datetime(decision.not_before),
                        error=decision.error,
                        error_code=decision.error_code,
                    )
                )
            return True  # retry_local: nothing to write
        except OperationalError:
            raise  # the database itself: retry the chunk
        except Exception as error:  # noqa: BLE001 — settle the rest of the batch; this one goes to failure
            logger.exception("Task %s could not be settled (%s)", done.flight.task.short_id, decision.kind)
            if decision.kind == "fail":
                return False  # the lease runs out and the reaper gives it another worker
            return task_fail(
                task_id=task_id,
                error=f"internal error: {type(error).__name__}: {error}",
                error_code="internal",
            )

    def _account(self, flight: _Flight, decision: _Decision, applied: bool) -> None:
        """In-memory effects of a committed decision."""
        short = flight.task.short_id
        if decision.kind == "retry_local":
            logger.info("Task %s retrying its call in %.2f s", short, decision.delay_s)
            flight.ready_at = time.monotonic() + decision.delay_s
            self.waiting.append(flight)
            return
        if not applied:
            self.stats.duplicates += 1
            logger.warning("Task %s was already final; %s changed nothing", short, decision.kind)
            return
        if decision.kind == "complete":
            self.stats.completed += 1
        elif decision.kind == "fail":
            self.stats.failed += 1
        elif decision.kind == "retry_task":
            self.stats.retried += 1
            logger.warning(
                "Task %s RETRY in %.1f s after %s: %s",
                short,
                decision.delay_s,
                decision.error_code,
                decision.error,
            )
        else:
            self.stats.released += 1

    def _release(self, flights: list[tuple[_Flight, float]], *, error: str, error_code: str) -> None:
        by_time: dict[float, list[_Flight]] = defaultdict(list)
        for flight, not_before in flights:
            by_time[not_before].append(flight)
        for not_before, group in by_time.items():
            released = task_release_claims(
                task_ids=[f.task.id for f in group],
                not_before=_epoch_to_datetime(not_before),
                error=error,
                error_code=error_code,
            )
            self.stats.released += released
            for flight in group:
                self.waiting.remove(flight)

    # -- housekeeping, idling and stopping ----------------------------------------------------------------

    def _load_agents(self) -> None:
        self.agents.update(dict(Agent.objects.values_list("name", "pk")))

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now >= self.next_refresh:
            self.next_refresh = now + SHARED_REFRESH_S
            keys = list(self.agents)
            epoch = time.time()
            shared = self.breaker.states(keys)
            self.breakers = {key: shared.get(key, Breaker()) for key in keys}
            for key, until in self.limiter.blocked_until(keys).items():
                self.blocked[key] = max(self.blocked.get(key, 0.0), until)
            self.blocked = {key: until for key, until in self.blocked.items() if until > epoch}
        if now >= self.next_renew:
            self.next_renew = now + self.renew_s
            if self.slot is not None:
                drain_slot_renew(lease=self.slot, lease_s=DRAIN_LEASE_S)
            # Leases outlive any one call, but not a long wait for permits: renew what we still hold
            # before the reaper could think its worker died.
            held = [
                f for f in [*self.inflight.values(), *self.waiting] if f.lease_ends - now < 2 * self.renew_s
            ]
            if held:
                for flight in held:
                    flight.lease_ends = now + settings.AICP_TASK_LEASE_S
                task_extend_leases(task_ids=[f.task.id for f in held])

    def _next_work_in(self) -> float | None:
        """Seconds until some task can be claimed: 0 now, None when nothing pending is due at all."""
        epoch = time.time()
        blocked = self._blocked_keys(epoch)
        blocked_ids = [self.agents[k] for k in blocked if k in self.agents]
        if claimable_tasks(exclude_agent_ids=blocked_ids, task_ids=self.task_ids).exists():
            return 0.0
        if self.task_ids is not None:
            return None  # a drainer for given tasks takes what it can now and stops
        due = []
        for key in set(blocked):
            if key in self.agents and claimable_tasks(only_agent_id=self.agents[key]).exists():
                breaker = self.breakers.get(key, Breaker())
                until = max(self.blocked.get(key, 0.0), breaker.blocked_until(epoch))
                due.append(max(0.0, until - epoch))
        next_retry = (
            Task.objects.filter(status=Task.Status.PENDING, not_before__gt=_epoch_to_datetime(epoch))
            .exclude(agent_id__in=blocked_ids)
            .order_by("not_before")
            .values_list("not_before", flat=True)
            .first()
        )
        if next_retry is not None:
            due.append(next_retry.timestamp() - epoch)
        return max(POLL_S, min(due)) if due else None

    def _stop(self) -> bool:
        """Leaves the slot, then looks once more: a task submitted while we were leaving is not stranded.

        The submitter commits its task, then looks for a free slot; we free ours, then look for tasks.
        Whichever comes second sees the other's write, so someone always runs the task.
        """
        if self.slot is None:
            return True
        drain_slot_release(lease=self.slot)
        self.slot = None
        if self._next_work_in() != 0.0:
            return True
        self.slot = drain_slot_acquire(slots=settings.AICP_DRAINERS, lease_s=DRAIN_LEASE_S)
        if self.slot is None:
            return True  # another drainer has it
        self.next_claim = 0.0
        return False

    def _hand_over(self) -> None:
        """The slice ended (or the drainer broke): free the slot and, if work is left, queue a successor
        behind the jobs that waited meanwhile (Duke training, the reaper)."""
        try:
            drain_slot_release(lease=self.slot)
            self.slot = None
            if claimable_tasks().exists():
                request_drain()
        except Exception:  # noqa: BLE001 — the slot lease expires; the reaper asks for a drainer
            logger.exception("Drainer could not hand over its slot")

    def _abandon(self) -> None:
        """On the way out (normally nothing is left): unsent claims go back, calls in flight are cancelled."""
        for future in list(self.inflight):
            future.cancel()
        if self.inflight:
            logger.warning(
                "Drainer stopped with %d call(s) in flight; the reaper re-queues them when their leases end",
                len(self.inflight),
            )
        if self.waiting:
            try:
                self._release([(f, time.time()) for f in self.waiting], error="", error_code="")
            except Exception:  # noqa: BLE001 — the leases expire and the reaper re-queues them anyway
                logger.exception("Could not give back %d claimed task(s)", len(self.waiting))


def drain(*, reserved: SlotLease | None = None) -> int:
    """A drainer job: takes a drain slot (the reserved one, or any free one) and runs; 0 if none is free."""
    slot = drain_slot_acquire(slots=settings.AICP_DRAINERS, lease_s=DRAIN_LEASE_S, reserved=reserved)
    if slot is None:
        return 0
    # In sync mode (tests) there is no queue to yield to: no slices.
    slice_s = None if Conf.SYNC else settings.AICP_DRAIN_SLICE_S
    stats = Drainer(slot=slot, slice_s=slice_s).run()
    if stats.claimed:
        logger.info(
            "Drainer settled %d task(s): %d completed, %d failed, %d retried, %d released; %d request(s)",
            stats.settled,
            stats.completed,
            stats.failed,
            stats.retried,
            stats.released,
            stats.requests,
        )
    return stats.settled
