"""What the drainer does with a failed request: retry the call, give the task back, release it, or fail it.

Pure functions of plain values. Whether and when a call is retried is agents.retry's policy, the same one
the single call's loop (agents.llm) applies; what this adds is the drainer's two further tiers: a task
whose call gave up goes back to the queue (task-level backoff) until AICP_TASK_MAX_ATTEMPTS, and a task
whose agent's circuit breaker is open is released unbilled, its attempt given back.
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.llm import LLMError
from agents.ratelimit import CLOSED, Breaker
from agents.retry import RetryPolicy, next_attempt_in
from tasks.services.lifecycle import Outcome


@dataclass(frozen=True)
class Decision:
    kind: str  # complete | fail | retry_task | release | retry_local
    outcome: Outcome | None = None
    error: str = ""
    error_code: str = ""
    delay_s: float = 0.0
    not_before: float = 0.0  # epoch seconds, for release


def task_retry_delay_s(*, attempts: int, retry_after: float | None, base_s: float) -> float:
    """Backoff before a task that failed retryably is claimed again: doubling, at least the Retry-After."""
    return max(retry_after or 0.0, base_s * 2 ** max(0, attempts - 1))


def decide_failure(
    *,
    error: LLMError,
    calls: int,
    task_attempts: int,
    breaker: Breaker,
    epoch: float,
    policy: RetryPolicy,
    task_max_attempts: int,
    task_retry_base_s: float,
) -> Decision:
    """The decision for a request that failed with ``error``, the ``calls``-th of its claim.

    ``task_attempts``: the task's claims so far (this one included); ``breaker``: its agent's breaker now.
    """
    tried = f"gave up after {calls} attempt{'s' if calls != 1 else ''}"
    delay = next_attempt_in(policy, retryable=error.retryable, attempt=calls, retry_after=error.retry_after)
    if error.code == "invalid_answer":
        if delay is not None:
            return Decision("retry_local", delay_s=delay)
        return Decision("fail", error=f"{error.message} ({tried})", error_code=error.code)
    if not error.retryable:
        return Decision("fail", error=error.message, error_code=error.code)
    if breaker.state != CLOSED:
        # Not the task's fault: it waits, unbilled and with its attempt given back, for the agent.
        return Decision(
            "release",
            error=f"{error.message} (circuit breaker open)",
            error_code="circuit_open",
            not_before=breaker.blocked_until(epoch) or epoch,
        )
    if delay is not None:
        return Decision("retry_local", delay_s=delay)
    message = f"{error.message} ({tried})"
    if task_attempts < task_max_attempts:
        delay_s = task_retry_delay_s(
            attempts=task_attempts, retry_after=error.retry_after, base_s=task_retry_base_s
        )
        return Decision("retry_task", error=message, error_code=error.code, delay_s=delay_s)
    return Decision("fail", error=message, error_code=error.code)
