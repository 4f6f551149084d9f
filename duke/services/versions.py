"""Versions: training a new one, evaluating it, the promotion gate, operators' promote/rollback."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from core.exceptions import Conflict, NotFound
from duke import registry, selectors
from duke.calibration import (
    PairedResult,
    accuracy,
    agreement_threshold,
    beats_majority_baseline,
    macro_f1,
    paired_comparison,
    per_group_metrics,
)
from duke.encoder import embedding_from_bytes
from duke.models import ModelVersion, TrainingData, TrainingTrigger
from duke.services.samples import samples_encode_missing

if TYPE_CHECKING:
    # Importing duke.model or duke.training maps torch (~200 MB per process). Every web and queue process
    # imports this module (admin, task completion), and most of them never train: they import torch when
    # they first train or evaluate.
    from duke.model import Sample, TrainedModel
    from duke.training import TrainConfig

logger = logging.getLogger("duke")

# How often a running training writes its epoch to the database (the status page polls every few s).
_PROGRESS_EVERY_S = 0.5
# None: the trainer's own defaults. Tests swap in a cheaper configuration (fewer folds, fewer buckets).
TRAIN_CONFIG: TrainConfig | None = None


def train(*args: Any, **kwargs: Any) -> TrainedModel:
    """duke.training.train, imported on first use (see the imports above)."""
    from duke.training import train as train_model

    return train_model(*args, **kwargs)


def _to_samples(split: str, *, up_to_pk: int) -> list[Sample]:
    from duke.model import Sample

    rows = (
        selectors.labeling_samples(split=split)
        .filter(pk__lte=up_to_pk)
        .values_list("input_text", "output", "correct_label", "labels", "task_type", "embedding")
    )
    samples = []
    for text, output, correct_label, labels, task_type, embedding in rows:
        try:
            vector = embedding_from_bytes(embedding)
        except ValueError:
            vector = None  # a malformed embedding only costs this sample its second view
        samples.append(Sample(text, correct_label or output, tuple(labels), task_type, vector))
    return samples


@dataclass(frozen=True)
class Evaluation:
    """A model's answers on the validation samples, and what they say about it."""

    predicted: list[str | None]
    correct: list[bool]
    accuracy: float | None
    macro_f1: float | None
    per_task_type: dict
    thresholds: dict


def evaluate(model: TrainedModel, samples: Sequence[Sample]) -> Evaluation:
    """Accuracy, macro-F1 and per-task-type metrics, and per type the routing threshold (if one is earned)."""
    if not samples:
        return Evaluation([], [], None, None, {}, {})
    predictions = model.predict(samples)
    truth = [s.label for s in samples]
    predicted = [p.label for p in predictions]
    correct = [p == t for p, t in zip(predicted, truth, strict=True)]
    types = [s.task_type for s in samples]
    thresholds = {}
    for task_type in sorted(set(types)):
        idx = [i for i, t in enumerate(types) if t == task_type]
        found = agreement_threshold(
            [predictions[i].confidence for i in idx],
            [correct[i] for i in idx],
            target=settings.DUKE_TARGET_AGREEMENT,
        )
        if found is not None:
            threshold, coverage = found
            thresholds[task_type] = {
                "threshold": threshold,
                "coverage": coverage,
                "validation_samples": len(idx),
            }
    return Evaluation(
        predicted=predicted,
        correct=correct,
        accuracy=accuracy(truth, predicted),
        macro_f1=macro_f1(truth, predicted),
        per_task_type=per_group_metrics(truth, predicted, types),
        thresholds=thresholds,
    )


@dataclass(frozen=True)
class Verdict:
    against: int | None  # the production version compared with; None: the majority-class baseline
    result: PairedResult
    production: int | None  # production when the gate ran (it may differ from `against`: unloadable)
    note: str = ""
    # Production's routing thresholds recalibrated on today's (larger) validation split: a version that
    # was promoted on little validation data earns its thresholds later, without a new promotion.
    production_thresholds: dict | None = None

    def as_json(self) -> dict:
        r = self.result
        return {
            "against": f"v{self.against}" if self.against is not None else "majority baseline",
            "against_version": self.against,
            "better": r.better,
            "p_value": r.p_value,
            "n": r.n,
            "min_validation": settings.DUKE_MIN_VALIDATION,
            "candidate_accuracy": r.candidate_accuracy,
            "against_accuracy": r.production_accuracy,
            "candidate_wins": r.candidate_only,
            "against_wins": r.production_only,
            "reason": f"{r.reason}; {self.note}" if self.note else r.reason,
        }


