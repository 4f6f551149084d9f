"""What a test scripts for the next chat requests: an error, raw content, a dropped connection, a delay."""

from __future__ import annotations

from dataclasses import dataclass


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
