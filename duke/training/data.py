"""The training data as tensors, their cross-fitting splits, and the held-out scores."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from duke.model import ModelConfig, Sample, build_dense, build_ngrams
from duke.training.config import TrainConfig


@dataclass
class DenseData:
    """What the embedding view needs; built before the n-gram ids, which take far longer."""

    emb: torch.Tensor
    has_emb: torch.Tensor
    mask: torch.Tensor
    target: torch.Tensor


@dataclass
class NgramData:
    ids: torch.Tensor  # all samples' n-gram ids, flat, sample after sample
    weights: torch.Tensor
    starts: torch.Tensor  # where each sample's ids begin in `ids`
    lengths: torch.Tensor
    mask: torch.Tensor
    target: torch.Tensor


@dataclass
class Rows:
    ids: torch.Tensor
    offsets: torch.Tensor
    weights: torch.Tensor
    seg: torch.Tensor  # which row of the batch each id belongs to
    mask: torch.Tensor
    target: torch.Tensor


def dense_data(samples: Sequence[Sample], config: ModelConfig, label_index: dict[str, int]) -> DenseData:
    emb, has_emb, mask = build_dense(samples, config, label_index)
    target = torch.tensor([label_index[s.label] for s in samples], dtype=torch.long)
    return DenseData(emb, has_emb, mask, target)


def ngram_data(samples: Sequence[Sample], config: ModelConfig, dense: DenseData) -> NgramData:
    # Cached: a retraining sees again every sample the previous one saw.
    ids, offsets, weights = build_ngrams(samples, config, cache=True)
    ends = torch.cat([offsets[1:], torch.tensor([ids.shape[0]])]) if len(samples) else offsets
    return NgramData(ids, weights, offsets, ends - offsets, dense.mask, dense.target)


def rows_of(data: NgramData, idx: torch.Tensor) -> Rows:
    # Vectorised gather of the selected samples' ids: one index array instead of a Python loop.
    lengths = data.lengths[idx]
    offsets = torch.cumsum(lengths, 0) - lengths
    seg = torch.repeat_interleave(torch.arange(len(idx)), lengths)
    positions = torch.arange(int(lengths.sum())) + (data.starts[idx] - offsets)[seg]
    return Rows(
        data.ids[positions],
        offsets,
        data.weights[positions],
        seg,
        data.mask[idx],
        data.target[idx],
    )


def batches(data: NgramData, order: torch.Tensor, batch_size: int) -> Iterator[Rows]:
    """`rows_of` of each batch of `order`, gathered for the whole epoch at once and sliced.

    One gather of ~2M ids per epoch instead of ~90 small ones: the per-batch index arithmetic was a
    seventh of an R8 epoch.
    """
    rows = rows_of(data, order)
    bounds = [*rows.offsets.tolist(), len(rows.ids)]
    for start in range(0, len(order), batch_size):
        stop = min(start + batch_size, len(order))
        lo, hi = bounds[start], bounds[stop]
        yield Rows(
            rows.ids[lo:hi],
            rows.offsets[start:stop] - lo,
            rows.weights[lo:hi],
            rows.seg[lo:hi] - start,
            rows.mask[start:stop],
            rows.target[start:stop],
        )


def folds_for(samples: Sequence[Sample], cfg: TrainConfig, seed: int) -> list[tuple[list[int], list[int]]]:
    """(train, held-out) index lists, stratified by label.

    K folds: labels with one sample are never held out. One slice: labels with < 3 samples never are.
    """
    n = len(samples)
    rng = np.random.RandomState(seed)
    by_label: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        by_label.setdefault(s.label, []).append(i)
    if n < cfg.cv_below:
        k = cfg.folds if n < cfg.fewer_folds_from else cfg.fewer_folds
        if n < 2 * k:
            return []
        assignment = np.full(n, -1)
        start = 0
        for label in sorted(by_label):
            members = by_label[label]
            if len(members) < 2:
                # Its only sample's fold would never have seen the label.
                continue
            # Deal the shuffled members round-robin, continuing where the previous label stopped,
            # so folds stay balanced in size as well as in labels.
            for j, i in enumerate(rng.permutation(members)):
                assignment[i] = (start + j) % k
            start = (start + len(members)) % k
        folds = []
        for f in range(k):
            held = np.flatnonzero(assignment == f).tolist()
            if held:
                folds.append(([i for i in range(n) if assignment[i] != f], held))
        return folds
    fraction = min(cfg.holdout_fraction, cfg.max_holdout / n)
    held: list[int] = []
    for label in sorted(by_label):
        members = by_label[label]
        if len(members) < 3:
            continue
        take = max(1, int(round(fraction * len(members))))
        held.extend(rng.permutation(members)[:take].tolist())
    held_set = set(held)
    return [([i for i in range(n) if i not in held_set], sorted(held))]


def mean_nll(logits: np.ndarray, target: np.ndarray) -> float:
    top = logits.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return float(np.mean(log_norm - logits[np.arange(len(target)), target]))


def score_logits(logits: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """(accuracy, -NLL): accuracy is what we are judged on, NLL breaks its frequent ties."""
    acc = float(np.mean(logits.argmax(1) == target)) if len(target) else 0.0
    return acc, -mean_nll(logits, target)