def promotion_gate(
    *, candidate: Evaluation, validation: Sequence[Sample], train_samples: Sequence[Sample]
) -> Verdict:
    """Candidate vs production on the same current validation samples, by an exact McNemar test.

    With no production version (or one whose artifact cannot be loaded) the candidate must instead beat
    answering each task type's majority training label, by the same test and the same minimum.
    """
    minimum = settings.DUKE_MIN_VALIDATION
    production = selectors.model_version_production()
    note = ""
    if production is not None:
        try:
            production_model = registry.model_load(production)
        except registry.ArtifactError as exc:
            logger.error("Duke v%d (production) cannot be compared: %s", production.number, exc)
            note = f"production v{production.number} unusable ({exc}); compared with the baseline"
        else:
            theirs = evaluate(production_model, validation)
            result = paired_comparison(candidate.correct, theirs.correct, min_samples=minimum)
            return Verdict(
                production.number, result, production.number, production_thresholds=theirs.thresholds
            )
    result = beats_majority_baseline(
        [s.label for s in validation],
        candidate.predicted,
        [s.label for s in train_samples],
        groups=[s.task_type for s in validation],
        train_groups=[s.task_type for s in train_samples],
        min_samples=minimum,
    )
    return Verdict(None, result, production.number if production else None, note)


def _abandon_stale_trainings() -> None:
    """A training whose worker died (killed, out of memory, Q timeout) would otherwise block all others."""
    limit_s = int(settings.Q_CLUSTER.get("timeout") or 600) + 60
    cutoff = timezone.now() - timedelta(seconds=limit_s)
    for version in ModelVersion.objects.filter(status=ModelVersion.Status.TRAINING, created_at__lt=cutoff):
        abandoned = ModelVersion.objects.filter(pk=version.pk, status=ModelVersion.Status.TRAINING).update(
            status=ModelVersion.Status.FAILED,
            error=f"abandoned: still training after {limit_s} s (the worker running it stopped)",
            finished_at=timezone.now(),
        )
        if abandoned:
            logger.error("Duke v%d training abandoned after %d s", version.number, limit_s)


def _version_start(*, only_if_pending: bool) -> ModelVersion | None:
    """A new version in `training`, claiming every pending trigger; None when another one is training
    (or, with `only_if_pending`, when an earlier training already claimed every trigger)."""
    for _ in range(3):
        try:
            with transaction.atomic():
                running = selectors.model_version_training()
                if running is not None:
                    logger.info("Duke training skipped: v%d is still training", running.number)
                    return None
                if only_if_pending and not TrainingTrigger.objects.filter(version__isnull=True).exists():
                    # A queue backlog let one training cover several watermarks; their jobs add nothing.
                    logger.info("Duke training skipped: every watermark is covered by an earlier version")
                    return None
                number = (ModelVersion.objects.aggregate(top=Max("number"))["top"] or 0) + 1
                version = ModelVersion.objects.create(number=number, status=ModelVersion.Status.TRAINING)
                TrainingTrigger.objects.filter(version__isnull=True).update(version=number)
                return version
        except IntegrityError:
            # A concurrent start won the number or the one-training slot; look again.
            continue
    logger.warning("Duke training skipped: could not allocate a version number")
    return None


class _Progress:
    """Writes a running training's epoch to its version row, at most every 0.5 s and at the end."""

    def __init__(self, version_pk: int) -> None:
        self.version_pk = version_pk
        self.epoch = 0
        self.epochs = 0
        self._written_at = 0.0

    def __call__(self, epoch: int, epochs: int) -> None:
        self.epoch, self.epochs = epoch, epochs
        now = time.monotonic()
        if epoch < epochs and now - self._written_at < _PROGRESS_EVERY_S:
            return
        self._written_at = now
        ModelVersion.objects.filter(pk=self.version_pk, status=ModelVersion.Status.TRAINING).update(
            epoch=epoch, epochs=epochs
        )


def _version_fail(version: ModelVersion, error: BaseException, *, started: float, artifact: str) -> None:
    registry.artifact_delete(name=artifact)
    with transaction.atomic():
        ModelVersion.objects.filter(pk=version.pk).update(
            status=ModelVersion.Status.FAILED,
            error=f"{type(error).__name__}: {error}"[:4000],
            finished_at=timezone.now(),
            training_seconds=round(time.perf_counter() - started, 3),
            artifact_path="",
            artifact_sha256="",
        )


def _version_finish(version: ModelVersion, verdict: Verdict) -> ModelVersion:
    """Candidate or production, atomically; the old production retires if the new one is promoted."""
    from duke import jobs

    promotion = {**version.promotion, **verdict.as_json()}
    with transaction.atomic():
        current = (
            ModelVersion.objects.select_for_update().filter(status=ModelVersion.Status.PRODUCTION).first()
        )
        current_number = current.number if current is not None else None
        promote = verdict.result.better and current_number == verdict.production
        if verdict.result.better and not promote:
            # An operator switched production while we evaluated: our comparison is stale.
            now_serving = f"v{current_number}" if current_number is not None else "none"
            promotion["reason"] += f"; production changed to {now_serving} during evaluation"
        promotion["promoted"] = promote
        now = timezone.now()
        if promote and current is not None:
            ModelVersion.objects.filter(pk=current.pk).update(status=ModelVersion.Status.RETIRED)
        elif (
            current is not None
            and current_number == verdict.against
            and verdict.production_thresholds is not None
        ):
            ModelVersion.objects.filter(pk=current.pk).update(thresholds=verdict.production_thresholds)
            promotion["production_thresholds_recalibrated"] = sorted(verdict.production_thresholds)
            logger.info(
                "Duke v%d routing thresholds recalibrated on %d validation samples: %s",
                current_number,
                version.validation_samples,
                ", ".join(sorted(verdict.production_thresholds)) or "no task type earns routing",
            )
        version.status = ModelVersion.Status.PRODUCTION if promote else ModelVersion.Status.CANDIDATE
        version.promoted_at = now if promote else None
        version.promotion = promotion
        version.finished_at = now
        version.save(
            update_fields=[
                "status",
                "promoted_at",
                "promotion",
                "finished_at",
                "train_samples",
                "validation_samples",
                "accuracy",
                "macro_f1",
                "per_task_type",
                "thresholds",
                "epoch",
                "epochs",
                "training_seconds",
                "artifact_path",
                "artifact_sha256",
            ]
        )
        if TrainingTrigger.objects.filter(version__isnull=True).exists():
            # Watermarks crossed while we trained found the slot taken; one more training covers them all.
            transaction.on_commit(jobs.enqueue_training)
    return version


