"""The drainer's decision on a failed request (tasks.execution.policy): plain values in, a decision out."""

from __future__ import annotations

import pytest

from agents.llm import PermanentLLMError, RetryableLLMError
from agents.ratelimit import OPEN, Breaker
from agents.retry import MAX_RETRY_AFTER_S, RetryPolicy
from tasks.execution.policy import decide_failure, task_retry_delay_s

EPOCH = 1_000_000.0


def _decide(error, *, calls=1, task_attempts=1, breaker=None, max_attempts=3):
    return decide_failure(
        error=error,
        calls=calls,
        task_attempts=task_attempts,
        breaker=breaker or Breaker(),
        epoch=EPOCH,
        policy=RetryPolicy(max_attempts=max_attempts, backoff_s=0.01),
        task_max_attempts=3,
        task_retry_base_s=5.0,
    )


def test_it_fails_a_permanent_error_at_once_with_its_message():
    decision = _decide(PermanentLLMError("auth", "HTTP 401: bad key"))
    assert (decision.kind, decision.error, decision.error_code) == ("fail", "HTTP 401: bad key", "auth")


def test_it_retries_the_call_while_attempts_remain():
    decision = _decide(RetryableLLMError("server_error", "HTTP 503"), calls=1)
    assert decision.kind == "retry_local" and 0 < decision.delay_s <= 0.01


def test_it_gives_the_task_back_when_the_call_gave_up_and_says_how_often_it_tried():
    decision = _decide(RetryableLLMError("server_error", "HTTP 503", retry_after=2.0), calls=3)
    assert decision.kind == "retry_task"
    assert decision.error == "HTTP 503 (gave up after 3 attempts)"
    assert decision.delay_s == task_retry_delay_s(attempts=1, retry_after=2.0, base_s=5.0) == 5.0


def test_it_gives_the_task_back_at_once_for_a_retry_after_longer_than_a_call_waits():
    decision = _decide(RetryableLLMError("rate_limited", "HTTP 429", retry_after=MAX_RETRY_AFTER_S + 30))
    assert decision.kind == "retry_task" and decision.delay_s == MAX_RETRY_AFTER_S + 30


def test_it_fails_the_task_after_its_last_attempt():
    decision = _decide(RetryableLLMError("timeout", "no answer"), calls=3, task_attempts=3)
    assert (decision.kind, decision.error) == ("fail", "no answer (gave up after 3 attempts)")


@pytest.mark.parametrize(("calls", "kind"), [(1, "retry_local"), (3, "fail")])
def test_it_retries_an_invalid_answer_then_fails_the_task(calls, kind):
    decision = _decide(RetryableLLMError("invalid_answer", "Invalid answer: 'x'"), calls=calls)
    assert decision.kind == kind


def test_it_releases_the_task_unbilled_while_the_agents_breaker_is_open():
    breaker = Breaker(state=OPEN, failures=5, open_until=EPOCH + 30)
    decision = _decide(RetryableLLMError("server_error", "HTTP 503"), breaker=breaker)
    assert (decision.kind, decision.error_code) == ("release", "circuit_open")
    assert decision.not_before == breaker.blocked_until(EPOCH)
