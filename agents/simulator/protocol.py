"""The OpenAI chat-completions format: what a request asks for, and the JSON bodies sent back."""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

from agents.simulator.http11 import Response
from agents.simulator.scripted import Fault

SIMULATOR_NAME = "aicp-simulator"
ADVERTISED_MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-4.1-nano")

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


# -- requests -------------------------------------------------------------------------------------------


def validate_chat(payload: Any) -> str | None:
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


def message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return " ".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def label_enum(body: dict[str, Any]) -> tuple[str, list[str]] | None:
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


# -- responses ------------------------------------------------------------------------------------------


def error_response(
    status: int, message: str, error_type: str, code: str | None, headers: dict[str, str] | None = None
) -> Response:
    body = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    return Response(status, body, headers or {})


def fault_response(fault: Fault) -> Response:
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
    return error_response(fault.status, message, error_type, fault.code, headers)


def completion_body(payload: dict[str, Any], content: str) -> dict[str, Any]:
    prompt_tokens = sum(_word_count(message_text(m.get("content"))) for m in payload["messages"])
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


def model_card(model_id: str) -> dict[str, Any]:
    return {
        "id": model_id,
        "object": "model",
        "created": 0,
        "owned_by": SIMULATOR_NAME,
        "description": "Served by the AICP LLM simulator, not a real model.",
    }


def _word_count(text: str) -> int:
    return len(text.split())
