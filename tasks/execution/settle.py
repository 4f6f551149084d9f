"""Settling finished calls: breakers and rate-limit corrections, each call's decision, its database effect."""

from __future__ import annotations

import logging
import time
from collections import defaultdict

from django.conf import settings
from django.db import OperationalError, transaction

from agents.pricing import token_cost
from agents.ratelimit import (
    Breaker,
)
from tasks.execution.flights import (
    SETTLE_CHUNK,
    SETTLE_LAG_TARGET_S,
    Done,
    Flight,
    epoch_to_datetime,
)
from tasks.execution.policy import Decision, decide_failure
from tasks.services.lifecycle import (
    Completion,
    Outcome,
    task_complete,
    task_complete_many,
    task_fail,
    task_release_claims,
    task_retry_later,
)

logger = logging.getLogger("tasks")


class Settling:
    """The drainer's settling: record what calls answered, decide each (tasks.execution.policy), write it."""

    def _settle(self, done: list[Done]) -> None:
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

    def _settle_chunk(self, chunk: list[Done]) -> None:
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

    def _decide(self, done: Done, breakers: dict[str, Breaker], epoch: float) -> Decision:
        flight = done.flight
        if done.completion is not None:
            agent = flight.task.agent
            latency_ms = round((time.monotonic() - (flight.first_sent or flight.claimed_at)) * 1000)
            return Decision(
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
            return Decision(
                "fail", error=f"internal error: {type(error).__name__}: {error}", error_code="internal"
            )
        assert done.error is not None
        return decide_failure(
            error=done.error,
            calls=flight.calls,
            task_attempts=flight.task.attempts,
            breaker=breakers.get(flight.key, Breaker()),
            epoch=epoch,
            policy=self.retry_policy,
            task_max_attempts=settings.AICP_TASK_MAX_ATTEMPTS,
            task_retry_base_s=settings.AICP_TASK_RETRY_DELAY_S,
        )

    def _apply_all(self, chunk: list[Done], decisions: list[Decision]) -> list[bool]:
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

    def _apply(self, done: Done, decision: Decision) -> bool:
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
                        not_before=epoch_to_datetime(decision.not_before),
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

    def _account(self, flight: Flight, decision: Decision, applied: bool) -> None:
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

    def _release(self, flights: list[tuple[Flight, float]], *, error: str, error_code: str) -> None:
        by_time: dict[float, list[Flight]] = defaultdict(list)
        for flight, not_before in flights:
            by_time[not_before].append(flight)
        for not_before, group in by_time.items():
            released = task_release_claims(
                task_ids=[f.task.id for f in group],
                not_before=epoch_to_datetime(not_before),
                error=error,
                error_code=error_code,
            )
            self.stats.released += released
            for flight in group:
                self.waiting.remove(flight)
