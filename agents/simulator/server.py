"""The simulator itself: an OpenAI-compatible HTTP server on its own asyncio loop in a daemon thread.

``LLMSimulator._chat`` and ``_answer`` apply the order of precedence the package docstring lists: the
script, random faults, forced answers, then the teachers (``teachers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import threading
from collections import deque
from pathlib import Path
from typing import Any

from agents.simulator.batches import BatchStore
from agents.simulator.http11 import BadRequest, Response, read_request, write_response
from agents.simulator.protocol import (
    ADVERTISED_MODELS,
    SIMULATOR_NAME,
    completion_body,
    error_response,
    fault_response,
    label_enum,
    message_text,
    model_card,
    validate_chat,
)
from agents.simulator.scripted import Answer, Delay, Drop, Fault, Scripted
from agents.simulator.teachers import (
    ZeroShotTeacher,
    dataset_label,
    free_form_answer,
    hashed_label,
    load_dataset,
    normalise_text,
)

# The simulator's one logger name, as before it became a package.
logger = logging.getLogger(__package__)

_REQUEST_LOG_SIZE = 1000
_RANDOM_FAULT_STATUSES = (429, 500, 503)
# Small enough that tests with fault_rate stay fast, still a real Retry-After for clients to honour.
_RANDOM_FAULT_RETRY_AFTER_S = 0.01

# What a chat request answers when the connection is to be closed with no response at all.
_DROP = object()


class LLMSimulator:
    """An OpenAI-compatible HTTP server on its own asyncio loop in a daemon thread."""

    def __init__(
        self,
        *,
        dataset: str | Path | None = None,
        latency_ms: int = 0,
        fault_rate: float = 0.0,
        noise: float = 0.0,
        zero_shot: bool = True,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        batch_api: bool = True,
        batch_delay_s: float = 0.0,
    ) -> None:
        if latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError("fault_rate must be within [0, 1]")
        if not 0.0 <= noise <= 1.0:
            raise ValueError("noise must be within [0, 1]")
        self.dataset_path = Path(dataset) if dataset is not None else None
        self.latency_ms = latency_ms
        self.fault_rate = fault_rate
        self.noise = noise
        self.zero_shot = zero_shot
        self.seed = seed
        self.host = host
        self.port = port

        self._dataset = load_dataset(dataset) if dataset is not None else {}
        self._forced: dict[str, str] = {}
        self._script: deque[Scripted] = deque()
        self._request_log: deque[Any] = deque(maxlen=_REQUEST_LOG_SIZE)
        self._request_count = 0
        self._fault_rng = random.Random(seed)
        self._lock = threading.Lock()

        self._zero_shot_teacher = ZeroShotTeacher()
        # The Batch API (files + batches); off: those paths answer 404 as on a provider without them.
        self.batch_api = batch_api
        self.batch_delay_s = batch_delay_s  # a batch completes when retrieved this long after creation
        self.batches = BatchStore()

        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._start_error: BaseException | None = None

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> LLMSimulator:
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        ready = threading.Event()
        self._start_error = None
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="llm-simulator", daemon=True)
        self._thread.start()
        if not ready.wait(timeout=10):
            raise RuntimeError("simulator did not start within 10 s")
        if self._start_error is not None:
            self._thread.join()
            self._thread = None
            raise self._start_error
        logger.info("LLM simulator serving at %s", self.base_url)
        return self

    def stop(self) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop may already be closed
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._thread = None
        self._loop = None

    def __enter__(self) -> LLMSimulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        if host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/v1"

    # -- test controls -------------------------------------------------------------------------------

    def script(self, *responses: Scripted) -> None:
        """The next chat requests get these responses, in order, before normal behaviour resumes."""
        with self._lock:
            self._script.extend(responses)

    def set_answer(self, text: str, answer: str) -> None:
        """Force the answer (a label, or free-form text) for a task text (whitespace-normalised)."""
        with self._lock:
            self._forced[normalise_text(text)] = answer

    @property
    def request_count(self) -> int:
        """Chat-completion requests received so far (including faulted and dropped ones)."""
        with self._lock:
            return self._request_count

    @property
    def requests(self) -> list[Any]:
        """The most recent chat-completion request bodies (parsed JSON, or the raw text if invalid)."""
        with self._lock:
            return list(self._request_log)

    # -- server --------------------------------------------------------------------------------------

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            server = loop.run_until_complete(
                # A deep backlog so hundreds of simultaneous connects don't hit SYN retransmits.
                asyncio.start_server(self._on_connection, self.host, self.port, backlog=2048)
            )
        except BaseException as exc:  # reported to start()'s caller
            self._start_error = exc
            loop.close()
            ready.set()
            return
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            for task in list(self._connections):
                task.cancel()
            loop.run_until_complete(asyncio.gather(*self._connections, return_exceptions=True))
            loop.run_until_complete(server.wait_closed())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while True:
                try:
                    request = await read_request(reader)
                except BadRequest as exc:
                    response = error_response(exc.status, str(exc), "invalid_request_error", None)
                    await write_response(writer, response, keep_alive=False)
                    return
                if request is None:
                    return
                method, path, headers, body = request
                response = await self._dispatch(method, path, body, headers)
                if response is _DROP:
                    return
                assert isinstance(response, Response)
                keep_alive = headers.get("connection", "").lower() != "close"
                await write_response(writer, response, keep_alive=keep_alive)
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away; nothing to answer
        except asyncio.CancelledError:
            # Only stop() cancels; finishing normally avoids Python 3.11's streams callback logging the
            # cancellation as an error.
            pass
        finally:
            self._connections.discard(task)
            writer.close()

    async def _dispatch(
        self, method: str, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> Response | object:
        path = path.split("?", 1)[0].rstrip("/") or "/"
        if path == "/v1/chat/completions":
            if method != "POST":
                return error_response(405, f"Method {method} not allowed", "invalid_request_error", None)
            return await self._chat(body)
        if self.batch_api and path.startswith(("/v1/files", "/v1/batches")):
            answered = await self.batches.dispatch(
                method, path, headers or {}, body, delay_s=self.batch_delay_s, answer=self._answer
            )
            if answered is not None:
                return answered
        if method != "GET":
            return error_response(404, f"Unknown path {path}", "invalid_request_error", "unknown_url")
        if path == "/health":
            return Response(200, {"status": "ok", "simulator": True, "name": SIMULATOR_NAME}, {})
        if path == "/v1/models":
            return Response(200, {"object": "list", "data": [model_card(m) for m in ADVERTISED_MODELS]}, {})
        if path.startswith("/v1/models/"):
            return Response(200, model_card(path.removeprefix("/v1/models/")), {})
        return error_response(404, f"Unknown path {path}", "invalid_request_error", "unknown_url")

    # -- chat completions ----------------------------------------------------------------------------

    async def _chat(self, raw: bytes) -> Response | object:
        try:
            payload: Any = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            payload = None
        with self._lock:
            self._request_count += 1
            self._request_log.append(payload if payload is not None else raw.decode("utf-8", "replace"))
            scripted = self._script.popleft() if self._script else None
            random_fault = (
                scripted is None and self.fault_rate > 0 and self._fault_rng.random() < self.fault_rate
            )
            fault_status = self._fault_rng.choice(_RANDOM_FAULT_STATUSES) if random_fault else 0

        if isinstance(scripted, Drop):
            return _DROP
        if isinstance(scripted, Fault):
            return fault_response(scripted)
        if random_fault:
            return fault_response(
                Fault(
                    fault_status,
                    message=f"Simulated {fault_status} (fault_rate={self.fault_rate})",
                    retry_after=_RANDOM_FAULT_RETRY_AFTER_S if fault_status == 429 else None,
                )
            )

        problem = validate_chat(payload)
        if problem:
            return error_response(400, problem, "invalid_request_error", None)

        delay = self.latency_ms / 1000 + (scripted.seconds if isinstance(scripted, Delay) else 0.0)
        if delay > 0:
            await asyncio.sleep(delay)

        if isinstance(scripted, Answer):
            content = scripted.content
        else:
            content = await self._answer(payload)
        return Response(200, completion_body(payload, content), {})

    async def _answer(self, payload: dict[str, Any]) -> str:
        messages = payload["messages"]
        user_text = next(
            (message_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), ""
        )
        key = normalise_text(user_text)
        with self._lock:
            forced = self._forced.get(key)
        labeling = label_enum(payload)
        if labeling is None:
            return forced if forced is not None else free_form_answer(user_text)
        prop, enum = labeling
        label = forced if forced is not None else await self._pick_label(user_text, key, enum)
        return json.dumps({prop: label})

    async def _pick_label(self, text: str, key: str, enum: list[str]) -> str:
        known = dataset_label(self._dataset, key, enum, noise=self.noise, seed=self.seed)
        if known is not None:
            return known
        if self.zero_shot:
            loop = asyncio.get_running_loop()
            # Encoding is CPU-bound (torch); keep it off the event loop.
            label = await loop.run_in_executor(None, self._zero_shot_teacher.label, text, enum)
            if label is not None:
                return label
        return hashed_label(key, enum, seed=self.seed)

    def warm_up(self) -> None:
        """Load the zero-shot encoder now rather than on the first unknown text (loading takes seconds)."""
        if self.zero_shot:
            self._zero_shot_teacher.warm_up()
