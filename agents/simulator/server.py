"""A local, OpenAI-compatible chat-completions server for tests, demos and benchmarks.

It is honest about what it is (``system_fingerprint: "aicp-simulator"``, an ``X-AICP-Simulator: 1``
header, and a ``/v1/models`` listing that says so). Production code never imports it.

Answers, in order of precedence:

1. a scripted response (``script(...)``) — faults, raw answers, dropped connections, delays;
2. a random fault, with probability ``fault_rate``;
3. a forced answer for an exact text (``set_answer``);
4. for labeling requests (a ``json_schema`` response format with an ``enum``): the dataset label for a
   known text (optionally flipped with probability ``noise``), else the label nearest in embedding space
   (``zero_shot``, when ``duke.encoder`` is importable), else a label picked by a stable hash of the text;
5. for free-form requests: a short deterministic text that says it comes from the simulator.

Pure stdlib plus the optional lazy encoder import. Run it with
``python -m agents.simulator --port 8100`` or ``python manage.py llm_simulator --port 8100``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import math
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SIMULATOR_NAME = "aicp-simulator"
ADVERTISED_MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-4.1-nano")

_MAX_BODY_BYTES = 8 * 1024 * 1024
_MAX_HEADERS = 100
_REQUEST_LOG_SIZE = 1000
_RANDOM_FAULT_STATUSES = (429, 500, 503)
# Small enough that tests with fault_rate stay fast, still a real Retry-After for clients to honour.
_RANDOM_FAULT_RETRY_AFTER_S = 0.01

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    408: "timeout",
    409: "conflict",
    422: "invalid_request_error",
    429: "requests",
}


@dataclass
class Fault:
    """Answer with an OpenAI-style error. ``retry_after`` None sends no Retry-After header."""

    status: int
    code: str | None = None
    message: str = ""
    retry_after: float | None = None


@dataclass
class Answer:
    """Answer with this raw assistant content, e.g. ``'{"label": "nope"}'``."""

    content: str


@dataclass
class Drop:
    """Close the connection without sending a response."""


@dataclass
class Delay:
    """Sleep this long before giving the normal answer (for timeout tests)."""

    seconds: float


Scripted = Fault | Answer | Drop | Delay


@dataclass
class _Response:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


_DROP = object()


def normalise_text(text: str) -> str:
    """Whitespace-insensitive key for matching task texts."""
    return " ".join(text.split())


def _stable_unit(*parts: object) -> float:
    """A uniform number in [0, 1) derived from ``parts`` — stable across processes, unlike hash()."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _stable_index(n: int, *parts: object) -> int:
    return min(int(_stable_unit(*parts) * n), n - 1)


def _word_count(text: str) -> int:
    return len(text.split())


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return " ".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def _label_enum(body: dict[str, Any]) -> tuple[str, list[str]] | None:
    """The (property name, allowed labels) of a structured labeling request, or None for free-form."""
    response_format = body.get("response_format")
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return None
    schema = (response_format.get("json_schema") or {}).get("schema") or {}
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict):
        return None
    for name, prop in properties.items():
        enum = prop.get("enum") if isinstance(prop, dict) else None
        if isinstance(enum, list) and enum and all(isinstance(v, str) for v in enum):
            return name, enum
    return None


