"""Enqueueing Duke's background work (django-q2). Services call these; duke/jobs.py holds what runs.

A module of its own so that services and jobs do not import each other: jobs call services, services
enqueue through here by the jobs' dotted names.

Services enqueue on commit through the ``*_on_commit`` functions: a broker that refuses the job (Redis
down) is logged as one line and never fails the committed write (core.after_commit). What the job would
do stays recorded: an owed training (a TrainingTrigger without a version) is trained by the next
training job, which the next watermark, the end of a running training or an operator's request enqueues;
unencoded samples are encoded by the next encoding job (every 32 samples).
"""

from __future__ import annotations

from django.conf import settings
from django_q.tasks import async_task

from core.after_commit import enqueue_after_commit


def enqueue_training(reason: str = "samples") -> None:
    async_task(
        "duke.jobs.train", reason, group="duke-training", cluster=settings.DUKE_LEARNING_CLUSTER or None
    )


def enqueue_encoding() -> None:
    async_task(
        "duke.jobs.encode_samples", group="duke-encoding", cluster=settings.DUKE_LEARNING_CLUSTER or None
    )


# --- on commit: what services call (the functions above are looked up when the transaction commits) ----


def enqueue_training_on_commit(reason: str | None = None) -> None:
    """``reason`` None: a watermark's training (the job's default reason)."""
    recovery = (
        "ask again (POST /model/train)"
        if reason == "operator"
        else "the watermark stays owed and the next training job (next watermark, or the end of a running "
        "training) trains it"
    )
    enqueue_after_commit(
        lambda: enqueue_training() if reason is None else enqueue_training(reason),
        what=f"a Duke training ({reason or 'samples'})",
        recovery=recovery,
    )


def enqueue_encoding_on_commit() -> None:
    enqueue_after_commit(
        lambda: enqueue_encoding(),
        what="Duke's sample encoding",
        recovery="the samples stay unencoded until the next encoding job (every 32 samples) takes them",
    )
