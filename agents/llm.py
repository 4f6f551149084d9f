"""The one place that talks to an LLM: requests, error taxonomy, timeouts and retries.

It takes plain inputs (text, labels, an endpoint) and returns a ``Completion`` or raises an ``LLMError``
whose ``retryable`` flag tells the caller whether trying again later can help. Retries within one call
are owned here (the openai client is built with ``max_retries=0``), so the request count is ours; the
retry policy is agents.retry, the prompts and answer parsing agents.prompts, the errors agents.llm_errors.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from agents.llm_errors import LLMError, PermanentLLMError, RetryableLLMError
from agents.prompts import build_request, check_labels, parse_answer
from agents.prompts import estimate_label_tokens as estimate_label_tokens  # re-exported: callers' API
from agents.prompts import request_messages as request_messages  # re-exported: callers' API
from agents.retry import RetryPolicy, next_attempt_in

if TYPE_CHECKING:
    import openai


def warm_up() -> None:
    """Imports the openai package ahead of the first call (a process about to make many)."""
    _openai()


async def warm_up_async(endpoint: LLMEndpoint) -> None:
    """Creates this event loop's client for the endpoint, and what its first request would load."""
    _async_client(endpoint).chat.completions  # noqa: B018 — resolving it imports the resource modules


def _openai() -> ModuleType:
    """The openai package, imported on first use: it costs ~36 MB and 0.3 s per process, and most processes
    that import this module (web workers estimating tokens, the queue's supervisor processes) never call
    an LLM."""
    import openai

    return openai


logger = logging.getLogger(__name__)

# openai refuses to build a client without a key; OpenAI-compatible local servers often don't need one.
_NO_KEY_PLACEHOLDER = "no-key"


@dataclass(frozen=True)
class LLMEndpoint:
    model: str
    base_url: str | None = None  # None → the openai default
    api_key: str = field(default="", repr=False)  # repr=False: endpoints get logged, keys must not
    timeout_s: float = 30.0


@dataclass(frozen=True)
class Completion:
    text: str  # labeling: exactly one of the labels; free-form: the text
    prompt_tokens: int  # summed over every attempt that got an answer: all of them are billed
    completion_tokens: int
    latency_ms: int  # wall time of the whole call, retries and backoff included
    attempts: int  # requests sent


# -- public API -----------------------------------------------------------------------------------------


def complete(
    *,
    endpoint: LLMEndpoint,
    text: str,
    labels: Sequence[str] | None = None,
    max_attempts: int = 3,
    backoff_s: float = 0.5,
) -> Completion:
    """Run one task on the LLM, retrying transient failures; blocks the calling thread."""
    openai = _openai()
    call = _Call(endpoint, text, labels, max_attempts, backoff_s)
    client = _sync_client(endpoint)
    while True:
        call.attempt_started()
        try:
            response = client.chat.completions.create(**call.request)
        except openai.OpenAIError as exc:
            delay = call.failed(_error_from_openai(exc, endpoint))
        else:
            try:
                return call.answered(response)
            except LLMError as err:
                delay = call.failed(err)
        time.sleep(delay)


async def complete_async(
    *,
    endpoint: LLMEndpoint,
    text: str,
    labels: Sequence[str] | None = None,
    max_attempts: int = 3,
    backoff_s: float = 0.5,
) -> Completion:
    """``complete`` on AsyncOpenAI, for a worker that keeps many calls in flight on one event loop."""
    openai = _openai()
    call = _Call(endpoint, text, labels, max_attempts, backoff_s)
    client = _async_client(endpoint)
    while True:
        call.attempt_started()
        try:
            response = await client.chat.completions.create(**call.request)
        except openai.OpenAIError as exc:
            delay = call.failed(_error_from_openai(exc, endpoint))
        else:
            try:
                return call.answered(response)
            except LLMError as err:
                delay = call.failed(err)
        await asyncio.sleep(delay)


