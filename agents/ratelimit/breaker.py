"""A circuit breaker per key (an agent), shared by every worker process.

The breaker counts consecutive retryable failures (timeouts, connection errors, 429, 5xx) per key; after
``AICP_BREAKER_FAILURES`` of them it opens for ``AICP_BREAKER_COOLDOWN_S``, then lets one trial call through
(half-open). The trial's success closes it, its failure opens it again. The arithmetic
(``breaker_permit``, ``breaker_record``) is pure; ``CircuitBreaker`` keeps the state in
``CircuitBreakerState`` rows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from django.conf import settings
from django.db import transaction

from agents.models import CircuitBreakerState
from agents.ratelimit.rows import locked_row

CLOSED = CircuitBreakerState.State.CLOSED
OPEN = CircuitBreakerState.State.OPEN
HALF_OPEN = CircuitBreakerState.State.HALF_OPEN


@dataclass(frozen=True)
class BreakerPolicy:
    failures: int  # consecutive retryable failures that open the breaker
    cooldown_s: float  # how long it stays open before a trial call
    trial_s: float  # how long one trial may take before another caller may try


@dataclass(frozen=True)
class Breaker:
    state: str = CLOSED
    failures: int = 0
    open_until: float = 0.0  # epoch seconds
    trial_until: float = 0.0

    def blocked_until(self, now: float) -> float:
        """0 when a call may start now (closed, or a trial is due); else when to look again."""
        if self.state == OPEN and now < self.open_until:
            return self.open_until
        if self.state == HALF_OPEN and now < self.trial_until:
            return self.trial_until
        return 0.0


def breaker_permit(breaker: Breaker, policy: BreakerPolicy, now: float, wanted: int) -> tuple[Breaker, int]:
    """How many of ``wanted`` calls may start now: all when closed, one trial when due, else none."""
    if breaker.state == CLOSED:
        return breaker, max(0, wanted)
    if wanted <= 0 or breaker.blocked_until(now):
        return breaker, 0
    return replace(breaker, state=HALF_OPEN, trial_until=now + policy.trial_s), 1


def breaker_record(breaker: Breaker, policy: BreakerPolicy, now: float, outcomes: Sequence[bool]) -> Breaker:
    """Folds call outcomes in order: True = the service answered, False = a retryable failure."""
    for ok in outcomes:
        if ok:
            breaker = Breaker()
            continue
        failures = breaker.failures + 1
        if breaker.state == HALF_OPEN or (breaker.state == CLOSED and failures >= policy.failures):
            breaker = Breaker(state=OPEN, failures=failures, open_until=now + policy.cooldown_s)
        else:
            # Closed below the threshold, or a late failure of a call that started before it opened.
            breaker = replace(breaker, failures=failures)
    return breaker


class CircuitBreaker:
    """Breakers in ``CircuitBreakerState`` rows. Reads are plain; writes happen only on a change."""

    def __init__(self, policy: BreakerPolicy) -> None:
        self.policy = policy

    def states(self, keys: Iterable[str]) -> dict[str, Breaker]:
        rows = CircuitBreakerState.objects.filter(key__in=list(keys))
        return {row.key: _breaker_of(row) for row in rows}

    def permit(self, key: str, wanted: int, *, now: float | None = None) -> tuple[int, Breaker]:
        now = time.time() if now is None else now
        with transaction.atomic():
            row = self._locked(key)
            current = _breaker_of(row)
            changed, granted = breaker_permit(current, self.policy, now, wanted)
            if changed != current:
                _store_breaker(row, changed)
        return granted, changed

    def record(self, key: str, outcomes: Sequence[bool], *, now: float | None = None) -> Breaker:
        now = time.time() if now is None else now
        with transaction.atomic():
            row = self._locked(key)
            current = _breaker_of(row)
            changed = breaker_record(current, self.policy, now, outcomes)
            if changed != current:
                _store_breaker(row, changed)
        return changed

    @staticmethod
    def _locked(key: str) -> CircuitBreakerState:
        return locked_row(CircuitBreakerState, key, "circuit breaker")


def _breaker_of(row: CircuitBreakerState) -> Breaker:
    return Breaker(
        state=row.state, failures=row.failures, open_until=row.open_until_ts, trial_until=row.trial_until_ts
    )


def _store_breaker(row: CircuitBreakerState, breaker: Breaker) -> None:
    row.state, row.failures = breaker.state, breaker.failures
    row.open_until_ts, row.trial_until_ts = breaker.open_until, breaker.trial_until
    row.save(update_fields=["state", "failures", "open_until_ts", "trial_until_ts", "updated_at"])


def breaker_policy_from_settings() -> BreakerPolicy:
    # A trial is one request; one that neither answers nor times out by then is presumed lost.
    trial_s = settings.AICP_LLM_TIMEOUT_S + 10.0
    return BreakerPolicy(
        failures=settings.AICP_BREAKER_FAILURES,
        cooldown_s=settings.AICP_BREAKER_COOLDOWN_S,
        trial_s=math.ceil(trial_s),
    )
