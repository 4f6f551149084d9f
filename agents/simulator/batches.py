"""The OpenAI Batch API, simulated: ``/v1/files`` (multipart upload, metadata, content) and
``/v1/batches`` (create, retrieve, cancel).

A batch stays ``in_progress`` for the simulator's ``batch_delay_s`` after it was created; the first
retrieval after that answers every line of its input file (as the chat endpoint would, without scripted
faults) and writes the output file (``{"custom_id", "response": {"status_code", "body"}, "error"}`` per
line), then reports ``completed``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agents.simulator.http11 import Response
from agents.simulator.protocol import completion_body, error_response, validate_chat

BATCH_WINDOW_S = 24 * 3600
Answerer = Callable[[dict[str, Any]], Awaitable[str]]


@dataclass
class _File:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int = field(default_factory=lambda: int(time.time()))

    def card(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        }


def _multipart(body: bytes, content_type: str) -> dict[str, tuple[str, bytes]]:
    """The parts of a multipart/form-data body: name → (filename, content)."""
    boundary = ""
    for piece in content_type.split(";"):
        key, _, value = piece.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip('"')
    if not boundary:
        raise ValueError("multipart body without a boundary")
    parts: dict[str, tuple[str, bytes]] = {}
    for chunk in body.split(b"--" + boundary.encode()):
        chunk = chunk.removeprefix(b"\r\n")
        if not chunk or chunk.startswith(b"--"):
            continue
        head, _, content = chunk.partition(b"\r\n\r\n")
        content = content.removesuffix(b"\r\n")
        name = filename = ""
        for line in head.decode("utf-8", "replace").split("\r\n"):
            if line.lower().startswith("content-disposition"):
                for item in line.split(";")[1:]:
                    key, _, value = item.strip().partition("=")
                    if key == "name":
                        name = value.strip('"')
                    elif key == "filename":
                        filename = value.strip('"')
        if name:
            parts[name] = (filename, content)
    return parts


class BatchStore:
    """Files and batches of one simulator (in memory)."""

    def __init__(self) -> None:
        self.files: dict[str, _File] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.request_count = 0  # chat requests answered through batches

    async def dispatch(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        *,
        delay_s: float,
        answer: Answerer,
    ) -> Response | None:
        """The answer to a Batch API request, or None when the path is not one of them."""
        if path == "/v1/files" and method == "POST":
            return self._upload(body, headers.get("content-type", ""))
        if path.startswith("/v1/files/"):
            rest = path.removeprefix("/v1/files/")
            file_id, _, tail = rest.partition("/")
            found = self.files.get(file_id)
            if found is None:
                return error_response(404, f"No such file: {file_id}", "invalid_request_error", None)
            if tail == "content" and method == "GET":
                return Response(200, {}, {}, raw=found.content)
            if not tail and method == "GET":
                return Response(200, found.card(), {})
            return None
        if path == "/v1/batches" and method == "POST":
            return self._create(body)
        if path.startswith("/v1/batches/"):
            batch_id, _, tail = path.removeprefix("/v1/batches/").partition("/")
            batch = self.batches.get(batch_id)
            if batch is None:
                return error_response(404, f"No such batch: {batch_id}", "invalid_request_error", None)
            if not tail and method == "GET":
                await self._advance(batch, delay_s=delay_s, answer=answer)
                return Response(200, _public(batch), {})
            if tail == "cancel" and method == "POST":
                if batch["status"] in ("validating", "in_progress"):
                    batch.update(status="cancelled", cancelled_at=int(time.time()))
                return Response(200, _public(batch), {})
        return None

    def _upload(self, body: bytes, content_type: str) -> Response:
        try:
            parts = _multipart(body, content_type)
        except ValueError as exc:
            return error_response(400, str(exc), "invalid_request_error", None)
        if "file" not in parts:
            return error_response(400, "'file' is required", "invalid_request_error", None)
        filename, content = parts["file"]
        purpose = parts.get("purpose", ("", b""))[1].decode("utf-8", "replace")
        if purpose != "batch":
            return error_response(
                400, "This simulator only takes purpose=batch", "invalid_request_error", None
            )
        file = _File(
            id=f"file-sim-{uuid.uuid4().hex[:24]}",
            filename=filename or "upload.jsonl",
            purpose=purpose,
            content=content,
        )
        self.files[file.id] = file
        return Response(200, file.card(), {})

    def _create(self, body: bytes) -> Response:
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return error_response(400, "Request body must be JSON", "invalid_request_error", None)
        input_file_id = payload.get("input_file_id") if isinstance(payload, dict) else None
        if input_file_id not in self.files:
            return error_response(400, f"No such input file: {input_file_id}", "invalid_request_error", None)
        if payload.get("endpoint") != "/v1/chat/completions":
            return error_response(
                400, "Only /v1/chat/completions is supported", "invalid_request_error", None
            )
        if payload.get("completion_window") != "24h":
            return error_response(400, "completion_window must be 24h", "invalid_request_error", None)
        lines = [line for line in self.files[input_file_id].content.splitlines() if line.strip()]
        now = int(time.time())
        batch = {
            "id": f"batch_sim_{uuid.uuid4().hex[:24]}",
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "errors": None,
            "input_file_id": input_file_id,
            "completion_window": "24h",
            "status": "in_progress",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": now,
            "in_progress_at": now,
            "expires_at": now + BATCH_WINDOW_S,
            "completed_at": None,
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
            "metadata": payload.get("metadata"),
            "_created": time.monotonic(),
        }
        self.batches[batch["id"]] = batch
        return Response(200, _public(batch), {})

    async def _advance(self, batch: dict[str, Any], *, delay_s: float, answer: Answerer) -> None:
        if batch["status"] != "in_progress" or time.monotonic() - batch["_created"] < delay_s:
            return
        output, completed, failed = [], 0, 0
        for raw in self.files[batch["input_file_id"]].content.splitlines():
            if not raw.strip():
                continue
            line = json.loads(raw)
            request = line.get("body")
            problem = validate_chat(request)
            if problem:
                failed += 1
                result = {
                    "status_code": 400,
                    "body": {"error": {"message": problem, "type": "invalid_request_error"}},
                }
            else:
                completed += 1
                self.request_count += 1
                result = {
                    "status_code": 200,
                    "request_id": uuid.uuid4().hex,
                    "body": completion_body(request, await answer(request)),
                }
            output.append(
                {
                    "id": f"batch_req_{uuid.uuid4().hex[:24]}",
                    "custom_id": line.get("custom_id"),
                    "response": result,
                    "error": None,
                }
            )
        file = _File(
            id=f"file-sim-{uuid.uuid4().hex[:24]}",
            filename=f"{batch['id']}_output.jsonl",
            purpose="batch_output",
            content=b"".join(json.dumps(item).encode() + b"\n" for item in output),
        )
        self.files[file.id] = file
        batch.update(
            status="completed",
            output_file_id=file.id,
            completed_at=int(time.time()),
            request_counts={"total": completed + failed, "completed": completed, "failed": failed},
        )


def _public(batch: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in batch.items() if not key.startswith("_")}
