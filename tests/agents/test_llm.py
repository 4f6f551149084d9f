"""agents.llm against the local simulator, through the real openai client."""

from __future__ import annotations

import asyncio
import logging
import pickle
import time

import pytest

from agents import llm
from agents.llm import (
    Completion,
    LLMEndpoint,
    LLMError,
    PermanentLLMError,
    RetryableLLMError,
    complete,
    complete_async,
    endpoint_from_settings,
)
from agents.simulator import Answer, Delay, Drop, Fault

LABELS = ["positive", "negative", "neutral"]
FAST = {"backoff_s": 0.01}


def test_it_returns_free_form_text_with_tokens_and_latency(llm_endpoint, llm_simulator):
    result = complete(endpoint=llm_endpoint, text="Summarise the plot of Hamlet in one line.", **FAST)

    assert isinstance(result, Completion)
    assert "aicp-simulator" in result.text
    assert result.prompt_tokens > 0 and result.completion_tokens > 0
    assert result.latency_ms >= 0
    assert result.attempts == 1
    assert llm_simulator.request_count == 1


def test_it_sends_the_task_text_as_the_user_message_and_instructions_as_system(llm_endpoint, llm_simulator):
    complete(endpoint=llm_endpoint, text="  exact task text  ", labels=LABELS, **FAST)

    body = llm_simulator.requests[-1]
    assert body["model"] == "gpt-4o-mini"
    system, user = body["messages"]
    assert system["role"] == "system" and '["positive", "negative", "neutral"]' in system["content"]
    assert user == {"role": "user", "content": "  exact task text  "}
    schema = body["response_format"]["json_schema"]
    assert body["response_format"]["type"] == "json_schema"
    assert schema["name"] == "label" and schema["strict"] is True
    assert schema["schema"] == {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": LABELS}},
        "required": ["label"],
        "additionalProperties": False,
    }


def test_it_sends_no_response_format_for_free_form_tasks(llm_endpoint, llm_simulator):
    complete(endpoint=llm_endpoint, text="Write a haiku.", **FAST)

    assert "response_format" not in llm_simulator.requests[-1]


def test_it_returns_one_of_the_labels(llm_endpoint, llm_simulator):
    llm_simulator.set_answer("I loved it", "positive")

    result = complete(endpoint=llm_endpoint, text="I loved it", labels=LABELS, **FAST)

    assert result.text == "positive"
    assert result.attempts == 1


def test_it_retries_an_answer_outside_the_labels_then_fails_permanently(llm_endpoint, llm_simulator):
    llm_simulator.script(*[Answer('{"label": "nope"}')] * 3)

    with pytest.raises(PermanentLLMError) as caught:
        complete(endpoint=llm_endpoint, text="hmm", labels=LABELS, max_attempts=3, **FAST)

    err = caught.value
    assert err.code == "invalid_answer" and not err.retryable
    assert '"nope"' in err.message and "3 attempts" in err.message
    assert err.attempts == 3
    assert err.prompt_tokens > 0  # invalid answers are billed too
    assert llm_simulator.request_count == 3


def test_it_retries_a_non_json_answer_and_then_succeeds(llm_endpoint, llm_simulator):
    llm_simulator.script(Answer("positive, definitely"))
    llm_simulator.set_answer("great", "negative")

    result = complete(endpoint=llm_endpoint, text="great", labels=LABELS, **FAST)

    assert result.text == "negative"
    assert result.attempts == 2
    assert llm_simulator.request_count == 2


def test_it_truncates_a_long_invalid_answer_in_the_error(llm_endpoint, llm_simulator):
    llm_simulator.script(Answer("x" * 5000))

    with pytest.raises(PermanentLLMError) as caught:
        complete(endpoint=llm_endpoint, text="t", labels=LABELS, max_attempts=1, **FAST)

    assert "not JSON" in caught.value.message
    assert len(caught.value.message) < 400


