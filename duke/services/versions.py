"""Versions: training a new one, judging it, the promotion gate, operators' promote/rollback.

A training never waits for the encoder: it takes every labeling sample up to a snapshot, with the
embeddings already stored (the n-gram view learns from all, the embedding view from those), and the
queued encoder catches up beside it. At most one trains at a time; a watermark reached meanwhile is
trained right after (see `_version_finish`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from duke import queue, registry, selectors
from duke.encoder import embedding_from_bytes
from duke.models import ModelVersion, TrainingTrigger
from duke.services.audit import routing_recertify
from duke.services.evaluation import SampleRow, Verdict, evaluate, promotion_gate

if TYPE_CHECKING:
    # Importing duke.model or duke.training maps torch (~200 MB per process). Every web and queue process
    # imports this module (admin, task completion), and most of them never train: they import torch when
    # they first train or evaluate.
    from duke.model import Sample, TrainedModel

logger = logging.getLogger("duke")

# How often a running training writes its epoch to the database (the status page polls every few s).
_PROGRESS_EVERY_S = 0.5


def train(*args: Any, **kwargs: Any) -> TrainedModel:
    """duke.training.train with DUKE_TRAIN_CONFIG's overrides, imported on first use (see above)."""
    from duke.training import TrainConfig
    from duke.training import train as train_model

    return train_model(*args, config=TrainConfig(**settings.DUKE_TRAIN_CONFIG), **kwargs)


def _usable(samples: list[Sample], rows: list[SampleRow]) -> tuple[list[Sample], list[SampleRow], dict]:
    """The samples a version learns from: those whose label has at least 2 samples (one can be neither
    learnt from nor checked out-of-fold); returns them and {label: count} of the ones left out."""
    counts = Counter(s.label for s in samples)
    left_out = {label: n for label, n in sorted(counts.items()) if n < 2}
    keep = [i for i, s in enumerate(samples) if counts[s.label] >= 2]
    return [samples[i] for i in keep], [rows[i] for i in keep], left_out


def training_shortfall(counts: Counter) -> str | None:
    """Why samples with these label counts cannot make a version (None when they can)."""
    minimum = settings.DUKE_MIN_SAMPLES
    usable = {label: n for label, n in counts.items() if n >= 2}
    if sum(usable.values()) < minimum:
        return (
            f"Duke needs at least {minimum} labeling samples whose label has 2 or more samples "
            f"(DUKE_MIN_SAMPLES); it has {sum(usable.values())} of {sum(counts.values())}."
        )
    if len(usable) < 2:
        shown = ", ".join(f"{label!r}: {n}" for label, n in sorted(counts.items())) or "none"
        return f"Duke needs at least 2 labels with 2 samples each; it has {shown}."
    return None


def _to_samples(*, up_to_pk: int) -> tuple[list[Sample], list[SampleRow]]:
    from duke.model import Sample

    rows = (
        selectors.labeling_samples()
        .filter(pk__lte=up_to_pk)
        .values_list(
            "pk",
            "task_id",
            "split",
            "created_at",
            "input_text",
            "output",
            "correct_label",
            "labels",
            "task_type",
            "embedding",
        )
    )
    samples, meta = [], []
    for pk, task_id, split, created_at, text, output, correct_label, labels, task_type, embedding in rows:
        try:
            vector = embedding_from_bytes(embedding)
        except ValueError:
            vector = None  # a malformed embedding only costs this sample its second view
        samples.append(Sample(text, correct_label or output, tuple(labels), task_type, vector))
        meta.append(SampleRow(pk, task_id, split, created_at))
    return samples, meta


def abandon_stale_trainings() -> None:
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
        _train_again_if_owed()


def _train_again_if_owed() -> None:
    """Watermarks crossed while a training ran found the slot taken: one more training covers them all."""
    if TrainingTrigger.objects.filter(version__isnull=True).exists():
        queue.enqueue_training_on_commit()