def load_dataset(path: str | Path) -> dict[str, str]:
    """Read a JSONL file of ``{"text", "label"}`` rows into a normalised-text → label map."""
    answers: dict[str, str] = {}
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                text, label = row["text"], row["label"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{line_no}: expected a JSON object with 'text' and 'label'") from exc
            if not isinstance(text, str) or not isinstance(label, str):
                raise ValueError(f"{path}:{line_no}: 'text' and 'label' must be strings")
            answers[normalise_text(text)] = label
    return answers


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

        # The encoder is optional and slow to load; resolved once, on the first unknown labeling text.
        self._encoder_lock = threading.Lock()
        self._encoder: Callable[[Sequence[str]], Any] | None = None
        self._encoder_state = "unresolved"  # → "ready" | "unavailable"
        self._label_vectors: dict[str, Any] = {}

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
                    request = await _read_request(reader)
                except _BadRequest as exc:
                    response = _error_response(exc.status, str(exc), "invalid_request_error", None)
                    await _write_response(writer, response, keep_alive=False)
                    return
                if request is None:
                    return
                method, path, headers, body = request
                response = await self._dispatch(method, path, body)
                if response is _DROP:
                    return
                assert isinstance(response, _Response)
                keep_alive = headers.get("connection", "").lower() != "close"
                await _write_response(writer, response, keep_alive=keep_alive)
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

    async def _dispatch(self, method: str, path: str, body: bytes) -> _Response | object:
        path = path.split("?", 1)[0].rstrip("/") or "/"
        if path == "/v1/chat/completions":
            if method != "POST":
                return _error_response(405, f"Method {method} not allowed", "invalid_request_error", None)
            return await self._chat(body)
        if method != "GET":
            return _error_response(404, f"Unknown path {path}", "invalid_request_error", "unknown_url")
        if path == "/health":
            return _Response(200, {"status": "ok", "simulator": True, "name": SIMULATOR_NAME}, {})
        if path == "/v1/models":
            return _Response(200, {"object": "list", "data": [_model_card(m) for m in ADVERTISED_MODELS]}, {})
        if path.startswith("/v1/models/"):
            return _Response(200, _model_card(path.removeprefix("/v1/models/")), {})
        return _error_response(404, f"Unknown path {path}", "invalid_request_error", "unknown_url")

    # -- chat completions ----------------------------------------------------------------------------

    async def _chat(self, raw: bytes) -> _Response | object:
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
            return _fault_response(scripted)
        if random_fault:
            return _fault_response(
                Fault(
                    fault_status,
                    message=f"Simulated {fault_status} (fault_rate={self.fault_rate})",
                    retry_after=_RANDOM_FAULT_RETRY_AFTER_S if fault_status == 429 else None,
                )
            )

        problem = _validate_chat(payload)
        if problem:
            return _error_response(400, problem, "invalid_request_error", None)

        delay = self.latency_ms / 1000 + (scripted.seconds if isinstance(scripted, Delay) else 0.0)
        if delay > 0:
            await asyncio.sleep(delay)

        if isinstance(scripted, Answer):
            content = scripted.content
        else:
            content = await self._answer(payload)
        return _Response(200, _completion_body(payload, content), {})

    async def _answer(self, payload: dict[str, Any]) -> str:
        messages = payload["messages"]
        user_text = next(
            (_message_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), ""
        )
        key = normalise_text(user_text)
        with self._lock:
            forced = self._forced.get(key)
        labeling = _label_enum(payload)
        if labeling is None:
            return forced if forced is not None else _free_form_answer(user_text)
        prop, enum = labeling
        label = forced if forced is not None else await self._pick_label(user_text, key, enum)
        return json.dumps({prop: label})

    async def _pick_label(self, text: str, key: str, enum: list[str]) -> str:
        known = self._dataset.get(key)
        if known is not None and known in enum:
            if self.noise > 0 and len(enum) > 1 and _stable_unit(self.seed, "noise", key) < self.noise:
                others = [label for label in enum if label != known]
                return others[_stable_index(len(others), self.seed, "noise-pick", key)]
            return known
        if self.zero_shot:
            loop = asyncio.get_running_loop()
            # Encoding is CPU-bound (torch); keep it off the event loop.
            label = await loop.run_in_executor(None, self._zero_shot_label, text, enum)
            if label is not None:
                return label
        return enum[_stable_index(len(enum), self.seed, "pick", key)]

    def _zero_shot_label(self, text: str, enum: list[str]) -> str | None:
        with self._encoder_lock:
            encode = self._resolve_encoder()
            if encode is None:
                return None
            try:
                missing = [label for label in enum if label not in self._label_vectors]
                if missing:
                    vectors = encode([_label_sentence(label) for label in missing])
                    self._label_vectors.update(zip(missing, vectors, strict=True))
                text_vector = encode([text])[0]
                scores = [float(self._label_vectors[label] @ text_vector) for label in enum]
            except Exception:
                logger.warning("Zero-shot encoder failed; falling back to hashed labels", exc_info=True)
                self._encoder, self._encoder_state = None, "unavailable"
                return None
        return enum[max(range(len(enum)), key=scores.__getitem__)]

    def warm_up(self) -> None:
        """Load the zero-shot encoder now rather than on the first unknown text (loading takes seconds)."""
        if self.zero_shot:
            self._zero_shot_label("warm up", ["warm up"])

    def _resolve_encoder(self) -> Callable[[Sequence[str]], Any] | None:
        if self._encoder_state == "unresolved":
            self._encoder_state = "unavailable"
            try:
                from duke.encoder import encode_texts, encoder_available

                available = encoder_available() if callable(encoder_available) else bool(encoder_available)
            except Exception:
                logger.info("duke.encoder not importable; the simulator labels unknown texts by hash")
                available = False
            if available:
                self._encoder, self._encoder_state = encode_texts, "ready"
        return self._encoder


# -- HTTP/1.1 plumbing ----------------------------------------------------------------------------------


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes] | None:
    """One request from a keep-alive connection, or None when the client closed it cleanly."""
    line = await reader.readline()
    if not line:
        return None
    parts = line.decode("latin-1").strip().split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(400, "Malformed request line")
    method, path, version = parts
    headers: dict[str, str] = {}
    while True:
        raw = await reader.readline()
        if raw in (b"\r\n", b"\n"):
            break
        if not raw:
            raise asyncio.IncompleteReadError(b"", None)
        if len(headers) >= _MAX_HEADERS:
            raise _BadRequest(400, "Too many headers")
        name, sep, value = raw.decode("latin-1").partition(":")
        if not sep:
            raise _BadRequest(400, "Malformed header line")
        headers[name.strip().lower()] = value.strip()
    if version == "HTTP/1.0" and headers.get("connection", "").lower() != "keep-alive":
        headers["connection"] = "close"

    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            size_line = await reader.readline()
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError as exc:
                raise _BadRequest(400, "Malformed chunk size") from exc
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                break
            if len(body) + size > _MAX_BODY_BYTES:
                raise _BadRequest(413, "Request body too large")
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        return method, path, headers, bytes(body)

    try:
        length = int(headers.get("content-length", "0"))
    except ValueError as exc:
        raise _BadRequest(400, "Malformed Content-Length") from exc
    if length < 0 or length > _MAX_BODY_BYTES:
        raise _BadRequest(413, "Request body too large")
    body = await reader.readexactly(length) if length else b""
    return method, path, headers, body


