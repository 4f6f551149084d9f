"""A version is served only with the encoder whose vectors it was calibrated on."""

from __future__ import annotations

import random

import numpy as np
import pytest

from duke import encoder, registry
from duke.model import Sample, TrainedModel
from duke.router import route
from duke.training import TrainConfig, train
from tests.duke.routing_helpers import LABELS, TASK_TYPE, install_production, topic_text

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(
        not encoder.encoder_available(), reason="the sentence encoder package is not installed"
    ),
]

SPORTS = "striker goal match league coach stadium referee season"


@pytest.fixture(scope="module")
def model_with_embeddings() -> TrainedModel:
    rng = random.Random(0)
    vectors = np.random.default_rng(0)
    samples = [
        Sample(
            topic_text(label, rng),
            label,
            LABELS,
            TASK_TYPE,
            vectors.normal(size=encoder.EMBEDDING_DIM).astype(np.float32),
        )
        for _ in range(40)
        for label in LABELS
    ]
    return train(samples, seed=0, config=TrainConfig(n_buckets=1 << 12, max_epochs=5, min_steps=20))


def _install(model: TrainedModel, encoder_id: str | None) -> None:
    model.metadata["encoder_id"] = encoder_id
    registry.clear_cache()
    install_production(data=model.to_bytes(), thresholds={TASK_TYPE: {"threshold": 0.0}})


def test_it_records_the_encoder_a_version_was_trained_with(model_with_embeddings):
    assert model_with_embeddings.metadata["encoder_id"] == encoder.ENCODER_ID


def test_it_serves_a_version_trained_with_this_encoder(model_with_embeddings):
    _install(model_with_embeddings, encoder.ENCODER_ID)
    assert route(text=SPORTS, labels=LABELS, task_type=TASK_TYPE) is not None


def test_it_serves_a_version_from_before_artifacts_named_their_encoder(model_with_embeddings):
    _install(model_with_embeddings, None)
    assert route(text=SPORTS, labels=LABELS, task_type=TASK_TYPE) is not None


def test_it_never_serves_a_version_calibrated_on_another_encoders_vectors(model_with_embeddings):
    _install(model_with_embeddings, "some-other-encoder/seq512/fp32")
    assert route(text=SPORTS, labels=LABELS, task_type=TASK_TYPE) is None
