"""Duke's classifier: one small torch head for every task type. Pure torch/numpy: no Django import.

Two views of a text feed the head:
- hashed word uni/bigrams and character n-grams through an `nn.EmbeddingBag` (fastText-style);
- the MiniLM sentence embedding, when the caller has one (it is optional per input).
Each view produces label logits; the head adds them with weights fitted on held-out data (see
training.py). An input without embedding is answered by the n-gram view alone. The label vocabulary
is global (all task types) and logits are masked to each input's own label set, so a label outside
the set is never predicted. The task type is also a feature (a hashed token in the bag).
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from duke.encoder import EMBEDDING_DIM, torch_threads
from duke.features import CHAR_NGRAM_SIZES, DEFAULT_BUCKETS, LENGTH_WEIGHT, MAX_TOKENS, extract_batch

# 2 added ModelConfig.length_weight. Format 1 artifacts still load: their config has no such key and
# the default (no length token) is exactly how they were trained. Older code refuses format 2 by
# number instead of failing on an unknown config key.
ARTIFACT_FORMAT = 2
READABLE_FORMATS = (1, 2)
_PREDICT_BATCH = 512


@dataclass(frozen=True)
class Sample:
    """One labelled example. `label_set` is the set of labels the task offered (order irrelevant)."""

    text: str
    label: str
    label_set: tuple[str, ...]
    task_type: str = ""
    embedding: np.ndarray | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Input:
    """What `TrainedModel.predict` needs; a `Sample` is accepted too (its label is ignored)."""

    text: str
    label_set: tuple[str, ...]
    task_type: str = ""
    embedding: np.ndarray | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Prediction:
    """`label` is None (and confidence 0) when none of the input's labels is known to the model.

    `probabilities` covers every label of the input's set; labels the model never saw get 0.0.
    """

    label: str | None
    confidence: float
    probabilities: dict[str, float]


@dataclass(frozen=True)
class OutOfFold:
    """Cross-fitted predictions on the training samples: each made by a model that never saw its sample.

    Rows are the samples at `index` (positions in the training list); `predicted` indexes the model's
    labels. Kept in memory only (an artifact never stores them): they calibrate and gate the version.
    """

    index: np.ndarray
    predicted: np.ndarray
    confidence: np.ndarray
    has_embedding: np.ndarray
    # The n-gram view alone (its own temperature), as `predict` answers a text without an embedding.
    ngram_predicted: np.ndarray | None = None
    ngram_confidence: np.ndarray | None = None

    def served(self, ngram_first: float | None) -> tuple[np.ndarray, np.ndarray]:
        """(predicted, confidence) under `TrainedModel.predict_served`'s rule with this `ngram_first`."""
        if ngram_first is None or self.ngram_confidence is None or self.ngram_predicted is None:
            return self.predicted, self.confidence
        first = self.ngram_confidence >= ngram_first
        return (
            np.where(first, self.ngram_predicted, self.predicted),
            np.where(first, self.ngram_confidence, self.confidence),
        )


@dataclass(frozen=True)
class ModelConfig:
    n_buckets: int = DEFAULT_BUCKETS
    ngram_dim: int = 16
    embedding_dim: int = EMBEDDING_DIM
    n_labels: int = 0
    char_sizes: tuple[int, ...] = CHAR_NGRAM_SIZES
    max_tokens: int = MAX_TOKENS
    use_task_type_feature: bool = True
    # Must default to the format-1 behaviour (see ARTIFACT_FORMAT); training sets its own value.
    length_weight: float = LENGTH_WEIGHT

    def __post_init__(self) -> None:
        # Artifacts store the config as plain data, where tuples come back as lists.
        object.__setattr__(self, "char_sizes", tuple(self.char_sizes))


def set_torch_threads() -> None:
    threads = torch_threads()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


