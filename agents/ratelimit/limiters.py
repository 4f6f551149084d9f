"""Rate limits' shared state: the buckets of agents/ratelimit/buckets.py, shared by every worker process.

In the database (one ``RateLimitBucket`` row per key, updated under a row lock) or in Redis when
``AICP_REDIS_URL`` is set (optimistic WATCH/MULTI). A ``Retry-After`` from the provider blocks the key for
every worker.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any, Protocol

from django.conf import settings
from django.db import transaction

from agents.models import RateLimitBucket
from agents.ratelimit.buckets import Bucket, Grant, Limits, bucket_block, bucket_charge, bucket_take
from agents.ratelimit.rows import locked_row


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
        return locked_row(
            RateLimitBucket,
            key,
            "rate-limit bucket",
            requests=full.requests,
            tokens=full.tokens,
            updated_ts=now,
        )


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
