"""Operators' actions on versions: promote or roll back, and "train now"."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from django.db import transaction
from django.utils import timezone

from core.exceptions import Conflict, NotFound
from duke import queue, registry, selectors
from duke.models import ModelVersion
from duke.services.versions import abandon_stale_trainings, training_shortfall

logger = logging.getLogger("duke")


def model_promote(*, number: int, by: str = "") -> ModelVersion:
    """Makes a trained version production (promotion or rollback). Loads its artifact; never retrains."""
    version = selectors.model_version_get(number=number)
    if version is None:
        raise NotFound(f"There is no Duke version {number}.", code="version_not_found")
    if version.status == ModelVersion.Status.PRODUCTION:
        return version
    if version.status in (ModelVersion.Status.TRAINING, ModelVersion.Status.FAILED):
        raise Conflict(
            f"Duke v{number} is {version.status}; only a trained version can be promoted.",
            code="version_not_promotable",
        )
    try:
        # Verified before the switch (and outside the transaction: reading and loading take a while).
        registry.model_load(version)
    except registry.ArtifactError as exc:
        raise Conflict(f"{exc}. It cannot be promoted.", code="artifact_invalid") from exc
    with transaction.atomic():
        fresh = ModelVersion.objects.select_for_update().get(pk=version.pk)
        if fresh.status == ModelVersion.Status.PRODUCTION:
            return fresh
        if fresh.status == ModelVersion.Status.FAILED or fresh.artifact_sha256 != version.artifact_sha256:
            raise Conflict(f"Duke v{number} changed while being promoted; try again.", code="version_changed")
        current = (
            ModelVersion.objects.select_for_update().filter(status=ModelVersion.Status.PRODUCTION).first()
        )
        if current is not None:
            ModelVersion.objects.filter(pk=current.pk).update(status=ModelVersion.Status.RETIRED)
        now = timezone.now()
        fresh.status = ModelVersion.Status.PRODUCTION
        fresh.promoted_at = now
        fresh.promotion = {
            **fresh.promotion,
            "manual": {"at": now.isoformat(), "by": by, "replaced": current.number if current else None},
        }
        fresh.save(update_fields=["status", "promoted_at", "promotion"])
    if current is not None and current.number > number:
        logger.info("Duke rolled back to v%d (from v%d) by %s", number, current.number, by or "an operator")
    else:
        logger.info(
            "Duke v%d promoted by %s (accuracy %s)", number, by or "an operator", _percent(fresh.accuracy)
        )
    return fresh


def _percent(value: float | None) -> str:
    return f"{value:.1%}" if value is not None else "n/a"


@dataclass(frozen=True)
class TrainingRequest:
    reason: str
    train_samples: int
    validation_samples: int

    def as_json(self) -> dict:
        return asdict(self)


@transaction.atomic
def model_request_training() -> TrainingRequest:
    """An operator's "train now": one training job, enqueued when this transaction commits.

    Refused (409) while a training runs, since the queued job would only be skipped, and below the
    minimums a version needs (the error names what is missing).
    """
    abandon_stale_trainings()
    running = selectors.model_version_training()
    if running is not None:
        raise Conflict(
            f"Duke v{running.number} is already training (epoch {running.epoch} of {running.epochs}); "
            "request another training when it has finished.",
            code="training_in_progress",
        )
    counts = selectors.label_counts()
    total = sum(counts.values())
    if total == 0:
        raise Conflict("Duke has no labeling samples to train on yet.", code="no_training_data")
    shortfall = training_shortfall(counts)
    if shortfall is not None:
        raise Conflict(shortfall, code="not_enough_samples")
    queue.enqueue_training_on_commit("operator")
    logger.info("Duke training requested by an operator (%d samples)", total)
    # Every sample trains and (out-of-fold) calibrates: there is no separate validation split any more.
    return TrainingRequest("operator", total, 0)
