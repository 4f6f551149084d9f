"""A trained version judged on its out-of-fold predictions: metrics, certified thresholds, promotion gate.

Every labeling sample both trains and calibrates: training cross-fits K folds, so each sample has a
prediction from a model that never saw it (`TrainedModel.out_of_fold`). Those predictions give the
version's metrics and, per task type, its routing threshold, certified by Learn-then-Test
(duke.certification): served agreement >= DUKE_TARGET_AGREEMENT with probability >= 1 - DUKE_RISK_DELTA.

The promotion gate compares the candidate with production on the samples production never trained on
(newer than its `trained_up_to`): the candidate's out-of-fold predictions against production's own. Both
are then out-of-sample, so neither is favoured. On every sample instead, production would be judged on
data it trained on (an n-gram model nearly memorises its training set) and no candidate would ever win;
the fold models behind the candidate's predictions each saw (K-1)/K of the data, which if anything
favours production. A version trained before `trained_up_to` existed is compared on the validation
split it never trained on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from django.conf import settings
from django.utils import timezone

from duke import registry, selectors
from duke.calibration import (
    PairedResult,
    accuracy,
    beats_majority_baseline,
    macro_f1,
    paired_comparison,
    per_group_metrics,
)
from duke.certification import certify_threshold
from duke.models import TrainingData

if TYPE_CHECKING:
    from duke.model import Sample, TrainedModel

logger = logging.getLogger("duke")


@dataclass(frozen=True)
class SampleRow:
    """Where a training sample came from: what the gate and live re-certification need to know."""

    pk: int
    task_id: Any
    split: str
    created_at: datetime


@dataclass(frozen=True)
class Evaluation:
    """A model's out-of-fold answers on the samples it trained on, and what they say about it."""

    positions: list[int]  # which training samples have an out-of-fold prediction
    predicted: list[str | None]
    correct: list[bool]
    accuracy: float | None
    macro_f1: float | None
    per_task_type: dict
    thresholds: dict  # per task type with a certified threshold
    certificates: dict = field(default_factory=dict)  # per task type, certified or not


def certified_thresholds(
    confidences: np.ndarray, correct: np.ndarray, task_types: Sequence[str]
) -> tuple[dict, dict]:
    """({type: threshold entry} for the certified types, {type: certificate JSON} for every type)."""
    thresholds: dict = {}
    certificates: dict = {}
    types = np.asarray(task_types, dtype=object)
    for task_type in sorted(set(task_types)):
        rows = types == task_type
        cert = certify_threshold(
            confidences[rows],
            correct[rows],
            target=settings.DUKE_TARGET_AGREEMENT,
            delta=settings.DUKE_RISK_DELTA,
        )
        certificates[task_type] = cert.as_json()
        if cert.threshold is not None:
            thresholds[task_type] = {
                "threshold": cert.threshold,
                "coverage": round(cert.coverage, 4),
                "validation_samples": cert.n,
                "certificate": cert.as_json(),
                "certified_at": timezone.now().isoformat(),
            }
    return thresholds, certificates


def evaluate(model: TrainedModel, samples: Sequence[Sample]) -> Evaluation:
    """Metrics and certified thresholds from the model's out-of-fold predictions on `samples`.

    A model that uses sentence embeddings is served with one for every task, so only out-of-fold
    predictions made with an embedding calibrate its thresholds (metrics count every sample).
    """
    oof = model.out_of_fold
    if oof is None or not len(oof.index):
        return Evaluation([], [], [], None, None, {}, {})
    positions = [int(i) for i in oof.index]
    truth = [samples[i].label for i in positions]
    # Scored as routing answers (the n-gram view first when it is sure enough, `predict_served`).
    served_predicted, served_confidence = oof.served(model.ngram_first)
    predicted: list[str | None] = [model.labels[int(j)] for j in served_predicted]
    correct = [p == t for p, t in zip(predicted, truth, strict=True)]
    types = [samples[i].task_type for i in positions]
    usable = oof.has_embedding if oof.has_embedding.any() else np.ones(len(positions), dtype=bool)
    thresholds, certificates = certified_thresholds(
        served_confidence[usable],
        np.asarray(correct)[usable],
        [t for t, u in zip(types, usable, strict=True) if u],
    )
    return Evaluation(
        positions=positions,
        predicted=predicted,
        correct=correct,
        accuracy=accuracy(truth, predicted),
        macro_f1=macro_f1(truth, predicted),
        per_task_type=per_group_metrics(truth, predicted, types),
        thresholds=thresholds,
        certificates=certificates,
    )


@dataclass(frozen=True)
class Fresh:
    """Production's own predictions on samples it never trained on (for live re-certification)."""

    rows: list[SampleRow]
    task_types: list[str]
    confidences: list[float]
    agreed: list[bool]


@dataclass(frozen=True)
class Verdict:
    against: int | None  # the production version compared with; None: the majority-class baseline
    result: PairedResult
    production: int | None  # production when the gate ran (it may differ from `against`: unloadable)
    note: str = ""
    # Production's thresholds for task types it had none for, certified on samples it never trained on.
    production_thresholds: dict | None = None
    fresh: Fresh | None = None

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
            "compared_on": "samples the compared version never trained on, out-of-fold for the candidate",
            "reason": f"{r.reason}; {self.note}" if self.note else r.reason,
        }


def _unseen_by(production_up_to: int | None, rows: Sequence[SampleRow], position: int) -> bool:
    row = rows[position]
    if production_up_to is None:
        return row.split == TrainingData.Split.VALIDATION
    return row.pk > production_up_to


def promotion_gate(*, candidate: Evaluation, samples: Sequence[Sample], rows: Sequence[SampleRow]) -> Verdict:
    """Candidate vs production by an exact McNemar test on the samples production never trained on.

    With no production version (or one whose artifact cannot be loaded) the candidate must instead beat
    answering each task type's majority label, on all its out-of-fold predictions, by the same test.
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
            unseen = [
                k for k, i in enumerate(candidate.positions) if _unseen_by(production.trained_up_to, rows, i)
            ]
            inputs = [samples[candidate.positions[k]] for k in unseen]
            theirs = production_model.predict_served(inputs)
            their_correct = [p.label == s.label for p, s in zip(theirs, inputs, strict=True)]
            result = paired_comparison(
                [candidate.correct[k] for k in unseen], their_correct, min_samples=minimum
            )
            types = [s.task_type for s in inputs]
            confidences = np.asarray([p.confidence for p in theirs])
            new_types = sorted(set(types) - set(production.thresholds or {}))
            keep = np.asarray([t in new_types for t in types], dtype=bool)
            earned, _ = certified_thresholds(
                confidences[keep], np.asarray(their_correct)[keep], [t for t in types if t in new_types]
            )
            fresh = Fresh(
                [rows[candidate.positions[k]] for k in unseen],
                types,
                confidences.tolist(),
                their_correct,
            )
            return Verdict(
                production.number, result, production.number, production_thresholds=earned, fresh=fresh
            )
    result = beats_majority_baseline(
        [samples[i].label for i in candidate.positions],
        candidate.predicted,
        [s.label for s in samples],
        groups=[samples[i].task_type for i in candidate.positions],
        train_groups=[s.task_type for s in samples],
        min_samples=minimum,
    )
    return Verdict(None, result, production.number if production else None, note)