class DukeNet(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        # Trained with a hand-written sparse update (see training.py), hence no `sparse=True` here.
        # Weighted sum with weights count/total = the mean over a text's n-grams (fastText's bag).
        self.bag = nn.EmbeddingBag(config.n_buckets, config.ngram_dim, mode="sum")
        self.ngram_out = nn.Linear(config.ngram_dim, config.n_labels)
        self.emb_out = nn.Linear(config.embedding_dim, config.n_labels)
        # How much each view's logits count at prediction time; fitted on held-out data after training.
        self.register_buffer("mix", torch.ones(2))

    def views(
        self, ids: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor, emb: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        bag = self.bag(ids, offsets, per_sample_weights=weights)
        return self.ngram_out(bag), self.emb_out(emb)

    def forward(
        self,
        ids: torch.Tensor,
        offsets: torch.Tensor,
        weights: torch.Tensor,
        emb: torch.Tensor,
        has_emb: torch.Tensor,
    ) -> torch.Tensor:
        ngram_logits, emb_logits = self.views(ids, offsets, weights, emb)
        # Without an embedding the n-gram view answers alone, at full weight.
        w_ng = torch.where(has_emb > 0, self.mix[0], torch.ones_like(has_emb))
        return w_ng.unsqueeze(1) * ngram_logits + (has_emb * self.mix[1]).unsqueeze(1) * emb_logits


@dataclass
class Batch:
    ids: torch.Tensor
    offsets: torch.Tensor
    weights: torch.Tensor
    emb: torch.Tensor
    has_emb: torch.Tensor
    mask: torch.Tensor  # bool (N, n_labels): True where the label belongs to the input's set


def build_dense(
    inputs: Sequence[Sample | Input], config: ModelConfig, label_index: dict[str, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(embeddings, has-embedding flags, label mask) of a batch: everything but the n-gram ids.

    Separate from `build_ngrams` so training can start fitting the embedding view while the (much
    slower) n-gram extraction runs.
    """
    embs, has, mask = [], [], np.zeros((len(inputs), config.n_labels), dtype=bool)
    for i, inp in enumerate(inputs):
        embedding = inp.embedding
        if embedding is None:
            embs.append(np.zeros(config.embedding_dim, dtype=np.float32))
            has.append(0.0)
        else:
            vec = np.asarray(embedding, dtype=np.float32).reshape(-1)
            if vec.shape[0] != config.embedding_dim:
                raise ValueError(f"embedding has {vec.shape[0]} dims, expected {config.embedding_dim}")
            embs.append(vec)
            has.append(1.0)
        for label in inp.label_set:
            j = label_index.get(label)
            if j is not None:
                mask[i, j] = True
    return (
        torch.from_numpy(np.stack(embs)) if embs else torch.zeros((0, config.embedding_dim)),
        torch.tensor(has, dtype=torch.float32),
        torch.from_numpy(mask),
    )


def build_ngrams(
    inputs: Sequence[Sample | Input], config: ModelConfig, *, cache: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, offsets, per-id weights) of a batch for the n-gram bag; `cache` as in `extract_batch`."""
    extras = [(f"task:{inp.task_type}",) if config.use_task_type_feature else () for inp in inputs]
    ids, offsets, weights = extract_batch(
        [inp.text for inp in inputs],
        config.n_buckets,
        extras,
        char_sizes=config.char_sizes,
        max_tokens=config.max_tokens,
        length_weight=config.length_weight,
        cache=cache,
    )
    return torch.from_numpy(ids), torch.from_numpy(offsets), torch.from_numpy(weights)


def build_batch(inputs: Sequence[Sample | Input], config: ModelConfig, label_index: dict[str, int]) -> Batch:
    ids, offsets, weights = build_ngrams(inputs, config)
    emb, has_emb, mask = build_dense(inputs, config, label_index)
    return Batch(ids=ids, offsets=offsets, weights=weights, emb=emb, has_emb=has_emb, mask=mask)


def masked(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return logits.masked_fill(~mask, float("-inf"))


class TrainedModel:
    """A trained head plus everything needed to use it: label vocabulary, config, temperatures.

    `temperature` applies to inputs with an embedding, `temperature_ngram_only` to inputs without.
    `predict` never computes embeddings itself: callers encode with `duke.encoder.encode_texts`
    (or pass the stored embedding) so that the math stays free of the 90 MB encoder.
    """

    def __init__(
        self,
        net: DukeNet,
        labels: Sequence[str],
        temperature: float = 1.0,
        metadata: dict[str, Any] | None = None,
        temperature_ngram_only: float | None = None,
    ) -> None:
        self.net = net.eval()
        with torch.no_grad():
            # The artifact stores the n-gram table at half precision (it is most of the bytes); round
            # it here too so that a model and its reloaded artifact predict exactly alike.
            net.bag.weight.copy_(net.bag.weight.half().float())
        self.labels: list[str] = list(labels)
        self.label_index = {label: i for i, label in enumerate(self.labels)}
        self.temperature = float(temperature)
        self.temperature_ngram_only = float(
            temperature if temperature_ngram_only is None else temperature_ngram_only
        )
        # Plain JSON-able data only (tuples become lists), exactly as it comes back from an artifact.
        self.metadata: dict[str, Any] = json.loads(json.dumps(metadata or {}, default=str))
        # Set by training; never stored in an artifact (a loaded model has none).
        self.out_of_fold: OutOfFold | None = None

    @property
    def config(self) -> ModelConfig:
        return self.net.config

    def logits(self, inputs: Sequence[Sample | Input]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Untempered masked logits (-inf outside each input's set), the mask and has-embedding flags."""
        inputs = list(inputs)
        if len(inputs) > 4:
            # A batch uses the cores; one text (a request) runs on the thread count the process has,
            # so that concurrent requests never flip torch's process-wide setting under each other.
            set_torch_threads()
        out_logits, out_mask, out_has = [], [], []
        with torch.inference_mode():
            for start in range(0, len(inputs), _PREDICT_BATCH):
                batch = build_batch(inputs[start : start + _PREDICT_BATCH], self.config, self.label_index)
                logits = self.net(batch.ids, batch.offsets, batch.weights, batch.emb, batch.has_emb)
                out_logits.append(masked(logits, batch.mask).numpy())
                out_mask.append(batch.mask.numpy())
                out_has.append(batch.has_emb.numpy() > 0)
        if not out_logits:
            empty = np.zeros((0, len(self.labels)), dtype=np.float32)
            return empty, empty.astype(bool), np.zeros(0, dtype=bool)
        return np.concatenate(out_logits), np.concatenate(out_mask), np.concatenate(out_has)

    def predict(self, inputs: Sequence[Sample | Input]) -> list[Prediction]:
        inputs = list(inputs)
        logits, mask, has_emb = self.logits(inputs)
        predictions = []
        for inp, row, row_mask, row_has in zip(inputs, logits, mask, has_emb, strict=True):
            probs = {label: 0.0 for label in inp.label_set}
            if not row_mask.any():
                predictions.append(Prediction(label=None, confidence=0.0, probabilities=probs))
                continue
            temperature = self.temperature if row_has else self.temperature_ngram_only
            scaled = row[row_mask].astype(np.float64) / temperature
            p = np.exp(scaled - scaled.max())
            p /= p.sum()
            known = [self.labels[j] for j in np.flatnonzero(row_mask)]
            for label, value in zip(known, p, strict=True):
                probs[label] = float(value)
            best = int(np.argmax(p))
            predictions.append(Prediction(label=known[best], confidence=float(p[best]), probabilities=probs))
        return predictions

    @property
    def ngram_first(self) -> float | None:
        """The n-gram-first cut the version was certified with (None: the mixed model answers every text)."""
        value = self.metadata.get("ngram_first")
        return None if value is None else float(value)

    def predict_served(self, inputs: Sequence[Sample | Input]) -> list[Prediction]:
        """What routing serves: the n-gram view's answer when its confidence reaches `ngram_first`, else
        `predict`'s with the input's embedding. Thresholds are certified on exactly this rule."""
        inputs = list(inputs)
        kappa = self.ngram_first
        if kappa is None:
            return self.predict(inputs)
        bare = [Input(i.text, tuple(i.label_set), i.task_type, None) for i in inputs]
        alone = self.predict(bare)
        rest = [
            k
            for k, (inp, p) in enumerate(zip(inputs, alone, strict=True))
            if p.confidence < kappa and inp.embedding is not None
        ]
        for k, p in zip(rest, self.predict([inputs[k] for k in rest]), strict=True):
            alone[k] = p
        return alone

    def _emb_gap_bounds(self) -> np.ndarray:
        """|mix_emb| * ||W_k - W_a|| for every label pair: how far a unit embedding can move a logit gap."""
        cached = getattr(self, "_gap_bounds", None)
        if cached is None:
            weight = self.net.emb_out.weight.detach().double().numpy()
            diff = weight[:, None, :] - weight[None, :, :]
            cached = abs(float(self.net.mix[1])) * np.sqrt((diff**2).sum(-1))
            self._gap_bounds = cached
        return cached

    def decide_without_embedding(self, inp: Input, threshold: float) -> Prediction | None:
        """The answer `predict` gives WITH the text's embedding, when the n-gram view alone settles it.

        The embedding view's logits are W e + b for a unit vector e (the encoder L2-normalises), so the
        gap between labels k and a moves by at most ||W_k - W_a|| whatever the text's embedding is. If
        label a's probability stays >= `threshold` (and > 1/2, so a is the arg max) even when every other
        label's gap is at its worst, the full model answers a with confidence >= `threshold` for EVERY
        possible embedding: the certified decision, without running the encoder. The returned confidence
        is that lower bound (the true one is at least as high). None: the embedding is needed.
        """
        if not inp.label_set or not all(label in self.label_index for label in inp.label_set):
            return None
        with torch.inference_mode():
            ids, offsets, weights = build_ngrams([inp], self.config)
            bag = self.net.bag(ids, offsets, per_sample_weights=weights)
            ngram = self.net.ngram_out(bag)[0].double().numpy()
        mix = self.net.mix.double().numpy()
        bias = self.net.emb_out.bias.detach().double().numpy()
        cols = np.asarray(sorted({self.label_index[label] for label in inp.label_set}))
        centre = mix[0] * ngram[cols] + mix[1] * bias[cols]
        a = int(np.argmax(centre))
        others = np.delete(np.arange(len(cols)), a)
        if others.size == 0:
            return None
        # Float32 arithmetic in `predict` vs float64 here: a margin far above either's rounding error.
        worst_gap = centre[others] - centre[a] + self._emb_gap_bounds()[cols[others], cols[a]] * (1 + 1e-4)
        scaled = worst_gap / self.temperature
        top = max(0.0, float(scaled.max()))
        lower = float(np.exp(-top) / (np.exp(-top) + np.exp(scaled - top).sum()))
        if lower <= 0.5 or lower < threshold + 1e-6:
            return None
        label = self.labels[int(cols[a])]
        return Prediction(label=label, confidence=lower, probabilities={label: lower})

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        state = {k: v.detach().clone() for k, v in self.net.state_dict().items() if k != "bag.weight"}
        table = self.net.bag.weight.detach()
        # Buckets no training text hit are still exactly zero: store only the used rows when that
        # is smaller, which keeps artifacts well under 10 MB.
        used = torch.nonzero(table.abs().sum(1) > 0).flatten().to(torch.int32)
        if len(used) * (table.shape[1] * 2 + 4) < table.numel() * 2:
            state["bag.rows"] = used
            state["bag.values"] = table[used.long()].half()
        else:
            state["bag.values"] = table.half()
        torch.save(
            {
                "format": ARTIFACT_FORMAT,
                "config": asdict(self.config),
                "labels": list(self.labels),
                "temperature": self.temperature,
                "temperature_ngram_only": self.temperature_ngram_only,
                "metadata": self.metadata,
                "state_dict": state,
            },
            buf,
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, b: bytes) -> TrainedModel:
        # weights_only: an artifact is data, never code, even if someone swaps the file on disk.
        payload = torch.load(io.BytesIO(b), map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") not in READABLE_FORMATS:
            found = payload.get("format") if isinstance(payload, dict) else None
            raise ValueError(
                f"unsupported Duke artifact format {found!r} (this code reads {READABLE_FORMATS}); "
                "retrain the model or load it with the code that wrote it"
            )
        config = ModelConfig(**payload["config"])
        state = dict(payload["state_dict"])
        values = state.pop("bag.values").float()
        rows = state.pop("bag.rows", None)
        if rows is None:
            table = values
        else:
            table = torch.zeros((config.n_buckets, config.ngram_dim))
            table[rows.long()] = values
        state["bag.weight"] = table
        net = DukeNet(config)
        net.load_state_dict(state)
        return cls(
            net,
            payload["labels"],
            payload["temperature"],
            payload["metadata"],
            payload["temperature_ngram_only"],
        )
