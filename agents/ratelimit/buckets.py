"""Rate limits' arithmetic: two token buckets per key, pure functions of (bucket, limits, now).

Requests per minute and tokens per minute. Tokens are charged on the estimate when a call starts and
corrected with the real usage afterwards, so the token bucket may go into debt; a key in debt gets nothing
until it has refilled. A provider's ``Retry-After`` blocks the key (``bucket_block``). No clock, no
storage: agents/ratelimit/limiters.py loads, locks and stores the buckets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace


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
