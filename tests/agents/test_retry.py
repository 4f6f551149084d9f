"""The one retry policy (agents.retry): which failures retry, backoff with jitter, giving up after N."""

from __future__ import annotations

import pytest

from agents.retry import MAX_BACKOFF_S, MAX_RETRY_AFTER_S, RetryPolicy, next_attempt_in

POLICY = RetryPolicy(max_attempts=3, backoff_s=0.5)


def test_it_never_retries_a_permanent_failure():
    assert next_attempt_in(POLICY, retryable=False, attempt=1, retry_after=None) is None


def test_it_gives_up_after_the_last_attempt():
    assert next_attempt_in(POLICY, retryable=True, attempt=2, retry_after=None) is not None
    assert next_attempt_in(POLICY, retryable=True, attempt=3, retry_after=None) is None


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 0.5), (2, 1.0)])
def test_it_doubles_the_backoff_and_jitters_between_half_and_all_of_it(attempt, ceiling):
    def low() -> float:
        return 0.0

    def high() -> float:
        return 1.0

    at_least = next_attempt_in(POLICY, retryable=True, attempt=attempt, retry_after=None, jitter=low)
    at_most = next_attempt_in(POLICY, retryable=True, attempt=attempt, retry_after=None, jitter=high)
    assert (at_least, at_most) == (ceiling / 2, ceiling)


def test_it_caps_the_backoff():
    policy = RetryPolicy(max_attempts=50, backoff_s=1.0)
    delay = next_attempt_in(policy, retryable=True, attempt=20, retry_after=None, jitter=lambda: 1.0)
    assert delay == MAX_BACKOFF_S


def test_it_waits_at_least_the_retry_after():
    delay = next_attempt_in(POLICY, retryable=True, attempt=1, retry_after=4.0, jitter=lambda: 1.0)
    assert delay == 4.0


def test_it_gives_up_the_call_when_retry_after_is_longer_than_a_call_waits():
    late = MAX_RETRY_AFTER_S + 1
    assert next_attempt_in(POLICY, retryable=True, attempt=1, retry_after=late) is None
