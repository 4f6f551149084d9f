"""django-q2 jobs for Duke: thin, they take plain values and call one service (enqueued by duke.queue)."""

from __future__ import annotations

from duke.services import model_train, samples_encode_backlog


def train(reason: str = "samples") -> None:
    # A watermark's job trains only if its watermark is still owed a training; an operator's always does.
    model_train(reason=reason, only_if_pending=reason == "samples")


def encode_samples() -> None:
    samples_encode_backlog()
