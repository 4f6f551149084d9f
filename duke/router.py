"""Confidence routing: which labeling tasks Duke serves itself. (Being built: see the routing issue.)"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RouteDecision:
    label: str
    confidence: float
    model_version: int
    audit: bool  # also send to the LLM in the background to measure live agreement


def route(*, text: str, labels: Sequence[str], task_type: str) -> RouteDecision | None:
    """Duke's answer when the production model is confident enough for this task type, else None."""
    return None


def routing_status() -> dict:
    """Per task type: threshold, expected coverage, live agreement, suspended or not, savings."""
    return {}
