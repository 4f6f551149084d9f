"""The encoder-free fast path: served only when the n-gram view settles the certified decision for ANY
embedding, so serving without the encoder never serves anything the full model would not."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from duke import router
from duke.encoder import EMBEDDING_DIM, ENCODER_ID
from duke.model import Input, TrainedModel
from duke.models import ServedTask
from tests.duke.routing_helpers import LABELS, TASK_TYPE, install_production, topic_text, trained_model

SPORTS = "striker goal match league coach stadium referee season"


def _with_embedding_view(scale: float, mix_emb: float, seed: int = 0) -> TrainedModel:
    """The routing test model with an embedding view of random weights (`scale`), mixed in at `mix_emb`."""
    model = trained_model()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.net.emb_out.weight.copy_(torch.randn(model.net.emb_out.weight.shape, generator=gen) * scale)
        model.net.emb_out.bias.copy_(torch.randn(model.net.emb_out.bias.shape, generator=gen) * scale)
        model.net.mix[1] = mix_emb
    model.metadata.update(with_embedding=1, encoder_id=ENCODER_ID)
    return TrainedModel.from_bytes(model.to_bytes())


def _unit(vec: np.ndarray) -> np.ndarray:
    return (vec / np.linalg.norm(vec)).astype(np.float32)


def _embeddings_to_try(model: TrainedModel, rng: np.random.Generator) -> list[np.ndarray]:
    """Random unit vectors, and for every label pair the direction that moves their gap the most."""
    weight = model.net.emb_out.weight.detach().numpy()
    tries = [_unit(rng.standard_normal(EMBEDDING_DIM)) for _ in range(20)]
    for a in range(len(weight)):
        for k in range(len(weight)):
            if a != k:
                tries.append(_unit(weight[k] - weight[a]))
    return tries


@pytest.mark.parametrize(("scale", "mix_emb"), [(0.005, 0.5), (0.02, 1.0), (0.05, -0.7)])
def test_whatever_the_embedding_the_full_model_makes_the_fast_paths_decision(scale, mix_emb):
    model = _with_embedding_view(scale, mix_emb)
    rng = np.random.default_rng(1)
    texts_rng = random.Random(2)
    decided = undecided = 0
    for i in range(60):
        label = LABELS[i % len(LABELS)]
        text = topic_text(label, texts_rng, words=texts_rng.randint(2, 12))
        threshold = texts_rng.choice([0.5, 0.7, 0.9, 0.97])
        fast = model.decide_without_embedding(Input(text, LABELS, TASK_TYPE), threshold)
        if fast is None:
            undecided += 1
            continue
        decided += 1
        assert fast.confidence >= threshold
        inputs = [Input(text, LABELS, TASK_TYPE, e) for e in _embeddings_to_try(model, rng)]
        for full in model.predict(inputs):
            assert full.label == fast.label
            assert full.confidence >= threshold
            assert full.confidence >= fast.confidence - 1e-9
    assert decided > 0  # the property is not vacuous
    if scale >= 0.05:
        assert undecided > 0  # a strong embedding view leaves some decisions to the encoder


def test_an_embedding_view_that_can_swing_any_decision_leaves_every_text_to_the_encoder():
    model = _with_embedding_view(50.0, 1.0)
    assert model.decide_without_embedding(Input(SPORTS, LABELS, TASK_TYPE), 0.5) is None


def test_without_an_embedding_view_in_the_mix_it_is_the_n_gram_answer():
    model = _with_embedding_view(1.0, 0.0)
    fast = model.decide_without_embedding(Input(SPORTS, LABELS, TASK_TYPE), 0.6)
    full = model.predict([Input(SPORTS, LABELS, TASK_TYPE, _unit(np.ones(EMBEDDING_DIM)))])[0]
    assert fast is not None and fast.label == full.label == "sports"
    assert fast.confidence == pytest.approx(full.confidence, abs=1e-5)


def test_an_unknown_label_is_never_decided():
    model = _with_embedding_view(0.05, 0.5)
    assert model.decide_without_embedding(Input(SPORTS, (*LABELS, "travel"), TASK_TYPE), 0.5) is None


@pytest.fixture
def embed_calls(monkeypatch):
    calls: list[str] = []

    def fake_embed(text: str) -> np.ndarray:
        calls.append(text)
        return _unit(np.ones(EMBEDDING_DIM))

    monkeypatch.setattr(router, "_embed", fake_embed)
    return calls


@pytest.mark.django_db
def test_the_router_serves_a_settled_text_without_encoding_it(settings, embed_calls):
    settings.DUKE_AUDIT_RATE = 0.0
    install_production(data=_with_embedding_view(0.05, 0.5).to_bytes())
    decision = router.route(text=SPORTS, labels=LABELS, task_type=TASK_TYPE)
    assert decision is not None and decision.label == "sports" and decision.confidence >= 0.6
    assert embed_calls == []
    assert decision.encode_ms == 0.0


@pytest.mark.django_db
def test_an_audited_task_is_encoded_so_its_recorded_confidence_is_exact(settings, embed_calls):
    settings.DUKE_AUDIT_RATE = 1.0
    model = _with_embedding_view(0.05, 0.5)
    install_production(data=model.to_bytes())
    decision = router.route(text=SPORTS, labels=LABELS, task_type=TASK_TYPE)
    assert decision is not None and decision.audit
    assert embed_calls == [SPORTS]
    exact = model.predict([Input(SPORTS, LABELS, TASK_TYPE, _unit(np.ones(EMBEDDING_DIM)))])[0]
    assert decision.confidence == pytest.approx(exact.confidence)


@pytest.mark.django_db
def test_a_text_the_n_grams_do_not_settle_is_encoded_and_decided_by_the_full_model(settings, embed_calls):
    settings.DUKE_AUDIT_RATE = 0.0
    model = _with_embedding_view(50.0, 1.0)
    install_production(data=model.to_bytes(), thresholds={TASK_TYPE: {"threshold": 0.05}})
    decision = router.route(text=SPORTS, labels=LABELS, task_type=TASK_TYPE)
    assert embed_calls == [SPORTS]
    exact = model.predict([Input(SPORTS, LABELS, TASK_TYPE, _unit(np.ones(EMBEDDING_DIM)))])[0]
    assert decision is not None and decision.label == exact.label
    assert not ServedTask.objects.exists()  # route() decides; the submission records what it serves