def _version_finish(version: ModelVersion, verdict: Verdict) -> ModelVersion:
    """Candidate or production, atomically; the old production retires if the new one is promoted."""
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
        elif current is not None and current_number == verdict.against and verdict.production_thresholds:
            # A version promoted on little data earns thresholds later, on samples it never saw.
            current.thresholds = {**(current.thresholds or {}), **verdict.production_thresholds}
            current.save(update_fields=["thresholds"])
            promotion["production_thresholds_recalibrated"] = sorted(verdict.production_thresholds)
            logger.info(
                "Duke v%d earns routing thresholds on samples it never trained on: %s",
                current_number,
                ", ".join(sorted(verdict.production_thresholds)),
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
                "trained_up_to",
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
        _train_again_if_owed()
    if not promote and current is not None and current_number == verdict.against and verdict.fresh:
        try:
            _recertify_production(current_number, verdict)
        except Exception:  # noqa: BLE001 — the version is trained and saved; re-certification can wait
            logger.exception("Duke v%d live re-certification failed", current_number)
    return version


def _recertify_production(number: int, verdict: Verdict) -> None:
    """Production's live threshold re-checked with the tasks it left to the LLM since it last changed."""
    fresh = verdict.fresh
    assert fresh is not None
    for task_type in sorted(set(fresh.task_types)):
        below = [
            (conf, agreed, row)
            for conf, agreed, row, t in zip(
                fresh.confidences, fresh.agreed, fresh.rows, fresh.task_types, strict=True
            )
            if t == task_type
        ]
        routing_recertify(
            model_version=number,
            task_type=task_type,
            below=[(conf, agreed, row.task_id, row.created_at) for conf, agreed, row in below],
        )


def model_train(*, reason: str = "samples", only_if_pending: bool = False) -> ModelVersion | None:
    """Trains a new version on every labeling sample, judges it out-of-fold, gates promotion.

    Returns the version (candidate, production or failed), or None when nothing was started: another
    training is running, the samples are below the minimums (`training_shortfall`), or
    (`only_if_pending`, the watermark's jobs) no watermark is left that an earlier training did not
    cover. Any error leaves the version `failed` with its error and changes nothing else.
    """
    abandon_stale_trainings()
    shortfall = training_shortfall(selectors.label_counts())
    if shortfall is not None:
        logger.info("Duke training skipped: %s", shortfall)
        return None
    version = _version_start(only_if_pending=only_if_pending)
    if version is None:
        return None
    started = time.perf_counter()
    artifact = ""
    try:
        # A snapshot: samples keep arriving while this runs. Never waits for the encoder: samples not
        # embedded yet train the n-gram view only.
        snapshot_pk = selectors.labeling_samples_last_pk()
        samples, rows, left_out = _usable(*_to_samples(up_to_pk=snapshot_pk))
        version.train_samples = len(samples)
        version.trained_up_to = snapshot_pk
        version.promotion = {"trigger": reason, **({"left_out": left_out} if left_out else {})}
        ModelVersion.objects.filter(pk=version.pk).update(train_samples=version.train_samples)
        embedded = sum(s.embedding is not None for s in samples)
        logger.info(
            "Duke training with %d samples (v%d), %d with embeddings",
            len(samples),
            version.number,
            embedded,
        )
        progress = _Progress(version.pk)
        fit_started = time.perf_counter()
        model = train(samples, seed=0, progress=progress, max_epochs=settings.DUKE_MAX_EPOCHS or None)
        version.training_seconds = round(time.perf_counter() - fit_started, 3)
        version.epoch, version.epochs = progress.epoch, progress.epochs
        result = evaluate(model, samples)
        version.validation_samples = len(result.positions)
        version.accuracy, version.macro_f1 = result.accuracy, result.macro_f1
        version.per_task_type, version.thresholds = result.per_task_type, result.thresholds
        version.promotion["calibration"] = result.certificates
        artifact, version.artifact_sha256 = registry.artifact_write(
            number=version.number, data=model.to_bytes()
        )
        version.artifact_path = artifact
        verdict = promotion_gate(candidate=result, samples=samples, rows=rows)
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
