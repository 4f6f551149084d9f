"""Client-side rate limits and a circuit breaker per agent, shared by every worker process.

Rate limits are two token buckets per key (an agent's name): requests per minute and tokens per minute.
Tokens are charged on the estimate when a call starts and corrected with the real usage afterwards, so the
token bucket may go into debt; a key in debt gets nothing until it has refilled. A ``Retry-After`` from
the provider blocks the key for every worker. The state lives in the database (one row per key, updated
under a row lock) or in Redis when ``AICP_REDIS_URL`` is set.

The breaker counts consecutive retryable failures (timeouts, connection errors, 429, 5xx) per key; after
``AICP_BREAKER_FAILURES`` of them it opens for ``AICP_BREAKER_COOLDOWN_S``, then lets one trial call through
(half-open). The trial's success closes it, its failure opens it again.

The arithmetic is pure functions of (state, limits, now) so that it can be tested without a clock; the
backends only load, lock and store the state. This module must not import ``tasks``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

from django.conf import settings
from django.db import IntegrityError, transaction

from agents.models import CircuitBreakerState, RateLimitBucket

# --- rate limits: arithmetic ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """Per-key limits; 0 means no limit. ``burst_s`` seconds of refill is the most a bucket holds."""

    rpm: int = 0
    tpm: int = 0
    burst_s: float = 1.0

    @property
    def unlimited(self) -> bool:
        return not self.rpm and not self.tpm

    @property
    def request_rate(self) -> float:
        return self.rpm / 60.0

    @property
    def token_rate(self) -> float:
        return self.tpm / 60.0

    @property
    def request_capacity(self) -> float:
        # At least one whole request, or a low limit could never grant anything.
        return max(1.0, self.request_rate * self.burst_s)

    @property
    def token_capacity(self) -> float:
        return max(1.0, self.token_rate * self.burst_s)


@dataclass(frozen=True)
class Bucket:
    requests: float
    tokens: float
    updated: float  # epoch seconds of the last refill
    blocked_until: float = 0.0  # epoch seconds; a provider's Retry-After

    @classmethod
    def full(cls, limits: Limits, now: float) -> Bucket:
        return cls(requests=limits.request_capacity, tokens=limits.token_capacity, updated=now)


@dataclass(frozen=True)
class Grant:
    granted: int  # how many of the asked requests may start now (a prefix of them)
    wait_s: float  # when fewer than asked: seconds until the next one may


def bucket_refill(bucket: Bucket, limits: Limits, now: float) -> Bucket:
    elapsed = max(0.0, now - bucket.updated)
    return replace(
        bucket,
        requests=min(limits.request_capacity, bucket.requests + elapsed * limits.request_rate),
        tokens=min(limits.token_capacity, bucket.tokens + elapsed * limits.token_rate),
        updated=max(now, bucket.updated),
    )


def bucket_take(bucket: Bucket, limits: Limits, now: float, costs: Sequence[int]) -> tuple[Bucket, Grant]:
    """Grants a prefix of the requests whose estimated token costs are ``costs``.

    A request needs one whole request token and a token bucket that is not in debt; it is charged its
    estimate, which may put the token bucket into debt (a big prompt is not refused forever).
    """
    bucket = bucket_refill(bucket, limits, now)
    if now < bucket.blocked_until:
        return bucket, Grant(0, bucket.blocked_until - now)
    requests, tokens = bucket.requests, bucket.tokens
    granted = 0
    for cost in costs:
        if limits.rpm and requests < 1.0:
            break
        if limits.tpm and tokens <= 0.0:
            break
        if limits.rpm:
            requests -= 1.0
        if limits.tpm:
            tokens -= max(0, cost)
        granted += 1
    wait = 0.0
    if granted < len(costs):
        waits = []
        if limits.rpm and requests < 1.0:
            waits.append((1.0 - requests) / limits.request_rate)
        if limits.tpm and tokens <= 0.0:
            # Just past zero, not to zero: a bucket at exactly 0 still grants nothing.
            waits.append((-tokens) / limits.token_rate + 1.0 / limits.token_rate)
        wait = max(waits) if waits else 0.0
    return replace(bucket, requests=requests, tokens=tokens), Grant(granted, wait)


def bucket_charge(bucket: Bucket, limits: Limits, now: float, tokens: int) -> Bucket:
    """Corrects the token bucket by ``tokens`` (real usage minus estimate; negative gives tokens back)."""
    bucket = bucket_refill(bucket, limits, now)
    if not limits.tpm:
        return bucket
    return replace(bucket, tokens=min(limits.token_capacity, bucket.tokens - tokens))


def bucket_block(bucket: Bucket, until: float) -> Bucket:
    return replace(bucket, blocked_until=max(bucket.blocked_until, until))


# --- rate limits: shared state -------------------------------------------------------------------------


class Limiter(Protocol):
    def take(self, key: str, limits: Limits, costs: Sequence[int], *, now: float | None = None) -> Grant: ...

    def charge(self, key: str, limits: Limits, tokens: int, *, now: float | None = None) -> None: ...

    def block(self, key: str, until: float) -> None: ...

    def blocked_until(self, keys: Iterable[str]) -> dict[str, float]: ...


class DatabaseLimiter:
    """Buckets in ``RateLimitBucket`` rows; each change is one short transaction holding the row lock."""

    def take(self, key: str, limits: Limits, costs: Sequence[int], *, now: float | None = None) -> Grant:
        now = time.time() if now is None else now
        with transaction.atomic():
            row = self._locked(key, limits, now)
            bucket, grant = bucket_take(_bucket_of(row), limits, now, costs)
            _store(row, bucket)
        return grant

    def charge(self, key: str, limits: Limits, tokens: int, *, now: float | None = None) -> None:
        if not tokens or not limits.tpm:
            return
        now = time.time() if now is None else now
        with transaction.atomic():
            row = self._locked(key, limits, now)
            _store(row, bucket_charge(_bucket_of(row), limits, now, tokens))

    def block(self, key: str, until: float) -> None:
        with transaction.atomic():
            row = self._locked(key, Limits(), time.time())
            if until > row.blocked_until_ts:
                row.blocked_until_ts = until
                row.save(update_fields=["blocked_until_ts"])

    def blocked_until(self, keys: Iterable[str]) -> dict[str, float]:
        return dict(
            RateLimitBucket.objects.filter(key__in=list(keys), blocked_until_ts__gt=time.time()).values_list(
                "key", "blocked_until_ts"
            )
        )

    def state(self, key: str) -> Bucket | None:
        row = RateLimitBucket.objects.filter(key=key).first()
        return _bucket_of(row) if row else None

    @staticmethod
    def _locked(key: str, limits: Limits, now: float) -> RateLimitBucket:
        full = Bucket.full(limits, now)
        for _ in range(2):
            row = RateLimitBucket.objects.select_for_update().filter(key=key).first()
            if row is not None:
                return row
            try:
                with transaction.atomic():
                    return RateLimitBucket.objects.create(
                        key=key, requests=full.requests, tokens=full.tokens, updated_ts=now
                    )
            except IntegrityError:
                continue  # another worker created it first: lock theirs
        raise RuntimeError(f"could not create the rate-limit bucket {key!r}")


def _bucket_of(row: RateLimitBucket) -> Bucket:
    return Bucket(
        requests=row.requests, tokens=row.tokens, updated=row.updated_ts, blocked_until=row.blocked_until_ts
    )


def _store(row: RateLimitBucket, bucket: Bucket) -> None:
    row.requests, row.tokens = bucket.requests, bucket.tokens
    row.updated_ts, row.blocked_until_ts = bucket.updated, bucket.blocked_until
    row.save(update_fields=["requests", "tokens", "updated_ts", "blocked_until_ts"])


class RedisLimiter:
    """The same buckets as JSON values in Redis, changed by optimistic WATCH/MULTI transactions."""

    PREFIX = "aicp:ratelimit:"
    # A bucket untouched this long is full again anyway; let Redis forget it.
    TTL_S = 24 * 3600

    def __init__(self, url: str) -> None:
        import redis

        self.redis = redis.Redis.from_url(url)

    def take(self, key: str, limits: Limits, costs: Sequence[int], *, now: float | None = None) -> Grant:
        result: list[Grant] = []

        def change(bucket: Bucket | None, at: float) -> Bucket:
            changed, grant = bucket_take(bucket or Bucket.full(limits, at), limits, at, costs)
            result[:] = [grant]
            return changed

        self._update(key, change, now)
        return result[0]

    def charge(self, key: str, limits: Limits, tokens: int, *, now: float | None = None) -> None:
        if tokens and limits.tpm:
            self._update(
                key, lambda b, at: bucket_charge(b or Bucket.full(limits, at), limits, at, tokens), now
            )

    def block(self, key: str, until: float) -> None:
        self._update(key, lambda b, at: bucket_block(b or Bucket.full(Limits(), at), until), None)

    def blocked_until(self, keys: Iterable[str]) -> dict[str, float]:
        keys = list(keys)
        if not keys:
            return {}
        now = time.time()
        blocked = {}
        for key, raw in zip(keys, self.redis.mget([self.PREFIX + k for k in keys]), strict=True):
            if raw:
                until = json.loads(raw)["blocked_until"]
                if until > now:
                    blocked[key] = until
        return blocked

    def state(self, key: str) -> Bucket | None:
        raw = self.redis.get(self.PREFIX + key)
        return Bucket(**json.loads(raw)) if raw else None

    def _update(self, key: str, change: Any, now: float | None) -> None:
        import redis

        name = self.PREFIX + key
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(name)
                    raw = pipe.get(name)
                    at = time.time() if now is None else now
                    bucket = change(Bucket(**json.loads(raw)) if raw else None, at)
                    pipe.multi()
                    pipe.set(name, json.dumps(asdict(bucket)), ex=self.TTL_S)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue  # another worker changed it between our read and write: recompute


def limits_from_settings() -> Limits:
    return Limits(
        rpm=settings.AICP_RPM_LIMIT, tpm=settings.AICP_TPM_LIMIT, burst_s=settings.AICP_RATE_BURST_S
    )


def limiter_from_settings() -> Limiter:
    url = getattr(settings, "AICP_REDIS_URL", "")
    return RedisLimiter(url) if url else DatabaseLimiter()


# --- circuit breaker -----------------------------------------------------------------------------------

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
        for _ in range(2):
            row = CircuitBreakerState.objects.select_for_update().filter(key=key).first()
            if row is not None:
                return row
            try:
                with transaction.atomic():
                    return CircuitBreakerState.objects.create(key=key)
            except IntegrityError:
                continue
        raise RuntimeError(f"could not create the circuit breaker {key!r}")


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