async def _write_response(writer: asyncio.StreamWriter, response: _Response, *, keep_alive: bool) -> None:
    payload = json.dumps(response.body).encode("utf-8")
    headers = {
        "Content-Type": "application/json",
        "Content-Length": str(len(payload)),
        "Connection": "keep-alive" if keep_alive else "close",
        "X-AICP-Simulator": "1",
        "X-Request-Id": f"req_sim_{uuid.uuid4().hex[:24]}",
        **response.headers,
    }
    head = f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    writer.write(head.encode("latin-1") + payload)
    await writer.drain()


# -- response bodies ------------------------------------------------------------------------------------


def _error_response(
    status: int, message: str, error_type: str, code: str | None, headers: dict[str, str] | None = None
) -> _Response:
    body = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    return _Response(status, body, headers or {})


def _fault_response(fault: Fault) -> _Response:
    headers: dict[str, str] = {}
    if fault.retry_after is not None:
        # Retry-After only takes whole seconds; OpenAI's retry-after-ms carries the precise value.
        headers["Retry-After"] = str(math.ceil(fault.retry_after))
        headers["retry-after-ms"] = str(round(fault.retry_after * 1000))
    if fault.code == "insufficient_quota":
        error_type = "insufficient_quota"
    else:
        error_type = _ERROR_TYPES.get(fault.status, "server_error" if fault.status >= 500 else "api_error")
    message = fault.message or f"Simulated error {fault.status}" + (f" ({fault.code})" if fault.code else "")
    return _error_response(fault.status, message, error_type, fault.code, headers)


