"""Confidence routing: which labeling tasks Duke serves itself, and the routing picture per task type.

A task is Duke's when the production version has a calibrated threshold for its task type, routing for
that type is not suspended on that version, every label it offers is one Duke knows, and Duke's
confidence reaches the threshold. Anything else (including any error here) goes to the LLM: routing
must never make a submission fail.

Duke's confidence is the one its threshold was certified on (`TrainedModel.predict_served`): the n-gram
view's when that view alone reaches the version's `ngram_first` (no encoder runs: most requests), else
the mixed model's with the text's embedding (encoded in the request, one forward per process at a time).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction

from duke.models import ModelVersion, RoutingState
from duke.serving import embeds_like_this_encoder, needs_embedding, production_model

if TYPE_CHECKING:
    # duke.model maps torch (~200 MB per process): it is imported when a model is first used, so web and
    # queue processes that import the router but never have a production version to serve don't carry it.
    import numpy as np

    from duke.model import Prediction, TrainedModel

logger = logging.getLogger("duke")

# Which Duke-served tasks are also audited; seedable so tests and benchmarks are reproducible.
_audit_rng = random.Random()


def seed_audit_sampling(seed: int | None) -> None:
    _audit_rng.seed(seed)


@dataclass(frozen=True)
class RouteDecision:
    label: str
    confidence: float
    model_version: int
    audit: bool  # also send to the LLM in the background to measure live agreement
    threshold: float = 0.0
    encode_ms: float = 0.0  # the sentence embedding of the text
    decide_ms: float = 0.0  # prediction and threshold once the text is encoded


def threshold_for(version: ModelVersion, task_type: str) -> float | None:
    """The version's calibrated threshold for the type; None when the validation data did not earn one."""
    entry = (version.thresholds or {}).get(task_type)
    if not isinstance(entry, dict) or entry.get("threshold") is None:
        return None
    return float(entry["threshold"])


def is_suspended(*, model_version: int, task_type: str) -> bool:
    return RoutingState.objects.filter(
        model_version=model_version, task_type=task_type, suspended=True
    ).exists()


def decide(
    model: TrainedModel,
    *,
    text: str,
    labels: Sequence[str],
    task_type: str,
    embedding: np.ndarray | None,
    threshold: float,
) -> Prediction | None:
    """Duke's prediction when it is confident enough, else None. No I/O: this is the timed decision."""
    from duke.model import Input

    if not all(label in model.label_index for label in labels):
        # A label Duke never saw can never be its answer, so its confidence over the others means nothing.
        return None
    prediction = model.predict([Input(text, tuple(labels), task_type, embedding)])[0]
    if prediction.label is None or prediction.confidence < threshold:
        return None
    return prediction


def decide_without_embedding(
    model: TrainedModel, *, text: str, labels: Sequence[str], task_type: str, threshold: float
) -> Prediction | None:
    """`decide`'s answer when the n-gram view settles it for every possible embedding, else None."""
    from duke.model import Input

    return model.decide_without_embedding(Input(text, tuple(labels), task_type), threshold)


def _production() -> tuple[ModelVersion, TrainedModel] | None:
    # In a web worker, only what its preloader has loaded: a request never loads a model (duke.serving).
    return production_model()


def _embed(text: str) -> np.ndarray | bool:
    """The text's embedding, or False when the encoder is not installed."""
    from duke.encoder import EncoderUnavailable, encode_texts

    try:
        return encode_texts([text])[0]
    except EncoderUnavailable:
        logger.warning("Duke cannot route: the sentence encoder is not installed")
        return False


def route(*, text: str, labels: Sequence[str], task_type: str) -> RouteDecision | None:
    """Duke's answer when the production model is confident enough for this task type, else None."""
    try:
        if not transaction.get_connection().in_atomic_block:
            # Only reads: in autocommit, not in a transaction of its own, which on SQLite would hold the
            # database's write lock (every writer waits) while the text is encoded.
            return _route(text=text, labels=labels, task_type=task_type)
        # A savepoint: a database error in here must not break the caller's (the submission's) transaction.
        with transaction.atomic():
            return _route(text=text, labels=labels, task_type=task_type)
    except Exception:  # noqa: BLE001 — a broken model or artifact must degrade to the LLM, not fail the task
        logger.exception("Duke routing failed; the task goes to the LLM")
        return None


def _route(*, text: str, labels: Sequence[str], task_type: str) -> RouteDecision | None:
    loaded = _production()
    if loaded is None:
        return None
    version, model = loaded
    threshold = threshold_for(version, task_type)
    if threshold is None or is_suspended(model_version=version.number, task_type=task_type):
        return None
    if not all(label in model.label_index for label in labels):
        return None  # checked before encoding too: the encoder is the expensive part
    if not embeds_like_this_encoder(model):
        # Its confidences were calibrated on another encoder's vectors: they no longer mean what the
        # certificate says. The next training (on re-encoded samples) serves again.
        return None
    audit = _audit_rng.random() < settings.DUKE_AUDIT_RATE
    started = encoded = time.perf_counter()
    embeds = needs_embedding(model)
    kappa = model.ngram_first if embeds else None
    alone = None
    if kappa is not None:
        # The rule the version's thresholds were certified on (TrainedModel.predict_served): a text the
        # n-gram view alone is sure of (>= kappa) gets the n-gram view's answer, and no encoder runs.
        alone = decide(model, text=text, labels=labels, task_type=task_type, embedding=None, threshold=kappa)
    if alone is not None:
        prediction = alone if alone.confidence >= threshold else None
    else:
        prediction = None
        if embeds and kappa is None and not audit:
            # Settled by the n-gram view whatever the text's embedding: the mixed model's label at or above
            # the threshold, without the encoder. An audited task takes the full path so that the
            # confidence it records is the exact one.
            prediction = decide_without_embedding(
                model, text=text, labels=labels, task_type=task_type, threshold=threshold
            )
        if prediction is None:
            embedding = _embed(text) if embeds else None
            if embedding is False:
                return None
            encoded = time.perf_counter()
            prediction = decide(
                model, text=text, labels=labels, task_type=task_type, embedding=embedding, threshold=threshold
            )
    decided = time.perf_counter()
    if prediction is None:
        return None
    return RouteDecision(
        label=prediction.label,
        confidence=prediction.confidence,
        model_version=version.number,
        audit=audit,
        threshold=threshold,
        encode_ms=(encoded - started) * 1000,
        decide_ms=(decided - encoded) * 1000,
    )
