"""Builders for routing tests: a small Duke trained on synthetic topics, installed as production."""

from __future__ import annotations

import functools
import random

from duke import registry
from duke.model import Sample, TrainedModel
from duke.models import ModelVersion
from duke.training import TrainConfig, train

TOPICS = {
    "sports": "goal striker match league coach stadium referee season champion tournament",
    "cooking": "recipe oven flour butter simmer garlic bake sauce kitchen chef",
    "finance": "shares dividend bank interest profit market stock bond investor earnings",
}
LABELS = tuple(sorted(TOPICS))
FILLER = "the a of and to in on with for today this that".split()
TASK_TYPE = "topic"


def topic_text(label: str, rng: random.Random, words: int = 8) -> str:
    vocab = TOPICS[label].split()
    chosen = [rng.choice(vocab) if rng.random() < 0.7 else rng.choice(FILLER) for _ in range(words)]
    chosen[0] = rng.choice(vocab)  # never all filler
    return " ".join(chosen)


def synthetic_samples(
    per_label: int = 60, *, seed: int = 0, task_type: str = TASK_TYPE, noise: float = 0.0
) -> list[Sample]:
    """Topic texts; with `noise`, that fraction of labels is replaced by a random one (a sloppy teacher)."""
    rng = random.Random(seed)
    samples = []
    for _ in range(per_label):
        for label in LABELS:
            text = topic_text(label, rng)
            given = rng.choice(LABELS) if rng.random() < noise else label
            samples.append(Sample(text, given, LABELS, task_type))
    return samples


@functools.lru_cache(maxsize=1)
def _trained_bytes() -> bytes:
    # Trained once per test session: the weights are deterministic and tests only read them.
    # Some label noise keeps the confidences honest (below 1) for ambiguous texts.
    samples = synthetic_samples(noise=0.15) + synthetic_samples(seed=1, task_type="other-topic", noise=0.15)
    return train(
        samples, seed=0, config=TrainConfig(n_buckets=1 << 14, max_epochs=20, min_steps=100)
    ).to_bytes()


def trained_model() -> TrainedModel:
    return TrainedModel.from_bytes(_trained_bytes())


def install_production(
    *, thresholds: dict | None = None, number: int | None = None, data: bytes | None = None
) -> ModelVersion:
    """A trained version made production the way training does: artifact on disk, row with thresholds."""
    data = data or _trained_bytes()
    number = number or (max(ModelVersion.objects.values_list("number", flat=True), default=0) + 1)
    name, sha = registry.artifact_write(number=number, data=data)
    ModelVersion.objects.filter(status=ModelVersion.Status.PRODUCTION).update(
        status=ModelVersion.Status.RETIRED
    )
    if thresholds is None:
        thresholds = {TASK_TYPE: {"threshold": 0.6, "coverage": 0.9, "validation_samples": 120}}
    return ModelVersion.objects.create(
        number=number,
        status=ModelVersion.Status.PRODUCTION,
        thresholds=thresholds,
        artifact_path=name,
        artifact_sha256=sha,
        accuracy=0.99,
    )