def _validate_chat(payload: Any) -> str | None:
    if not isinstance(payload, dict):
        return "Request body must be a JSON object"
    if not isinstance(payload.get("model"), str) or not payload["model"]:
        return "'model' is required"
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        return "'messages' must be a non-empty list of objects"
    if payload.get("stream"):
        return "The AICP simulator does not support streaming"
    return None


def _completion_body(payload: dict[str, Any], content: str) -> dict[str, Any]:
    prompt_tokens = sum(_word_count(_message_text(m.get("content"))) for m in payload["messages"])
    completion_tokens = max(1, _word_count(content))
    return {
        "id": f"chatcmpl-sim-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": payload["model"],
        "system_fingerprint": SIMULATOR_NAME,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _label_sentence(label: str) -> str:
    # A sentence embeds closer to on-topic texts than a bare word ("sports" alone loses to "cooking" for
    # "the striker scored in the cup final"); "billing_issue" reads better as words.
    words = label.replace("_", " ").replace("-", " ")
    return f"This text is about {words}."


def _free_form_answer(text: str) -> str:
    words = text.split()
    gist = " ".join(words[:12]) + (" …" if len(words) > 12 else "")
    return f"[{SIMULATOR_NAME}] Simulated answer, not from a real model. Task: {gist}"


def _model_card(model_id: str) -> dict[str, Any]:
    return {
        "id": model_id,
        "object": "model",
        "created": 0,
        "owned_by": SIMULATOR_NAME,
        "description": "Served by the AICP LLM simulator, not a real model.",
    }


# -- command line ---------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``python -m agents.simulator`` and ``manage.py llm_simulator``."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100, help="0 picks a free port")
    parser.add_argument(
        "--dataset", default=None, help="JSONL file of {text, label} rows (a perfect teacher)"
    )
    parser.add_argument("--latency-ms", type=int, default=0, help="delay before each answer")
    parser.add_argument(
        "--fault-rate", type=float, default=0.0, help="fraction of requests failing 429/500/503"
    )
    parser.add_argument("--noise", type=float, default=0.0, help="fraction of dataset labels flipped")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-zero-shot",
        dest="zero_shot",
        action="store_false",
        help="label unknown texts by hash instead of the sentence encoder",
    )


def simulator_from_options(options: dict[str, Any]) -> LLMSimulator:
    return LLMSimulator(
        dataset=options["dataset"],
        latency_ms=options["latency_ms"],
        fault_rate=options["fault_rate"],
        noise=options["noise"],
        zero_shot=options["zero_shot"],
        seed=options["seed"],
        host=options["host"],
        port=options["port"],
    )


def serve_until_interrupted(simulator: LLMSimulator, announce: Callable[[str], None] = print) -> None:
    simulator.start()
    # Serve right away; the encoder loads meanwhile so the first unknown text doesn't wait seconds.
    threading.Thread(target=simulator.warm_up, name="llm-simulator-warm-up", daemon=True).start()
    announce(f"AICP LLM simulator (not a real model) serving at {simulator.base_url} — Ctrl-C to stop")
    try:
        while simulator._thread is not None and simulator._thread.is_alive():
            simulator._thread.join(timeout=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        simulator.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m agents.simulator", description=__doc__.splitlines()[0])
    add_arguments(parser)
    options = vars(parser.parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        simulator = simulator_from_options(options)
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    serve_until_interrupted(simulator, announce=lambda line: print(line, flush=True))


if __name__ == "__main__":
    main()
