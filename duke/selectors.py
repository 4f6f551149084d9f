"""Reads on Duke's data and versions."""

from __future__ import annotations

from django.conf import settings
from django.db.models import Count, Max, Q, QuerySet

from duke.models import ModelVersion, SampleCounter, TrainingData


def model_version_list() -> QuerySet[ModelVersion]:
    """Every version, oldest first (the order a learning curve is read in)."""
    return ModelVersion.objects.order_by("number")


def model_version_production() -> ModelVersion | None:
    return ModelVersion.objects.filter(status=ModelVersion.Status.PRODUCTION).first()


def model_version_training() -> ModelVersion | None:
    return ModelVersion.objects.filter(status=ModelVersion.Status.TRAINING).first()


def sample_progress() -> dict[str, int]:
    """Labeling samples collected (by split) and where the count stands against the next training."""
    counts = TrainingData.objects.filter(labels__isnull=False).aggregate(
        total=Count("pk"),
        train=Count("pk", filter=Q(split=TrainingData.Split.TRAIN)),
        validation=Count("pk", filter=Q(split=TrainingData.Split.VALIDATION)),
    )
    # The counter, not the row count, drives the training watermark, so progress is read from it.
    ordinal = SampleCounter.objects.values_list("samples", flat=True).first() or 0
    every = settings.DUKE_TRAIN_EVERY
    since_last = ordinal % every
    return {
        **counts,
        "train_every": every,
        "since_last_training": since_last,
        "until_next_training": every - since_last,
    }


def model_version_get(*, number: int) -> ModelVersion | None:
    return ModelVersion.objects.filter(number=number).first()


def model_version_recent(*, limit: int = 50) -> QuerySet[ModelVersion]:
    """The newest versions first (what a status page shows)."""
    return ModelVersion.objects.order_by("-number")[:limit]


def labeling_samples(*, split: str | None = None) -> QuerySet[TrainingData]:
    """Samples of labeling tasks (free-form results are stored but never trained on), in insert order.

    The order is fixed so that the same data always gives the same training run.
    """
    samples = TrainingData.objects.filter(labels__isnull=False).order_by("pk")
    return samples.filter(split=split) if split else samples


def labeling_samples_last_pk() -> int:
    """The newest labeling sample's pk (0 when none): a snapshot for work that must not chase arrivals."""
    return labeling_samples().aggregate(last=Max("pk"))["last"] or 0


def samples_missing_embedding() -> QuerySet[TrainingData]:
    return labeling_samples().filter(embedding__isnull=True)


STATUS_VERSIONS = 50


def model_status() -> dict:
    """What `GET /model/status` shows: production, sample counts, training progress, recent versions."""
    production = model_version_production()
    training = model_version_training()
    progress = sample_progress()
    return {
        "production_version": production.number if production else None,
        "production_accuracy": production.accuracy if production else None,
        "production_macro_f1": production.macro_f1 if production else None,
        "training_samples": progress["total"],
        "samples_until_next_training": progress["until_next_training"],
        "training_in_progress": (
            {"version": training.number, "epoch": training.epoch, "epochs": training.epochs}
            if training
            else None
        ),
        "versions": list(model_version_recent(limit=STATUS_VERSIONS)),
    }