def model_train(*, reason: str = "samples", only_if_pending: bool = False) -> ModelVersion | None:
    """Trains a new version on the train split, evaluates it on the validation split, gates promotion.

    Returns the version (candidate, production or failed), or None when nothing was started: another
    training is running, there is nothing to train on, or (`only_if_pending`, the watermark's jobs) no
    watermark is left that an earlier training did not cover. Any error leaves the version `failed`
    with its error and changes nothing else; production is untouched.
    """
    _abandon_stale_trainings()
    if not selectors.labeling_samples(split=TrainingData.Split.TRAIN).exists():
        logger.info("Duke training skipped: no labeling samples in the train split yet")
        return None
    version = _version_start(only_if_pending=only_if_pending)
    if version is None:
        return None
    started = time.perf_counter()
    artifact = ""
    try:
        # A snapshot: samples keep arriving while this runs, and an encoder slower than their arrival
        # (MiniLM on a busy box) chasing every new one would never get to training.
        snapshot_pk = selectors.labeling_samples_last_pk()
        samples_encode_missing(up_to_pk=snapshot_pk)
        train_samples = _to_samples(TrainingData.Split.TRAIN, up_to_pk=snapshot_pk)
        validation = _to_samples(TrainingData.Split.VALIDATION, up_to_pk=snapshot_pk)
        version.train_samples, version.validation_samples = len(train_samples), len(validation)
        version.promotion = {"trigger": reason}
        ModelVersion.objects.filter(pk=version.pk).update(
            train_samples=version.train_samples, validation_samples=version.validation_samples
        )
        logger.info(
            "Duke training with %d samples (v%d)", len(train_samples) + len(validation), version.number
        )
        progress = _Progress(version.pk)
        fit_started = time.perf_counter()
        model = train(
            train_samples,
            seed=0,
            progress=progress,
            max_epochs=settings.DUKE_MAX_EPOCHS or None,
            config=TRAIN_CONFIG,
        )
        version.training_seconds = round(time.perf_counter() - fit_started, 3)
        version.epoch, version.epochs = progress.epoch, progress.epochs
        result = evaluate(model, validation)
        version.accuracy, version.macro_f1 = result.accuracy, result.macro_f1
        version.per_task_type, version.thresholds = result.per_task_type, result.thresholds
        artifact, version.artifact_sha256 = registry.artifact_write(
            number=version.number, data=model.to_bytes()
        )
        version.artifact_path = artifact
        verdict = promotion_gate(candidate=result, validation=validation, train_samples=train_samples)
        version = _version_finish(version, verdict)
    except Exception as exc:  # noqa: BLE001 — any failure must end as a `failed` version, never a stuck one
        logger.exception("Duke v%d training FAILED", version.number)
        _version_fail(version, exc, started=started, artifact=artifact)
        version.refresh_from_db()
        return version
    shown = f"{version.accuracy:.1%}" if version.accuracy is not None else "n/a"
    if version.status == ModelVersion.Status.PRODUCTION:
        logger.info("Duke v%d promoted (accuracy %s)", version.number, shown)
    else:
        logger.info(
            "Duke v%d stays a candidate (accuracy %s): %s", version.number, shown, version.promotion["reason"]
        )
    return version


# --- operators ------------------------------------------------------------------------------------------


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

    Refused (409) while a training runs, since the queued job would only be skipped, and when there
    is nothing to train on.
    """
    from duke import jobs

    _abandon_stale_trainings()
    running = selectors.model_version_training()
    if running is not None:
        raise Conflict(
            f"Duke v{running.number} is already training (epoch {running.epoch} of {running.epochs}); "
            "request another training when it has finished.",
            code="training_in_progress",
        )
    train_count = selectors.labeling_samples(split=TrainingData.Split.TRAIN).count()
    if train_count == 0:
        raise Conflict("Duke has no labeling samples to train on yet.", code="no_training_data")
    validation_count = selectors.labeling_samples(split=TrainingData.Split.VALIDATION).count()
    transaction.on_commit(lambda: jobs.enqueue_training("operator"))
    logger.info("Duke training requested by an operator (%d samples)", train_count + validation_count)
    return TrainingRequest("operator", train_count, validation_count)