async def request_async(
    *, endpoint: LLMEndpoint, text: str, labels: Sequence[str] | None = None
) -> Completion:
    """One request and no retry: its Completion, or the LLMError it failed with (tokens counted either
    way), for a caller that applies the retry policy (agents.retry) itself, as the drainer does."""
    openai = _openai()
    call = _Call(endpoint, text, labels, max_attempts=1, backoff_s=0.0)
    client = _async_client(endpoint)
    call.attempt_started()
    try:
        response = await client.chat.completions.create(**call.request)
    except openai.OpenAIError as exc:
        raise call.stamp(_error_from_openai(exc, endpoint)) from None
    try:
        return call.answered(response)
    except LLMError as err:
        raise call.stamp(err) from None


def endpoint_from_settings(model: str, base_url: str | None = None) -> LLMEndpoint:
    """An endpoint for ``model`` from Django settings; ``base_url`` (an agent's own) wins over the global."""
    from django.conf import settings  # lazily: this module must stay importable without Django

    return LLMEndpoint(
        model=model,
        base_url=base_url or getattr(settings, "OPENAI_BASE_URL", None) or None,
        api_key=getattr(settings, "OPENAI_API_KEY", "") or "",
        timeout_s=float(getattr(settings, "AICP_LLM_TIMEOUT_S", 30.0)),
    )


# -- one call: prompt, parsing, retry policy (shared by the sync and async loops) -----------------------


