"""Samples: one per completed task, the retraining watermark, buyer corrections, stored embeddings."""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Callable, Sequence

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import F

from duke import queue, selectors
from duke.encoder import EncoderUnavailable, embedding_to_bytes, encode_texts, encoder_available
from duke.models import SampleCounter, TrainingData, TrainingTrigger

logger = logging.getLogger("duke")

_ENCODE_BATCH = 256
# Recorded samples are embedded by a queued job every this many samples; a training never waits for it.
ENCODE_EVERY = 32
# One background encoder at a time, through the shared cache (a file cache on one machine, Redis across
# nodes). The lease is renewed after every batch; a killed encoder's lease simply runs out.
ENCODER_LEASE_KEY = "duke:background-encoder"
ENCODER_LEASE_S = 300


def split_for(task_id: uuid.UUID) -> str:
    """Fixed forever at insert: a stable hash of the task id, so a sample never moves between splits."""
    digest = hashlib.blake2b(task_id.bytes, digest_size=8).digest()
    bucket = int.from_bytes(digest, "big") % 10_000
    validation = bucket < settings.DUKE_VALIDATION_FRACTION * 10_000
    return TrainingData.Split.VALIDATION if validation else TrainingData.Split.TRAIN


def _next_sample_ordinal() -> int:
    # The row lock taken by the UPDATE serialises concurrent recorders, so ordinals are unique and gapless.
    counter, _ = SampleCounter.objects.get_or_create(pk=1)
    SampleCounter.objects.filter(pk=counter.pk).update(samples=F("samples") + 1)
    return SampleCounter.objects.values_list("samples", flat=True).get(pk=counter.pk)


@transaction.atomic
def sample_record(
    *,
    task_id: uuid.UUID,
    text: str,
    task_type: str,
    complexity: int,
    labels: Sequence[str] | None,
    output: str,
) -> TrainingData | None:
    """Stores a completed task as a training sample; every DUKE_TRAIN_EVERY labeling samples, one training."""
    sample, created = TrainingData.objects.get_or_create(
        task_id=task_id,
        defaults={
            "input_text": text,
            "task_type": task_type,
            "complexity": complexity,
            "labels": list(labels) if labels else None,
            "output": output,
            "split": split_for(task_id),
        },
    )
    if not created or not labels:
        return sample if created else None
    ordinal = _next_sample_ordinal()
    if settings.DUKE_ENCODE_ON_RECORD and ordinal % ENCODE_EVERY == 0:
        # Through the queue after commit, so a completing task never waits for the encoder, and in
        # batches: one forward pass for many texts costs far less than one each, and so does one job.
        queue.enqueue_encoding_on_commit()
    if ordinal % settings.DUKE_TRAIN_EVERY == 0:
        training_trigger(sample_ordinal=ordinal, reason="samples")
        logger.info("Collected %d training samples for Duke", ordinal)
    return sample


def training_trigger(*, sample_ordinal: int, reason: str) -> bool:
    """Inserts the watermark row and enqueues one training when this transaction commits."""
    try:
        with transaction.atomic():
            TrainingTrigger.objects.create(sample_ordinal=sample_ordinal, reason=reason)
    except IntegrityError:
        return False
    queue.enqueue_training_on_commit()
    return True


@transaction.atomic
def sample_correct(*, task_id: uuid.UUID, correct_label: str) -> None:
    """A buyer's correction becomes the training label."""
    TrainingData.objects.filter(task_id=task_id).update(
        correct_label=correct_label, source=TrainingData.Source.BUYER
    )


def _store_embeddings(pks: Sequence[int], vectors: np.ndarray) -> int:
    stored = 0
    with transaction.atomic():
        for pk, vector in zip(pks, vectors, strict=True):
            stored += TrainingData.objects.filter(pk=pk, embedding__isnull=True).update(
                embedding=embedding_to_bytes(vector)
            )
    return stored


def samples_encode_missing(
    *, up_to_pk: int | None = None, after_batch: Callable[[], bool] | None = None
) -> int:
    """Embeds every labeling sample that has none yet (up to `up_to_pk`, when given).

    ``after_batch`` runs between batches; when it returns False the pass stops there. Returns how many
    were stored; 0 without an encoder, in which case Duke trains on n-grams alone.
    """
    if not encoder_available():
        return 0
    missing = selectors.samples_missing_embedding()
    if up_to_pk is not None:
        missing = missing.filter(pk__lte=up_to_pk)
    stored, last_pk = 0, 0
    while True:
        if after_batch is not None and last_pk and not after_batch():
            return stored
        rows = list(missing.filter(pk__gt=last_pk).values_list("pk", "input_text")[:_ENCODE_BATCH])
        if not rows:
            return stored
        last_pk = rows[-1][0]
        try:
            vectors = encode_texts([text for _, text in rows])
        except EncoderUnavailable:
            return stored
        stored += _store_embeddings([pk for pk, _ in rows], vectors)


def samples_encode_backlog() -> int:
    """The queued encoder: embeds what is missing up to now, unless another encoder is already at it.

    Jobs are enqueued every ENCODE_EVERY samples, and one pass over a busy backlog outlasts many of them:
    without the lease they ran side by side on every queue worker, encoding the same rows and keeping
    the training job waiting for a worker. Bounded by a snapshot for the same reason: an encoder slower
    than the samples' arrival would otherwise hold its worker for good. What lands meanwhile is the next
    job's (or the next training's) to encode.
    """
    if not encoder_available():
        return 0
    snapshot_pk = selectors.labeling_samples_last_pk()
    # The lease holds this pass's own token: a pass slow enough for its lease to expire, and for another
    # encoder to take it, must neither renew nor release the other's. (Reading then writing is not atomic
    # on every cache backend; the worst a race there can do is encode some rows twice.)
    token = f"{os.getpid()}-{uuid.uuid4().hex}"
    if not cache.add(ENCODER_LEASE_KEY, token, ENCODER_LEASE_S):
        return 0

    def still_ours() -> bool:
        if cache.get(ENCODER_LEASE_KEY) != token:
            return False  # lost to another encoder: the rest is its work now
        cache.set(ENCODER_LEASE_KEY, token, ENCODER_LEASE_S)
        return True

    try:
        return samples_encode_missing(up_to_pk=snapshot_pk, after_batch=still_ours)
    finally:
        if cache.get(ENCODER_LEASE_KEY) == token:
            cache.delete(ENCODER_LEASE_KEY)
