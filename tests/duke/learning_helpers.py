"""Builders for Duke's learning tests: separable topic texts, samples recorded the way tasks record them."""

from __future__ import annotations

import functools
import json
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from duke import registry
from duke.model import Sample
from duke.models import ModelVersion, TrainingData
from duke.services import sample_record, split_for
from duke.training import TrainConfig, train

TOPICS = {
    "sports": "goal striker match league coach stadium referee season champion tournament",
    "science": "atom molecule experiment physics chemistry cell theory energy laboratory quantum",
    "politics": "election vote senate law minister party policy parliament campaign debate",
}
LABELS = tuple(sorted(TOPICS))
FILLER = "the a of and to in on with for today this that".split()
TASK_TYPE = "topic"
# Training in tests: a few epochs, 3 folds instead of 5, one L2 strength and 16k buckets are plenty for
# these separable topics, and cost a fraction of the defaults (the artifact a sixteenth).
FAST_EPOCHS = 2
FAST_OVERRIDES = {"folds": 3, "c_grid": (1.0,), "n_buckets": 1 << 14}
FAST_CONFIG = TrainConfig(**FAST_OVERRIDES)


def use_fast_training(settings: Any) -> None:
    settings.DUKE_MAX_EPOCHS = FAST_EPOCHS
    settings.DUKE_TRAIN_CONFIG = FAST_OVERRIDES


def topic_text(label: str, rng: random.Random, words: int = 9) -> str:
    vocab = TOPICS[label].split()
    chosen = [rng.choice(vocab) if rng.random() < 0.7 else rng.choice(FILLER) for _ in range(words)]
    chosen[0] = rng.choice(vocab)  # never all filler
    return " ".join(chosen)


def task_ids(split: str, *, start: int = 0) -> Iterator[uuid.UUID]:
    """Deterministic task ids that land in `split`: tests control exactly how many samples validate."""
    n = start
    while True:
        task_id = uuid.UUID(int=0xD0CE_0000_0000 + n)
        n += 1
        if split_for(task_id) == split:
            yield task_id


def record_samples(
    n: int,
    *,
    split: str | None = None,
    seed: int = 0,
    id_start: int = 0,
    label_map: dict[str, str] | None = None,
    task_type: str = TASK_TYPE,
) -> list[TrainingData]:
    """Records `n` labeling samples through `sample_record`, cycling through the topics.

    `split` forces the split (by choosing task ids); `label_map` relabels (to make a model learn wrong).
    """
    rng = random.Random(seed)
    ids = task_ids(split, start=id_start) if split else None
    recorded = []
    for i in range(n):
        label = LABELS[i % len(LABELS)]
        task_id = next(ids) if ids else uuid.UUID(int=0xBEEF_0000_0000 + id_start + i)
        sample = sample_record(
            task_id=task_id,
            text=topic_text(label, rng),
            task_type=task_type,
            complexity=1,
            labels=list(LABELS),
            output=(label_map or {}).get(label, label),
        )
        assert sample is not None
        recorded.append(sample)
    return recorded


def write_dataset(path: Path, n: int, *, seed: int = 0) -> list[tuple[str, str]]:
    """A JSONL dataset the simulator answers from (a perfect teacher); returns its (text, label) rows."""
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n:
        label = LABELS[len(rows) % len(LABELS)]
        text = topic_text(label, rng, words=rng.randint(7, 12))
        if text in seen:
            continue
        seen.add(text)
        rows.append((text, label))
    path.write_text("".join(json.dumps({"text": t, "label": label}) + "\n" for t, label in rows))
    return rows


SWAPPED = {"politics": "science", "science": "sports", "sports": "politics"}


@functools.lru_cache(maxsize=2)
def trained_bytes(*, swapped: bool = False) -> bytes:
    """A model trained once per test session (pure training, no database); `swapped` learns wrong labels."""
    rng = random.Random(5)
    samples = []
    for i in range(90):
        label = LABELS[i % len(LABELS)]
        samples.append(
            Sample(topic_text(label, rng), SWAPPED[label] if swapped else label, LABELS, TASK_TYPE)
        )
    return train(samples, seed=0, max_epochs=FAST_EPOCHS, config=FAST_CONFIG).to_bytes()


def install_version(
    *, number: int, status: str, swapped: bool = False, accuracy: float | None = 0.9
) -> ModelVersion:
    """A trained version as training leaves it: the artifact on disk, the row with its checksum."""
    name, sha = registry.artifact_write(number=number, data=trained_bytes(swapped=swapped))
    return ModelVersion.objects.create(
        number=number,
        status=status,
        artifact_path=name,
        artifact_sha256=sha,
        accuracy=accuracy,
        macro_f1=accuracy,
        train_samples=90,
        validation_samples=30,
    )
