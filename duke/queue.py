"""Enqueueing Duke's background work (django-q2). Services call these; duke/jobs.py holds what runs.

A module of its own so that services and jobs do not import each other: jobs call services, services
enqueue through here by the jobs' dotted names.
"""

from __future__ import annotations

from django.conf import settings
from django_q.tasks import async_task


def enqueue_training(reason: str = "samples") -> None:
    async_task(
        "duke.jobs.train", reason, group="duke-training", cluster=settings.DUKE_LEARNING_CLUSTER or None
    )


def enqueue_encoding() -> None:
    async_task(
        "duke.jobs.encode_samples", group="duke-encoding", cluster=settings.DUKE_LEARNING_CLUSTER or None
    )
