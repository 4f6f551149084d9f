"""Per-client rate limits for the anonymous endpoints (sign-up, login, refresh), counted atomically.

DRF's SimpleRateThrottle reads a request history from the cache and writes it back: concurrent requests
all read the same history and all pass (40 simultaneous sign-ups let 32 through against a limit of 20).
Here each request is one conditional UPDATE of its client's counter in the database, which SQLite and
PostgreSQL both apply atomically, so a limit of 20 lets through 20 and no more however the requests
arrive. The window is fixed and opens at the client's first request; 429 answers say, in Retry-After,
when it ends.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from users.client_address import client_key
from users.models import ThrottleCounter

logger = logging.getLogger(__name__)

# Each pass either counts the request, refuses it, or lost a race to create the counter (then the next
# pass finds it); three passes always decide.
_PASSES = 3


@dataclass(frozen=True)
class ThrottleDecision:
    allowed: bool
    retry_after_s: int = 0


def _refused(window_started_at: datetime, window_s: int, now: datetime) -> ThrottleDecision:
    remaining = (window_started_at + timedelta(seconds=window_s) - now).total_seconds()
    return ThrottleDecision(allowed=False, retry_after_s=max(1, math.ceil(remaining)))


@transaction.atomic
def throttle_counter_hit(*, scope: str, client: str, limit: int, window_s: int) -> ThrottleDecision:
    """Counts one request of ``client`` against ``limit`` per ``window_s`` in ``scope``, or refuses it."""
    now = timezone.now()
    if limit <= 0:
        return ThrottleDecision(allowed=False, retry_after_s=window_s)
    window_open_since = now - timedelta(seconds=window_s)
    counter = ThrottleCounter.objects.filter(scope=scope, client=client)
    for _ in range(_PASSES):
        if counter.filter(window_started_at__gt=window_open_since, hits__lt=limit).update(hits=F("hits") + 1):
            return ThrottleDecision(allowed=True)
        # Under READ COMMITTED the row's condition is checked again once its lock is ours, so of two
        # requests finding the window over, one opens the next and the other is counted in it.
        if counter.filter(window_started_at__lte=window_open_since).update(hits=1, window_started_at=now):
            return ThrottleDecision(allowed=True)
        current = counter.values_list("hits", "window_started_at").first()
        if current is not None:
            hits, started_at = current
            if hits >= limit and started_at > window_open_since:
                return _refused(started_at, window_s, now)
            continue  # changed between the statements: look again
        try:
            with transaction.atomic():
                ThrottleCounter.objects.create(scope=scope, client=client, hits=1, window_started_at=now)
        except IntegrityError:
            continue  # another request created it first
        transaction.on_commit(lambda: _forget_finished_windows(scope=scope, before=window_open_since))
        return ThrottleDecision(allowed=True)
    return ThrottleDecision(allowed=False, retry_after_s=1)


def _forget_finished_windows(*, scope: str, before: datetime) -> None:
    """Keeps the table to the clients of the current windows; run when a new client appears."""
    try:
        ThrottleCounter.objects.filter(scope=scope, window_started_at__lte=before).delete()
    except DatabaseError:
        # Housekeeping only: a counter left behind is reset by its client's next request.
        logger.warning("Could not delete finished %s throttle windows", scope, exc_info=True)


class AtomicRateThrottle(SimpleRateThrottle):
    """A DRF throttle (scope and rate as DRF's) keyed on the trusted client address, counted atomically."""

    retry_after_s: int | None = None

    def get_cache_key(self, request: Request, view: APIView) -> str:
        return client_key(request)

    def allow_request(self, request: Request, view: APIView) -> bool:
        if self.rate is None:
            return True
        decision = throttle_counter_hit(
            scope=self.scope,
            client=self.get_cache_key(request, view),
            limit=self.num_requests,
            window_s=self.duration,
        )
        self.retry_after_s = decision.retry_after_s
        return decision.allowed

    def wait(self) -> float | None:
        return self.retry_after_s
