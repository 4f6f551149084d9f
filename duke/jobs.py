"""django-q2 jobs for Duke: thin, they take plain values and call one service."""

from __future__ import annotations

from django.conf import settings
from django_q.tasks import async_task


def enqueue_training(reason: str = "samples") -> None:
    async_task(
        "duke.jobs.train", reason, group="duke-training", cluster=settings.DUKE_LEARNING_CLUSTER or None
    )


def train(reason: str = "samples") -> None:
    from duke.services import model_train

    # A watermark's job trains only if its watermark is still owed a training; an operator's always does.
    model_train(reason=reason, only_if_pending=reason == "samples")


def enqueue_encoding() -> None:
    async_task(
        "duke.jobs.encode_samples", group="duke-encoding", cluster=settings.DUKE_LEARNING_CLUSTER or None
    )


def encode_samples() -> None:
    from duke.services import samples_encode_backlog

    samples_encode_backlog()
