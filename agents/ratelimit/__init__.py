"""Client-side rate limits and a circuit breaker per agent, shared by every worker process.

One module per concern, each a sitting's read:

- ``buckets.py``: the rate limits' arithmetic (RPM and TPM token buckets, debt, ``Retry-After`` blocks),
  pure functions of (bucket, limits, now), tested without a clock;
- ``limiters.py``: where the buckets live (database rows under a row lock, or Redis when
  ``AICP_REDIS_URL`` is set) and the limits from settings;
- ``breaker.py``: the circuit breaker (closed, open, half-open), its pure arithmetic and its rows;
- ``rows.py``: the one row per key, locked (or created) for a change.

Callers import from ``agents.ratelimit``. This package must not import ``tasks``.
"""

from agents.ratelimit.breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    Breaker,
    BreakerPolicy,
    CircuitBreaker,
    breaker_permit,
    breaker_policy_from_settings,
    breaker_record,
)
from agents.ratelimit.buckets import (
    Bucket,
    Grant,
    Limits,
    bucket_block,
    bucket_charge,
    bucket_refill,
    bucket_take,
)
from agents.ratelimit.limiters import (
    DatabaseLimiter,
    Limiter,
    RedisLimiter,
    limiter_from_settings,
    limits_from_settings,
)

__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "Breaker",
    "BreakerPolicy",
    "Bucket",
    "CircuitBreaker",
    "DatabaseLimiter",
    "Grant",
    "Limiter",
    "Limits",
    "RedisLimiter",
    "breaker_permit",
    "breaker_policy_from_settings",
    "breaker_record",
    "bucket_block",
    "bucket_charge",
    "bucket_refill",
    "bucket_take",
    "limiter_from_settings",
    "limits_from_settings",
]
