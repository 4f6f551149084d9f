"""The batch executor ("drainer"): one queue job keeps up to AICP_LLM_CONCURRENCY LLM calls in flight.

Two threads. The job's own thread does every database step, each a short transaction through the
services: claim a batch of tasks, settle finished calls (several per transaction), rate-limit and breaker
updates. The calls run on one asyncio loop per process, in a background thread, with the async OpenAI
client; that thread never touches the database. Keeping the database on the caller's thread also keeps
sync-mode tests honest: they see the same connection and transaction as the code that submitted.

Each call is a single request (``llm.request_async``); retries are decided by tasks.execution.policy
(on agents.retry's policy, the one the single call uses too) so that every request passes the shared
rate limiter and counts for the circuit breaker, and a Retry-After pauses the agent for every worker.
Exactly-once effects still come from the database: claims and settlements are conditional updates,
so a task a dead drainer held is re-run after the reaper frees it and paid once.

The class is split by phase: claiming and sending (dispatch.py), settling (settle.py), housekeeping
(housekeeping.py); this module holds its loop.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import time
import uuid
from collections.abc import Collection

from django.conf import settings
from django_q.conf import Conf

from agents.ratelimit import (
    Breaker,
    CircuitBreaker,
    breaker_policy_from_settings,
    limiter_from_settings,
    limits_from_settings,
)
from agents.retry import RetryPolicy
from tasks.execution.dispatch import Dispatching
from tasks.execution.flights import (
    CLAIM_BATCH_DIVISOR,
    DRAIN_LEASE_S,
    DRAIN_RENEW_S,
    IDLE_POLL_S,
    IDLE_WAIT_MAX_S,
    SHARED_REFRESH_S,
    Done,
    DrainStats,
    Flight,
)
from tasks.execution.housekeeping import Housekeeping
from tasks.execution.settle import Settling
from tasks.execution.slots import SlotLease, drain_slot_acquire
from tasks.queue import draining, request_drain

logger = logging.getLogger("tasks")


class Drainer(Dispatching, Settling, Housekeeping):
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
        self.retry_policy = RetryPolicy(
            max_attempts=settings.AICP_LLM_MAX_ATTEMPTS, backoff_s=settings.AICP_LLM_BACKOFF_S
        )
        self.stats = DrainStats()

        self.agents: dict[str, int] = {}  # agent name (the key) → id, for claim filters
        self.breakers: dict[str, Breaker] = {}
        self.blocked: dict[str, float] = {}  # key → epoch until which no request may start
        self.inflight: dict[concurrent.futures.Future[Done], Flight] = {}
        self.waiting: list[Flight] = []  # claimed, not in flight: retry backoff, permits, trials
        self.done: queue.SimpleQueue[concurrent.futures.Future[Done]] = queue.SimpleQueue()

        self.started = time.monotonic()
        self.next_claim = 0.0
        self.next_refresh = 0.0
        # The heartbeat: leases are renewed several times per lease, so a live drainer's loop may stall for
        # most of a lease (a long settlement, a busy database) before the reaper would take its tasks.
        self.renew_s = min(DRAIN_RENEW_S, settings.AICP_TASK_LEASE_S / 5)
        self.next_renew = time.monotonic() + self.renew_s
        self.idle_until = 0.0

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

    def _collect(self, timeout: float) -> list[Done]:
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
