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
from duke.services import evaluate
from duke.training import TrainConfig, train
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


# --- n-gram first: the rule a version is certified on and served by ---------------------------------------


def test_a_trained_version_records_the_rule_and_its_out_of_fold_answers_follow_it():
    from tests.duke.test_model_training import make_samples

    samples = make_samples(120, seed=1)
    model = train(samples, seed=0, max_epochs=6)
    assert model.ngram_first == TrainConfig().ngram_first
    assert TrainedModel.from_bytes(model.to_bytes()).ngram_first == model.ngram_first  # in the artifact
    oof = model.out_of_fold
    assert oof is not None and oof.ngram_confidence is not None and oof.ngram_predicted is not None
    predicted, confidence = oof.served(model.ngram_first)
    first = oof.ngram_confidence >= model.ngram_first
    assert first.any()  # not vacuous: some answers are the n-gram view's
    assert np.array_equal(predicted[first], oof.ngram_predicted[first])
    assert np.array_equal(confidence[~first], oof.confidence[~first])
    # What evaluation certifies on is this rule's answers.
    evaluation = evaluate(model, samples)
    served = [model.labels[int(j)] for j in predicted]
    assert evaluation.predicted == served
    # Without embeddings there is no second view: no rule recorded.
    assert train(make_samples(120, seed=1, embedding="none"), seed=0, max_epochs=6).ngram_first is None


def _ngram_first_model(kappa: float) -> TrainedModel:
    model = _with_embedding_view(50.0, 1.0)  # the embedding view could swing any decision
    model.metadata["ngram_first"] = kappa
    return TrainedModel.from_bytes(model.to_bytes())


def test_predict_served_takes_the_n_gram_answer_exactly_when_it_is_sure_enough():
    model = _ngram_first_model(0.9)
    rng = random.Random(3)
    unit = _unit(np.ones(EMBEDDING_DIM))
    texts = [topic_text(LABELS[i % 3], rng, words=rng.randint(1, 10)) for i in range(60)]
    served = model.predict_served([Input(t, LABELS, TASK_TYPE, unit) for t in texts])
    alone = model.predict([Input(t, LABELS, TASK_TYPE) for t in texts])
    mixed = model.predict([Input(t, LABELS, TASK_TYPE, unit) for t in texts])
    kinds = set()
    for s, a, m in zip(served, alone, mixed, strict=True):
        expected = a if a.confidence >= 0.9 else m
        kinds.add(a.confidence >= 0.9)
        assert (s.label, s.confidence) == (expected.label, expected.confidence)
    assert kinds == {True, False}


@pytest.mark.django_db
@pytest.mark.parametrize("audit_rate", [0.0, 1.0])
def test_the_router_answers_a_text_the_n_grams_are_sure_of_without_encoding_it(
    settings, embed_calls, audit_rate
):
    settings.DUKE_AUDIT_RATE = audit_rate
    model = _ngram_first_model(0.9)
    install_production(data=model.to_bytes(), thresholds={TASK_TYPE: {"threshold": 0.6}})
    expected = model.predict([Input(SPORTS, LABELS, TASK_TYPE)])[0]
    assert expected.confidence >= 0.9
    decision = router.route(text=SPORTS, labels=LABELS, task_type=TASK_TYPE)
    assert embed_calls == []  # audited or not: its recorded confidence is the exact one of the rule
    assert decision is not None and (decision.label, decision.confidence) == (
        expected.label,
        expected.confidence,
    )


@pytest.mark.django_db
def test_the_router_encodes_a_text_the_n_grams_are_not_sure_of_and_serves_the_mixed_answer(
    settings, embed_calls
):
    settings.DUKE_AUDIT_RATE = 0.0
    model = _ngram_first_model(0.9)
    text = "the a of and today this striker"
    alone = model.predict([Input(text, LABELS, TASK_TYPE)])[0]
    assert alone.confidence < 0.9
    install_production(data=model.to_bytes(), thresholds={TASK_TYPE: {"threshold": 0.05}})
    decision = router.route(text=text, labels=LABELS, task_type=TASK_TYPE)
    assert embed_calls == [text]
    served = model.predict_served([Input(text, LABELS, TASK_TYPE, _unit(np.ones(EMBEDDING_DIM)))])[0]
    assert decision is not None and (decision.label, decision.confidence) == (served.label, served.confidence)


@pytest.mark.django_db
def test_a_sure_n_gram_answer_below_the_threshold_goes_to_the_llm_even_if_the_mixed_model_is_surer(
    settings, embed_calls
):
    settings.DUKE_AUDIT_RATE = 0.0
    model = _ngram_first_model(0.5)
    alone = model.predict([Input(SPORTS, LABELS, TASK_TYPE)])[0]
    install_production(
        data=model.to_bytes(), thresholds={TASK_TYPE: {"threshold": min(1.0, alone.confidence + 1e-6)}}
    )
    assert router.route(text=SPORTS, labels=LABELS, task_type=TASK_TYPE) is None
    assert embed_calls == []  # the rule it was certified on says no, whatever the embedding would say
