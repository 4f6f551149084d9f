"""Per-buyer limits checked in the writing transaction, with the buyer's accounts locked: the daily
spend cap (AICP_DAILY_SPEND_CAP or the buyer's own) and the submit limit (AICP_THROTTLE_SUBMIT)."""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.utils import timezone

from core.exceptions import (
    SpendCapExceeded,
    SubmitRateExceeded,
)
from ledger.models import ZERO
from tasks.models import Task
from tasks.selectors import (
    buyer_committed_today,
    buyer_submission_counts,
    buyer_submission_time,
    utc_day_start,
)
from users.models import User

logger = logging.getLogger("tasks")


def buyer_daily_spend_cap(*, user: User) -> Decimal | None:
    """The buyer's own cap if an operator set one, else the global AICP_DAILY_SPEND_CAP; None: no cap."""
    return user.daily_spend_cap if user.daily_spend_cap is not None else settings.AICP_DAILY_SPEND_CAP


def check_spend_cap(*, task: Task, committed_alongside: Decimal = ZERO) -> None:
    """Refuses a task whose quote would take today's (UTC) committed spend over the buyer's cap.

    Runs after the buyer's accounts are locked, so two concurrent submissions cannot both squeeze under it.
    ``committed_alongside``: the buyer's quotes accepted earlier in the same transaction, not written yet.
    """
    cap = buyer_daily_spend_cap(user=task.buyer)
    if cap is None:
        return
    now = timezone.now()
    committed = buyer_committed_today(user_id=task.buyer_id, now=now, exclude_task_id=task.pk)
    committed += committed_alongside
    if committed + task.price <= cap:
        return
    midnight = utc_day_start(now) + timedelta(days=1)
    retry_after_s = max(1, math.ceil((midnight - now).total_seconds()))
    raise SpendCapExceeded(
        f"Daily spend cap reached: this task costs {task.price}, you have already committed {committed} "
        f"today (UTC) and your cap is {cap}. Try again after midnight UTC, or ask an operator to raise "
        "your cap.",
        retry_after_s=retry_after_s,
    )


@dataclass(frozen=True)
class SubmitLimit:
    """At most ``count`` tasks per buyer in any ``window_s`` seconds (the API's AICP_THROTTLE_SUBMIT)."""

    count: int
    window_s: int


def check_submit_limit(
    *, task: Task, limit: SubmitLimit, created: int, created_alongside: int, now: datetime
) -> None:
    """Refuses a task that would be the buyer's (count + 1)-th in the window (SubmitRateExceeded, 429).

    ``created``: the buyer's tasks in the window, counted up to the limit; ``created_alongside``: those
    accepted earlier in the same transaction, not written yet. Checked with the buyer's accounts locked,
    so concurrent submissions cannot pass it together.
    """
    if created + created_alongside < limit.count:
        return
    window = timedelta(seconds=limit.window_s)
    # A place frees up when the oldest of the last `count` submissions leaves the window.
    index = limit.count - 1 - created_alongside
    oldest = (
        buyer_submission_time(user_id=task.buyer_id, since=now - window, newest_first_index=index)
        if index >= 0
        else None
    )
    wait_s = (oldest + window - now).total_seconds() if oldest else float(limit.window_s)
    retry_after_s = max(1, math.ceil(wait_s))
    raise SubmitRateExceeded(
        f"Too many submissions: at most {limit.count} tasks per {limit.window_s} s. "
        f"Try again in {retry_after_s} s.",
        retry_after_s=retry_after_s,
    )


def created_in_window(
    items: Sequence[tuple[Task, SubmitLimit | None]], now: datetime
) -> dict[tuple[int, SubmitLimit], int]:
    """Each limited buyer's tasks in its limit's window, counted up to the limit; a statement per limit."""
    buyers_by_limit: dict[SubmitLimit, set[int]] = defaultdict(set)
    for task, limit in items:
        if limit is not None:
            buyers_by_limit[limit].add(task.buyer_id)
    created: dict[tuple[int, SubmitLimit], int] = {}
    for limit, buyer_ids in buyers_by_limit.items():
        since = now - timedelta(seconds=limit.window_s)
        counts = buyer_submission_counts(user_ids=buyer_ids, since=since, limit=limit.count)
        created |= {(buyer_id, limit): count for buyer_id, count in counts.items()}
    return created
