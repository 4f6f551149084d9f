"""The prompts an LLM call sends and how its answers are read: the request for a free-form or labeling
task (structured output restricted to the labels), the answer's parsing, and token estimates.

No openai here (agents.llm sends the request); importable without Django.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from agents.llm_errors import RetryableLLMError

_ANSWER_PREVIEW_CHARS = 200

_FREE_FORM_INSTRUCTIONS = (
    "You are a careful assistant completing a task for a customer. "
    "The user message is the task. Answer it directly, completely and concisely."
)
_LABELING_INSTRUCTIONS = (
    "You are a precise labeling assistant. The user message is a text to classify. "
    "Choose exactly one label from this JSON list of allowed labels: {labels}. "
    'Reply only with a JSON object of the form {{"label": "<one of the allowed labels>"}}.'
)


def request_messages(*, text: str, labels: Sequence[str] | None = None) -> list[dict[str, str]]:
    """The chat messages ``complete`` sends for this task (e.g. to export fine-tuning data that matches)."""
    return build_request("export", text, check_labels(labels))["messages"]


def estimate_label_tokens(*, text: str, labels: Sequence[str]) -> tuple[int, int]:
    """Rough (prompt, completion) tokens of the labeling call ``complete`` would make, for cost estimates.

    About 4 characters per token (the usual rule for English) plus the chat framing of each message;
    the answer is the JSON object the schema allows, sized for the longest label.
    """
    checked = check_labels(labels)
    request = build_request("estimate", text, checked)
    prompt_chars = sum(len(message["content"]) for message in request["messages"])
    prompt_tokens = math.ceil(prompt_chars / 4) + 4 * len(request["messages"]) + 3
    answer = json.dumps({"label": max(checked, key=len)}, ensure_ascii=False)
    return prompt_tokens, math.ceil(len(answer) / 4) + 1


def check_labels(labels: Sequence[str] | None) -> tuple[str, ...] | None:
    if labels is None:
        return None
    if isinstance(labels, str):
        raise ValueError("labels must be a sequence of strings, not a string")
    result = tuple(labels)
    if not result or not all(isinstance(label, str) and label for label in result):
        raise ValueError("labels must be non-empty strings, at least one")
    if len(set(result)) != len(result):
        raise ValueError("labels must be distinct")
    return result


def build_request(model: str, text: str, labels: tuple[str, ...] | None) -> dict[str, Any]:
    if labels is None:
        system = _FREE_FORM_INSTRUCTIONS
        extra: dict[str, Any] = {}
    else:
        system = _LABELING_INSTRUCTIONS.format(labels=json.dumps(list(labels), ensure_ascii=False))
        extra = {
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "label",
                    "strict": True,
                    "schema": {
                        "type": "object",
                        "properties": {"label": {"type": "string", "enum": list(labels)}},
                        "required": ["label"],
                        "additionalProperties": False,
                    },
                },
            }
        }
    # The user message is exactly the task text: the simulator (and any audit) matches on it.
    messages = [{"role": "system", "content": system}, {"role": "user", "content": text}]
    return {"model": model, "messages": messages, **extra}


def parse_answer(response: Any, labels: tuple[str, ...] | None) -> str:
    choices = getattr(response, "choices", None) or []
    if not choices:
        raise invalid_answer("the response has no choices")
    message = choices[0].message
    content = message.content
    if content is None or not content.strip():
        refusal = getattr(message, "refusal", None)
        reason = f"the model refused: {_preview(refusal)}" if refusal else "the answer is empty"
        raise invalid_answer(f"{reason} (finish_reason={choices[0].finish_reason})")
    if labels is None:
        return content.strip()
    try:
        data = json.loads(content)
    except json.JSONDecodeError:
        raise invalid_answer(f"the answer is not JSON: {_preview(content)}") from None
    label = data.get("label") if isinstance(data, dict) else None
    if not isinstance(label, str) or label not in labels:
        raise invalid_answer(f"the answer is not one of the {len(labels)} labels: {_preview(content)}")
    return label


def invalid_answer(message: str) -> RetryableLLMError:
    # Retryable while attempts remain; _Call.failed turns the last one into a PermanentLLMError.
    return RetryableLLMError("invalid_answer", f"Invalid answer: {message}")


def _preview(value: object) -> str:
    # repr() keeps quotes and escapes newlines, so the answer reads unambiguously inside one log line.
    text = repr(value)
    return text if len(text) <= _ANSWER_PREVIEW_CHARS else text[:_ANSWER_PREVIEW_CHARS] + "…"
