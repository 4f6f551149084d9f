"""HTTP/1.1 plumbing: read one request from a keep-alive connection, write one JSON response."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from typing import Any

_MAX_BODY_BYTES = 8 * 1024 * 1024
_MAX_HEADERS = 100

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


@dataclass
class Response:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    raw: bytes | None = None  # sent as is instead of ``body`` (a file's content, e.g. Batch API JSONL)


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes] | None:
    """One request from a keep-alive connection, or None when the client closed it cleanly."""
    line = await reader.readline()
    if not line:
        return None
    parts = line.decode("latin-1").strip().split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(400, "Malformed request line")
    method, path, version = parts
    headers: dict[str, str] = {}
    while True:
        raw = await reader.readline()
        if raw in (b"\r\n", b"\n"):
            break
        if not raw:
            raise asyncio.IncompleteReadError(b"", None)
        if len(headers) >= _MAX_HEADERS:
            raise BadRequest(400, "Too many headers")
        name, sep, value = raw.decode("latin-1").partition(":")
        if not sep:
            raise BadRequest(400, "Malformed header line")
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
                raise BadRequest(400, "Malformed chunk size") from exc
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                break
            if len(body) + size > _MAX_BODY_BYTES:
                raise BadRequest(413, "Request body too large")
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        return method, path, headers, bytes(body)

    try:
        length = int(headers.get("content-length", "0"))
    except ValueError as exc:
        raise BadRequest(400, "Malformed Content-Length") from exc
    if length < 0 or length > _MAX_BODY_BYTES:
        raise BadRequest(413, "Request body too large")
    body = await reader.readexactly(length) if length else b""
    return method, path, headers, body


async def write_response(writer: asyncio.StreamWriter, response: Response, *, keep_alive: bool) -> None:
    raw = response.raw is not None
    payload = response.raw if response.raw is not None else json.dumps(response.body).encode("utf-8")
    headers = {
        "Content-Type": "application/octet-stream" if raw else "application/json",
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
