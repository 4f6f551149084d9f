"""Claiming tasks and sending their requests: the half of the drainer's loop that starts calls."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict

from django.conf import settings

from agents import llm
from agents.ratelimit import (
    CLOSED,
    Breaker,
)
from tasks.execution.flights import POLL_S, TRIAL_RECHECK_S, Flight, attempt, estimate_tokens, io_loop
from tasks.services.lifecycle import (
    task_claim_batch,
)

logger = logging.getLogger("tasks")


class Dispatching:
    """The drainer's claiming and sending: claim batches, pass the breaker and the limiter, send."""

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
                Flight(
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
        by_key: dict[str, list[Flight]] = defaultdict(list)
        for flight in ready:
            by_key[flight.key].append(flight)
        epoch = time.time()
        releases: list[tuple[Flight, float]] = []
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

    def _wait(self, flights: list[Flight], seconds: float) -> None:
        ready_at = time.monotonic() + max(0.0, seconds)
        for flight in flights:
            flight.ready_at = ready_at

    def _send(self, flight: Flight) -> None:
        self.waiting.remove(flight)
        flight.calls += 1
        if flight.first_sent is None:
            flight.first_sent = time.monotonic()
        future = asyncio.run_coroutine_threadsafe(attempt(flight), io_loop())
        self.inflight[future] = flight
        self.stats.requests += 1
        self.stats.peak_inflight = max(self.stats.peak_inflight, len(self.inflight))
        future.add_done_callback(self.done.put)
