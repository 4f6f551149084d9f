"""The one retry policy for LLM calls: which failures are retried, how long to wait, when to give up.

A pure function of plain values (was the failure retryable, which attempt it was, the server's
Retry-After), asked by both callers that retry: the single call's loop (agents.llm) and the drainer
(tasks.execution.policy), which sends each request on its own so that every one passes the shared rate
limiter. It lives in agents/ because agents.llm may not import tasks, while tasks imports agents; it
imports nothing of the project, so either can use it. The failures' kinds (codes, retryable or not) are
agents.llm's taxonomy.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

# A Retry-After longer than this is not waited for inside one call: the call gives up (and the drainer
# gives the task back to the queue for later) instead of holding a request slot for minutes.
MAX_RETRY_AFTER_S = 30.0
MAX_BACKOFF_S = 10.0


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int  # requests per call, the first included
    backoff_s: float  # the first retry's ceiling; doubled per attempt up to MAX_BACKOFF_S


def next_attempt_in(
    policy: RetryPolicy,
    *,
    retryable: bool,
    attempt: int,
    retry_after: float | None,
    jitter: Callable[[], float] = random.random,
) -> float | None:
    """Seconds to wait before attempt ``attempt + 1``; None: stop retrying this call.

    Exponential backoff with jitter (half to all of the ceiling), so that many calls that failed together
    do not retry in lockstep, and never sooner than the server's Retry-After.
    """
    if not retryable or attempt >= policy.max_attempts:
        return None
    if retry_after is not None and retry_after > MAX_RETRY_AFTER_S:
        return None
    ceiling = min(policy.backoff_s * 2 ** max(0, attempt - 1), MAX_BACKOFF_S)
    return max(retry_after or 0.0, ceiling * (0.5 + 0.5 * jitter()))
