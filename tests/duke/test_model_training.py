"""Duke's head: training, masking, determinism and artifacts, on small synthetic data (no database)."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch

from duke.encoder import EMBEDDING_DIM
from duke.model import Input, Prediction, Sample, TrainedModel
from duke.training import TrainConfig, train
from duke.training.ngram_view import SparseAdagrad

LABEL_SETS = {"sentiment": ("neg", "pos"), "topic": ("politics", "sports", "tech")}
CUES = {
    "pos": ["great", "superb", "loved", "wonderful", "moving"],
    "neg": ["awful", "boring", "hated", "terrible", "dull"],
    "politics": ["vote", "senate", "policy", "election", "minister"],
    "sports": ["match", "goal", "team", "coach", "league"],
    "tech": ["software", "chip", "startup", "cloud", "server"],
}
FILLER = "the a of and to in it was this that on for with as by at from".split()
_CENTROIDS = {
    label: v / np.linalg.norm(v)
    for label, v in zip(CUES, np.random.default_rng(42).normal(size=(len(CUES), EMBEDDING_DIM)), strict=True)
}


def make_samples(n: int, seed: int, *, embedding: str = "all") -> list[Sample]:
    """Texts with two cue words of their label among filler; embeddings near a per-label centroid.

    embedding: "all", "none" or "some" (every third sample has none).
    """
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        task = "sentiment" if i % 2 else "topic"
        label = str(rng.choice(LABEL_SETS[task]))
        words = list(rng.choice(FILLER, size=6)) + list(rng.choice(CUES[label], size=2))
        rng.shuffle(words)
        vec = _CENTROIDS[label] + rng.normal(scale=0.06, size=EMBEDDING_DIM)
        vec = (vec / np.linalg.norm(vec)).astype(np.float32)
        keep = embedding == "all" or (embedding == "some" and i % 3)
        samples.append(Sample(" ".join(words), label, LABEL_SETS[task], task, vec if keep else None))
    return samples


@pytest.fixture(scope="module")
def trained() -> TrainedModel:
    return train(make_samples(120, seed=1), seed=0, max_epochs=6)


def _accuracy(model: TrainedModel, samples: list[Sample]) -> float:
    return float(np.mean([p.label == s.label for p, s in zip(model.predict(samples), samples, strict=True)]))


def test_it_learns_every_task_type_with_one_model(trained: TrainedModel) -> None:
    assert trained.labels == sorted(CUES)
    test = make_samples(120, seed=2)
    assert _accuracy(trained, test) >= 0.9
    for task in LABEL_SETS:
        assert _accuracy(trained, [s for s in test if s.task_type == task]) >= 0.85


def test_it_never_predicts_a_label_outside_the_input_label_set(trained: TrainedModel) -> None:
    politics = [s for s in make_samples(60, seed=3) if s.label == "politics"]
    # Ask about politics texts while offering only two other labels: the best one is off the table.
    inputs = [Input(s.text, ("sports", "tech"), "topic", s.embedding) for s in politics]
    for prediction in trained.predict(inputs):
        assert prediction.label in {"sports", "tech"}
        assert set(prediction.probabilities) == {"sports", "tech"}
        assert sum(prediction.probabilities.values()) == pytest.approx(1.0)
        assert prediction.confidence == max(prediction.probabilities.values())


def test_it_returns_no_label_when_none_of_the_labels_is_known(trained: TrainedModel) -> None:
    unseen, partly = trained.predict(
        [
            Input("a cat sat", ("cat", "dog"), "animals"),
            Input("loved it, superb", ("pos", "meh"), "sentiment"),
        ]
    )
    assert unseen == Prediction(label=None, confidence=0.0, probabilities={"cat": 0.0, "dog": 0.0})
    assert partly.label == "pos" and partly.probabilities == {"pos": 1.0, "meh": 0.0}
    assert trained.predict([Input("anything", (), "")])[0].label is None


def test_it_accepts_samples_as_inputs_and_ignores_their_label(trained: TrainedModel) -> None:
    sample = make_samples(1, seed=4)[0]
    relabelled = dataclasses.replace(sample, label="tech")
    as_input = Input(sample.text, sample.label_set, sample.task_type, sample.embedding)
    assert trained.predict([sample]) == trained.predict([relabelled]) == trained.predict([as_input])


def test_it_is_deterministic_for_the_same_seed() -> None:
    samples = make_samples(80, seed=5, embedding="some")
    first, second = (train(samples, seed=7, max_epochs=4) for _ in range(2))
    test = make_samples(40, seed=6, embedding="some")
    assert first.predict(test) == second.predict(test)
    volatile = {"train_seconds"}
    assert {k: v for k, v in first.metadata.items() if k not in volatile} == {
        k: v for k, v in second.metadata.items() if k not in volatile
    }
    assert first.to_bytes() == second.to_bytes() or _same_weights(first, second)


@pytest.mark.parametrize("cv_below", [1000, 50], ids=["cross-fitted", "one held-out slice"])
def test_it_trains_the_same_weights_on_one_core_or_two(
    monkeypatch: pytest.MonkeyPatch, cv_below: int
) -> None:
    # With two cores the embedding view is fitted in a second thread: that must not change a weight.
    samples = make_samples(80, seed=5, embedding="some")
    config = TrainConfig(cv_below=cv_below)
    threads = torch.get_num_threads()
    monkeypatch.setenv("DUKE_TORCH_THREADS", "2")
    two = train(samples, seed=3, max_epochs=3, config=config)
    monkeypatch.setenv("DUKE_TORCH_THREADS", "1")
    one = train(samples, seed=3, max_epochs=3, config=config)
    assert _same_weights(one, two)
    assert one.metadata["c_emb"] == two.metadata["c_emb"]
    assert torch.get_num_threads() == threads  # training hands the thread setting back


def _same_weights(a: TrainedModel, b: TrainedModel) -> bool:
    sa, sb = a.net.state_dict(), b.net.state_dict()
    return all(bool((sa[k] == sb[k]).all()) for k in sa)


def test_it_round_trips_through_bytes_with_identical_predictions(trained: TrainedModel) -> None:
    blob = trained.to_bytes()
    assert len(blob) < 10 * 1024 * 1024
    loaded = TrainedModel.from_bytes(blob)
    assert loaded.labels == trained.labels
    assert loaded.metadata == trained.metadata
    test = make_samples(40, seed=8, embedding="some")
    assert loaded.predict(test) == trained.predict(test)


def test_it_refuses_an_artifact_of_another_format(trained: TrainedModel) -> None:
    with pytest.raises(Exception):  # noqa: B017 - any failure to load is fine, silence is not
        TrainedModel.from_bytes(b"not a model")


def test_it_works_without_any_embedding() -> None:
    model = train(make_samples(100, seed=9, embedding="none"), seed=0, max_epochs=10)
    test = make_samples(60, seed=10, embedding="none")
    assert _accuracy(model, test) >= 0.85
    # An embedding the model never learnt to use must not change its answers.
    with_emb = make_samples(60, seed=10, embedding="all")
    assert [p.label for p in model.predict(with_emb)] == [p.label for p in model.predict(test)]


def test_it_falls_back_to_ngrams_for_inputs_without_embedding(trained: TrainedModel) -> None:
    test = make_samples(60, seed=11, embedding="none")
    assert _accuracy(trained, test) >= 0.8


def test_it_reports_progress_each_epoch() -> None:
    calls: list[tuple[int, int]] = []
    train(make_samples(40, seed=12), seed=0, max_epochs=2, progress=lambda done, of: calls.append((done, of)))
    assert calls, "progress was never called"
    dones = [d for d, _ in calls]
    assert dones == sorted(dones) and dones[0] == 1
    assert calls[-1][0] == calls[-1][1]
    assert all(done <= of for done, of in calls)


def test_it_refuses_to_train_on_nothing() -> None:
    with pytest.raises(ValueError):
        train([])


def test_it_trains_on_a_handful_of_samples() -> None:
    model = train(make_samples(6, seed=13), seed=0, max_epochs=3)
    assert {p.label for p in model.predict(make_samples(6, seed=13))} <= set(CUES)


def test_it_still_loads_an_artifact_of_format_1(trained: TrainedModel) -> None:
    # Format 1 predates the length token: its config has no `length_weight` and it was trained without.
    legacy = TrainedModel(
        trained.net.__class__(dataclasses.replace(trained.config, length_weight=0.0)),
        trained.labels,
        trained.temperature,
        trained.metadata,
        trained.temperature_ngram_only,
    )
    legacy.net.load_state_dict(trained.net.state_dict())
    payload = torch.load(io.BytesIO(legacy.to_bytes()), weights_only=True)
    payload["format"] = 1
    del payload["config"]["length_weight"]
    buf = io.BytesIO()
    torch.save(payload, buf)
    loaded = TrainedModel.from_bytes(buf.getvalue())
    assert loaded.config.length_weight == 0.0
    test = make_samples(40, seed=14, embedding="some")
    assert loaded.predict(test) == legacy.predict(test)


def test_it_refuses_an_artifact_of_an_unknown_format_by_name(trained: TrainedModel) -> None:
    payload = torch.load(io.BytesIO(trained.to_bytes()), weights_only=True)
    payload["format"] = 99
    buf = io.BytesIO()
    torch.save(payload, buf)
    with pytest.raises(ValueError, match="unsupported Duke artifact format 99"):
        TrainedModel.from_bytes(buf.getvalue())


def test_it_finds_a_batchs_unique_rows_like_torch_unique() -> None:
    optimiser = SparseAdagrad(torch.zeros((1 << 12, 4)), lr=0.1)
    ids = torch.randint(0, 1 << 12, (5000,), generator=torch.Generator().manual_seed(3))
    expected_rows, expected_inverse = torch.unique(ids, return_inverse=True)
    rows, inverse = optimiser._unique_rows(ids)
    assert torch.equal(rows, expected_rows) and torch.equal(inverse, expected_inverse)