def test_it_treats_an_empty_free_form_answer_as_invalid(llm_endpoint, llm_simulator):
    llm_simulator.script(Answer("   "))

    result = complete(endpoint=llm_endpoint, text="Say something", **FAST)

    assert result.attempts == 2 and result.text


def test_it_retries_a_rate_limit_and_succeeds(llm_endpoint, llm_simulator):
    llm_simulator.script(Fault(429, code="rate_limit_exceeded", retry_after=0))

    result = complete(endpoint=llm_endpoint, text="hello", labels=LABELS, **FAST)

    assert result.text in LABELS
    assert result.attempts == 2
    assert llm_simulator.request_count == 2


class _SteppedClock:
    """Stands in for the ``time`` module inside agents.llm: sleeping advances the clock, at once."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return time.time() + (self.now - 1000.0)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_it_honours_retry_after(llm_endpoint, llm_simulator, monkeypatch):
    llm_simulator.script(Fault(429, retry_after=0.3))
    clock = _SteppedClock()
    monkeypatch.setattr(llm, "time", clock)

    result = complete(endpoint=llm_endpoint, text="hello", **FAST)

    assert clock.slept and clock.slept[0] >= 0.3, clock.slept  # the server's 0.3 s, not the 0.01 s backoff
    assert result.attempts == 2
    assert result.latency_ms >= 300  # latency covers the whole call, waits included


@pytest.mark.parametrize("status", [500, 502, 503, 408, 409])
def test_it_retries_server_errors(llm_endpoint, llm_simulator, status):
    llm_simulator.script(Fault(status), Fault(status))

    result = complete(endpoint=llm_endpoint, text="hello", max_attempts=3, **FAST)

    assert result.attempts == 3
    assert llm_simulator.request_count == 3


def test_it_raises_retryable_when_attempts_run_out(llm_endpoint, llm_simulator):
    llm_simulator.script(*[Fault(503, message="overloaded")] * 3)

    with pytest.raises(RetryableLLMError) as caught:
        complete(endpoint=llm_endpoint, text="hello", max_attempts=3, **FAST)

    err = caught.value
    assert err.code == "server_error" and err.retryable
    assert "503" in err.message and "overloaded" in err.message and "3 attempts" in err.message
    assert err.attempts == 3
    assert llm_simulator.request_count == 3


def test_it_reports_retry_after_when_rate_limits_persist(llm_endpoint, llm_simulator):
    llm_simulator.script(Fault(429, retry_after=0.02), Fault(429, retry_after=0.02))

    with pytest.raises(RetryableLLMError) as caught:
        complete(endpoint=llm_endpoint, text="hello", max_attempts=2, **FAST)

    assert caught.value.code == "rate_limited"
    assert caught.value.retry_after == pytest.approx(0.02)


def test_it_does_not_let_the_openai_client_retry_on_its_own(llm_endpoint, llm_simulator):
    llm_simulator.script(Fault(500))

    with pytest.raises(RetryableLLMError):
        complete(endpoint=llm_endpoint, text="hello", max_attempts=1, **FAST)

    assert llm_simulator.request_count == 1


def test_it_fails_auth_errors_at_once(llm_endpoint, llm_simulator):
    llm_simulator.script(Fault(401, code="invalid_api_key", message="Incorrect API key provided"))

    with pytest.raises(PermanentLLMError) as caught:
        complete(endpoint=llm_endpoint, text="hello", max_attempts=5, **FAST)

    err = caught.value
    assert err.code == "auth" and not err.retryable
    assert "401" in err.message and "Incorrect API key" in err.message
    assert err.attempts == 1
    assert llm_simulator.request_count == 1


def test_it_fails_insufficient_quota_at_once(llm_endpoint, llm_simulator):
    llm_simulator.script(
        Fault(429, code="insufficient_quota", message="You exceeded your quota", retry_after=0)
    )

    with pytest.raises(PermanentLLMError) as caught:
        complete(endpoint=llm_endpoint, text="hello", max_attempts=5, **FAST)

    assert caught.value.code == "quota"
    assert llm_simulator.request_count == 1


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "bad_request"), (403, "permission_denied"), (404, "not_found"), (422, "bad_request")],
)
def test_it_fails_other_client_errors_at_once(llm_endpoint, llm_simulator, status, code):
    llm_simulator.script(Fault(status))

    with pytest.raises(PermanentLLMError) as caught:
        complete(endpoint=llm_endpoint, text="hello", max_attempts=5, **FAST)

    assert caught.value.code == code
    assert llm_simulator.request_count == 1


def test_it_never_leaks_the_api_key(llm_simulator, caplog):
    secret = "sk-very-secret-key-123"
    endpoint = LLMEndpoint(model="gpt-4o-mini", base_url=llm_simulator.base_url, api_key=secret, timeout_s=5)
    llm_simulator.script(
        Fault(500, message=f"boom {secret}"), Fault(401, message=f"Incorrect API key {secret}")
    )

    with caplog.at_level(logging.DEBUG), pytest.raises(PermanentLLMError) as caught:
        complete(endpoint=endpoint, text="hello", **FAST)

    assert secret not in str(caught.value)
    assert secret not in repr(endpoint)
    assert secret not in caplog.text
    assert "***" in caught.value.message


def test_it_retries_a_dropped_connection(llm_endpoint, llm_simulator):
    llm_simulator.script(Drop())

    result = complete(endpoint=llm_endpoint, text="hello", **FAST)

    assert result.attempts == 2
    assert llm_simulator.request_count == 2


def test_it_reports_a_connection_error_when_nothing_listens(llm_simulator):
    base_url = llm_simulator.base_url
    llm_simulator.stop()
    endpoint = LLMEndpoint(model="gpt-4o-mini", base_url=base_url, api_key="k", timeout_s=2)

    with pytest.raises(RetryableLLMError) as caught:
        complete(endpoint=endpoint, text="hello", max_attempts=2, **FAST)

    assert caught.value.code == "connection"
    assert caught.value.attempts == 2


def test_it_times_out_and_retries_then_gives_up(llm_simulator):
    endpoint = LLMEndpoint(model="gpt-4o-mini", base_url=llm_simulator.base_url, api_key="k", timeout_s=0.3)
    llm_simulator.script(Delay(3), Delay(3))

    started = time.monotonic()
    with pytest.raises(RetryableLLMError) as caught:
        complete(endpoint=endpoint, text="hello", max_attempts=2, **FAST)

    assert caught.value.code == "timeout"
    assert "0.3 s" in caught.value.message
    assert llm_simulator.request_count == 2
    assert time.monotonic() - started < 2.0


def test_it_recovers_after_a_timeout(llm_simulator):
    endpoint = LLMEndpoint(model="gpt-4o-mini", base_url=llm_simulator.base_url, api_key="k", timeout_s=0.3)
    llm_simulator.script(Delay(3))

    result = complete(endpoint=endpoint, text="hello", labels=LABELS, **FAST)

    assert result.attempts == 2 and result.text in LABELS


def test_it_fails_fast_without_a_key_for_the_real_api():
    with pytest.raises(PermanentLLMError) as caught:
        complete(endpoint=LLMEndpoint(model="gpt-4o-mini"), text="hello")

    assert caught.value.code == "auth"


def test_it_allows_a_keyless_compatible_server(llm_simulator):
    endpoint = LLMEndpoint(model="gpt-4o-mini", base_url=llm_simulator.base_url)

    assert complete(endpoint=endpoint, text="hello").attempts == 1


@pytest.mark.parametrize(
    ("labels", "kwargs"),
    [("ab", {}), ([], {}), (["a", "a"], {}), (["a", ""], {}), (None, {"max_attempts": 0})],
)
def test_it_rejects_invalid_arguments_before_any_request(llm_endpoint, llm_simulator, labels, kwargs):
    with pytest.raises(ValueError):
        complete(endpoint=llm_endpoint, text="hello", labels=labels, **kwargs)

    assert llm_simulator.request_count == 0


def test_it_caches_one_client_per_endpoint_without_openai_retries(llm_endpoint):
    client = llm._sync_client(llm_endpoint)

    assert llm._sync_client(LLMEndpoint(**vars(llm_endpoint))) is client
    assert llm._sync_client(LLMEndpoint(**{**vars(llm_endpoint), "timeout_s": 7})) is not client
    assert client.max_retries == 0


def test_it_pickles_errors_for_the_job_queue():
    err = RetryableLLMError("rate_limited", "slow down", retry_after=1.5, attempts=3, prompt_tokens=7)

    copy = pickle.loads(pickle.dumps(err))

    assert type(copy) is RetryableLLMError and isinstance(copy, LLMError)
    assert (copy.code, copy.message, copy.retry_after, copy.attempts, copy.prompt_tokens) == (
        "rate_limited",
        "slow down",
        1.5,
        3,
        7,
    )


def test_it_runs_many_async_calls_concurrently(make_llm_simulator):
    simulator = make_llm_simulator(latency_ms=300)
    endpoint = LLMEndpoint(model="gpt-4o-mini", base_url=simulator.base_url, api_key="k", timeout_s=5)
    texts = [f"text number {i}" for i in range(20)]

    async def run_all() -> list[Completion]:
        return await asyncio.gather(
            *(complete_async(endpoint=endpoint, text=t, labels=LABELS, **FAST) for t in texts)
        )

    started = time.monotonic()
    results = asyncio.run(run_all())

    # 20 × 300 ms sequentially would be 6 s; half of that leaves room for a busy 2-core box.
    assert time.monotonic() - started < 3.0
    assert all(r.text in LABELS and r.attempts == 1 for r in results)
    assert simulator.request_count == 20


def test_it_retries_and_classifies_errors_in_async_calls_too(llm_endpoint, llm_simulator):
    llm_simulator.script(Fault(503), Answer('{"label": "nope"}'))

    async def run() -> tuple[Completion, BaseException]:
        ok = await complete_async(endpoint=llm_endpoint, text="x", labels=LABELS, **FAST)
        llm_simulator.script(Fault(401))
        try:
            await complete_async(endpoint=llm_endpoint, text="y", labels=LABELS, **FAST)
        except LLMError as err:
            return ok, err
        raise AssertionError("expected an error")

    ok, err = asyncio.run(run())

    assert ok.attempts == 3 and ok.text in LABELS
    assert isinstance(err, PermanentLLMError) and err.code == "auth" and err.attempts == 1
    assert llm_simulator.request_count == 4


def test_it_reuses_async_clients_within_a_loop_but_not_across_loops(llm_endpoint):
    async def get_twice() -> tuple[object, object]:
        return llm._async_client(llm_endpoint), llm._async_client(llm_endpoint)

    first, second = asyncio.run(get_twice())
    third, _ = asyncio.run(get_twice())

    assert first is second
    assert third is not first


def test_it_builds_an_endpoint_from_settings():
    from django.conf import settings
    from django.test import override_settings

    if not settings.configured:
        settings.configure()  # only when run without the project's settings (pytest -p no:django)

    with override_settings(
        OPENAI_API_KEY="sk-x", OPENAI_BASE_URL="http://sim:8100/v1", AICP_LLM_TIMEOUT_S=12
    ):
        endpoint = endpoint_from_settings("gpt-4o-mini")
        own = endpoint_from_settings("gpt-4o", base_url="http://other/v1")

    assert endpoint == LLMEndpoint(
        model="gpt-4o-mini", base_url="http://sim:8100/v1", api_key="sk-x", timeout_s=12.0
    )
    assert own.base_url == "http://other/v1" and own.model == "gpt-4o"

    with override_settings(OPENAI_BASE_URL="", OPENAI_API_KEY=None):
        default = endpoint_from_settings("gpt-4o-mini")

    assert default.base_url is None and default.api_key == ""