class _Call:
    def __init__(
        self,
        endpoint: LLMEndpoint,
        text: str,
        labels: Sequence[str] | None,
        max_attempts: int,
        backoff_s: float,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if backoff_s < 0:
            raise ValueError("backoff_s must be >= 0")
        self.endpoint = endpoint
        self.labels = check_labels(labels)
        self.policy = RetryPolicy(max_attempts=max_attempts, backoff_s=backoff_s)
        self.request = build_request(endpoint.model, text, self.labels)
        self.attempts = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.started = time.monotonic()

    def attempt_started(self) -> None:
        self.attempts += 1

    def answered(self, response: Any) -> Completion:
        """The Completion for a response, or an invalid-answer error (tokens are counted either way)."""
        usage = getattr(response, "usage", None)
        self.prompt_tokens += int(getattr(usage, "prompt_tokens", 0) or 0)
        self.completion_tokens += int(getattr(usage, "completion_tokens", 0) or 0)
        text = parse_answer(response, self.labels)
        return Completion(
            text=text,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            latency_ms=self._elapsed_ms(),
            attempts=self.attempts,
        )

    def failed(self, err: LLMError) -> float:
        """Seconds to wait before the next attempt (agents.retry decides), or raise the error that ends
        this call."""
        delay = next_attempt_in(
            self.policy, retryable=err.retryable, attempt=self.attempts, retry_after=err.retry_after
        )
        if delay is None:
            if not err.retryable:
                raise self.stamp(err)
            if err.code == "invalid_answer":
                # Asking again did not help: the model can't or won't answer within the labels.
                raise self.stamp(PermanentLLMError("invalid_answer", f"{err.message} ({self._tried()})"))
            raise self.stamp(
                RetryableLLMError(err.code, f"{err.message} ({self._tried()})", retry_after=err.retry_after)
            )
        logger.warning(
            "LLM call to %s failed (%s, attempt %d/%d), retrying in %.2f s: %s",
            self.endpoint.model,
            err.code,
            self.attempts,
            self.policy.max_attempts,
            delay,
            err.message,
        )
        return delay

    def stamp(self, err: LLMError) -> LLMError:
        err.attempts = self.attempts
        err.prompt_tokens = self.prompt_tokens
        err.completion_tokens = self.completion_tokens
        return err

    def _tried(self) -> str:
        return f"gave up after {self.attempts} attempt{'s' if self.attempts != 1 else ''}"

    def _elapsed_ms(self) -> int:
        return round((time.monotonic() - self.started) * 1000)


# -- error taxonomy -------------------------------------------------------------------------------------


def _error_from_openai(exc: openai.OpenAIError, endpoint: LLMEndpoint) -> LLMError:
    openai = _openai()
    where = endpoint.base_url or "the OpenAI API"
    if isinstance(exc, openai.APITimeoutError):
        return RetryableLLMError("timeout", f"No response from {where} within {endpoint.timeout_s:g} s")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        detail = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
        return RetryableLLMError("connection", _scrub(f"Could not reach {where}{detail}", endpoint))
    if isinstance(exc, openai.APIStatusError):
        return _error_from_status(exc, endpoint)
    if isinstance(exc, openai.APIResponseValidationError):
        return RetryableLLMError("server_error", f"Malformed response from {where}: {exc.message}")
    return PermanentLLMError("client_error", _scrub(f"{type(exc).__name__}: {exc}", endpoint))


def _error_from_status(exc: openai.APIStatusError, endpoint: LLMEndpoint) -> LLMError:
    status = exc.status_code
    body = exc.body if isinstance(exc.body, dict) else {}
    error_code = exc.code or None
    server_message = body.get("message") if isinstance(body.get("message"), str) else exc.message
    message = _scrub(
        f"HTTP {status}" + (f" ({error_code})" if error_code else "") + f": {server_message}", endpoint
    )
    retry_after = _retry_after_s(exc.response.headers)

    if status == 429:
        if "insufficient_quota" in (error_code, exc.type):
            return PermanentLLMError("quota", message)
        return RetryableLLMError("rate_limited", message, retry_after=retry_after)
    if status >= 500:
        return RetryableLLMError("server_error", message, retry_after=retry_after)
    if status == 408:
        return RetryableLLMError("timeout", message, retry_after=retry_after)
    if status == 409:
        return RetryableLLMError("conflict", message, retry_after=retry_after)
    if status == 401:
        return PermanentLLMError("auth", message)
    if status == 403:
        return PermanentLLMError("permission_denied", message)
    if status == 404:
        return PermanentLLMError("not_found", message)
    return PermanentLLMError("bad_request", message)  # 400, 422 and any other 4xx


def _retry_after_s(headers: Any) -> float | None:
    """Seconds the server asked us to wait (retry-after-ms, then Retry-After seconds or HTTP date)."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / scale
        except ValueError:
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    value = headers.get("retry-after")
    if value:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())
    return None


def _scrub(message: str, endpoint: LLMEndpoint) -> str:
    # Providers echo (parts of) a rejected key in error messages; errors end up in task rows and logs.
    key = endpoint.api_key
    return message.replace(key, "***") if len(key) >= 4 else message


# -- clients: one per (base_url, api_key, timeout) per process; async ones also per event loop ----------

_ClientKey = tuple[str | None, str, float]

_client_lock = threading.Lock()
_sync_clients: dict[_ClientKey, openai.OpenAI] = {}
# An AsyncOpenAI's connection pool belongs to the loop that opened it; entries vanish with their loop.
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[_ClientKey, openai.AsyncOpenAI]] = (
    weakref.WeakKeyDictionary()
)


def _client_key(endpoint: LLMEndpoint) -> _ClientKey:
    if not endpoint.api_key and endpoint.base_url is None:
        raise PermanentLLMError("auth", "No OpenAI API key configured (set OPENAI_API_KEY)")
    return (endpoint.base_url, endpoint.api_key, float(endpoint.timeout_s))


def _sync_client(endpoint: LLMEndpoint) -> openai.OpenAI:
    key = _client_key(endpoint)
    with _client_lock:
        client = _sync_clients.get(key)
        if client is None:
            client = _openai().OpenAI(
                base_url=endpoint.base_url,
                api_key=endpoint.api_key or _NO_KEY_PLACEHOLDER,
                timeout=endpoint.timeout_s,
                max_retries=0,
            )
            _sync_clients[key] = client
        return client


def _async_client(endpoint: LLMEndpoint) -> openai.AsyncOpenAI:
    key = _client_key(endpoint)
    loop = asyncio.get_running_loop()
    with _client_lock:
        clients = _async_clients.setdefault(loop, {})
        client = clients.get(key)
        if client is None:
            client = _openai().AsyncOpenAI(
                base_url=endpoint.base_url,
                api_key=endpoint.api_key or _NO_KEY_PLACEHOLDER,
                timeout=endpoint.timeout_s,
                max_retries=0,
            )
            clients[key] = client
        return client


# -- the Batch API (issue 21 item 4): files + batches, for tasks that can wait up to 24 h ----------------


class BatchAPIUnavailable(Exception):
    """The provider has no Batch API (404 on /files or /batches): run the tasks the normal way."""


@dataclass(frozen=True)
class BatchRequest:
    custom_id: str  # the task's id: how its answer is found in the output file
    text: str
    labels: tuple[str, ...] | None = None


@dataclass(frozen=True)
class BatchState:
    status: (
        str  # validating | in_progress | finalizing | completed | failed | expired | cancelling | cancelled
    )
    output_file_id: str | None
    error_file_id: str | None

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed", "expired", "cancelled")


def batch_submit(*, endpoint: LLMEndpoint, requests: Sequence[BatchRequest]) -> str:
    """Uploads the requests as a JSONL file and creates a batch on /v1/chat/completions (24 h window);
    returns its id. BatchAPIUnavailable on a 404; another failure raises its LLMError."""
    openai = _openai()
    lines = [
        json.dumps(
            {
                "custom_id": request.custom_id,
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": build_request(endpoint.model, request.text, check_labels(request.labels)),
            },
            ensure_ascii=False,
        )
        for request in requests
    ]
    client = _sync_client(endpoint)
    try:
        uploaded = client.files.create(file=("aicp-batch.jsonl", "\n".join(lines).encode()), purpose="batch")
        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    except openai.NotFoundError as exc:
        raise BatchAPIUnavailable(
            _scrub(f"{endpoint.base_url or 'the OpenAI API'}: {exc.message}", endpoint)
        ) from None
    except openai.OpenAIError as exc:
        raise _error_from_openai(exc, endpoint) from None
    return batch.id


def batch_state(*, endpoint: LLMEndpoint, batch_id: str) -> BatchState:
    openai = _openai()
    try:
        batch = _sync_client(endpoint).batches.retrieve(batch_id)
    except openai.NotFoundError as exc:
        raise BatchAPIUnavailable(_scrub(exc.message, endpoint)) from None
    except openai.OpenAIError as exc:
        raise _error_from_openai(exc, endpoint) from None
    return BatchState(
        status=batch.status, output_file_id=batch.output_file_id, error_file_id=batch.error_file_id
    )


def batch_results(
    *, endpoint: LLMEndpoint, file_id: str, requests: Sequence[BatchRequest]
) -> dict[str, Completion | LLMError]:
    """Each request's answer in the batch's output file, parsed as ``complete`` parses one (a label must be
    one of the labels); a request missing from the file is missing from the result."""
    openai = _openai()
    try:
        text = _sync_client(endpoint).files.content(file_id).text
    except openai.OpenAIError as exc:
        raise _error_from_openai(exc, endpoint) from None
    by_id = {request.custom_id: request for request in requests}
    results: dict[str, Completion | LLMError] = {}
    for raw in text.splitlines():
        if not raw.strip():
            continue
        line = json.loads(raw)
        request = by_id.get(str(line.get("custom_id")))
        if request is None:
            continue
        call = _Call(endpoint, request.text, request.labels, max_attempts=1, backoff_s=0.0)
        call.attempt_started()
        response = line.get("response") or {}
        body = response.get("body") or {}
        if line.get("error") or response.get("status_code") != 200:
            detail = line.get("error") or (body.get("error") if isinstance(body, dict) else None) or response
            results[request.custom_id] = call.stamp(
                PermanentLLMError("batch_error", _scrub(f"Batch API: {json.dumps(detail)[:500]}", endpoint))
            )
            continue
        try:
            completion = openai.types.chat.ChatCompletion.model_validate(body)
            results[request.custom_id] = call.answered(completion)
        except LLMError as err:
            results[request.custom_id] = call.stamp(err)
        except ValueError as exc:  # pydantic's ValidationError is one
            results[request.custom_id] = call.stamp(
                PermanentLLMError("invalid_answer", f"Malformed batch answer: {str(exc)[:300]}")
            )
    return results
