"""Training Duke's head. Pure torch/numpy: no Django import.

The two views are fitted separately and then mixed, because what works for one hurts the other:
- the embedding view is a multinomial logistic regression solved exactly (L-BFGS, full batch) with its
  L2 strength chosen on held-out data, since the right prior differs a lot between task types;
- the n-gram view is fastText-style (hashed n-grams -> EmbeddingBag -> linear), trained with
  sparse Adagrad and early stopping.
Held-out data (K-fold cross-fitting below `cv_below` samples, one stratified slice above) chooses the
L2 strength, the number of n-gram epochs, the weight of each view and the temperatures. The
embedding view is then refitted on every sample given; the n-gram view too below `refit_below`
samples (above, it keeps its best held-out epoch: retraining would double the time for ~0.1 point).
The caller's own validation split never reaches this module.

The views share nothing until they are mixed, so with two cores the embedding view is fitted in a
second thread while this one extracts the n-grams and trains their view; every op runs on one
thread, so the weights are the same whether there is one core or two.

`train` is deterministic: the same seed and the same samples in the same order give the same
weights, metrics and predictions.
"""

from __future__ import annotations

import copy
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from duke.calibration import accuracy, fit_temperature
from duke.encoder import torch_threads
from duke.features import CHAR_NGRAM_SIZES
from duke.model import (
    DukeNet,
    ModelConfig,
    Sample,
    TrainedModel,
    build_dense,
    build_ngrams,
    masked,
)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters; the defaults were tuned on the R8 and Rotten Tomatoes learning curves."""

    n_buckets: int = 1 << 18
    ngram_dim: int = 16
    char_sizes: tuple[int, ...] = CHAR_NGRAM_SIZES
    max_tokens: int = 400
    # Weight of the log2 length-bucket token in the n-gram bag (0 leaves it out): chosen on
    # cross-validation inside the training splits, see docs/BENCHMARKS.md.
    length_weight: float = 0.5
    # Cross-fitting folds below this many samples (cheap there, and a single slice is too noisy).
    cv_below: int = 1000
    folds: int = 5
    holdout_fraction: float = 0.1
    max_holdout: int = 1000
    # Inverse L2 strengths tried for the embedding view (scikit-learn's C convention).
    c_grid: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0)
    lbfgs_iters: int = 200
    lr_bag: float = 0.3
    lr_head: float = 0.03
    weight_decay: float = 1e-4
    max_epochs: int = 40
    min_steps: int = 300
    max_batch: int = 64
    patience: int = 6
    # With one large held-out slice an epoch is expensive and the held-out score is less noisy.
    patience_holdout: int = 2
    # Below this many samples the n-gram view is retrained on all of them once the epoch count is
    # known; above it the held-out slice costs little accuracy and retraining would double the time.
    refit_below: int = 2000
    mix_by_nll: bool = True
    c_by_nll: bool = True


@dataclass
class _Dense:
    """What the embedding view needs; built before the n-gram ids, which take far longer."""

    emb: torch.Tensor
    has_emb: torch.Tensor
    mask: torch.Tensor
    target: torch.Tensor


@dataclass
class _Data:
    ids: torch.Tensor  # all samples' n-gram ids, flat, sample after sample
    weights: torch.Tensor
    starts: torch.Tensor  # where each sample's ids begin in `ids`
    lengths: torch.Tensor
    mask: torch.Tensor
    target: torch.Tensor


@dataclass
class _Rows:
    ids: torch.Tensor
    offsets: torch.Tensor
    weights: torch.Tensor
    seg: torch.Tensor  # which row of the batch each id belongs to
    mask: torch.Tensor
    target: torch.Tensor


def _dense(samples: Sequence[Sample], config: ModelConfig, label_index: dict[str, int]) -> _Dense:
    emb, has_emb, mask = build_dense(samples, config, label_index)
    target = torch.tensor([label_index[s.label] for s in samples], dtype=torch.long)
    return _Dense(emb, has_emb, mask, target)


def _ngrams(samples: Sequence[Sample], config: ModelConfig, dense: _Dense) -> _Data:
    # Cached: a retraining sees again every sample the previous one saw.
    ids, offsets, weights = build_ngrams(samples, config, cache=True)
    ends = torch.cat([offsets[1:], torch.tensor([ids.shape[0]])]) if len(samples) else offsets
    return _Data(ids, weights, offsets, ends - offsets, dense.mask, dense.target)


def _rows(data: _Data, idx: torch.Tensor) -> _Rows:
    # Vectorised gather of the selected samples' ids: one index array instead of a Python loop.
    lengths = data.lengths[idx]
    offsets = torch.cumsum(lengths, 0) - lengths
    seg = torch.repeat_interleave(torch.arange(len(idx)), lengths)
    positions = torch.arange(int(lengths.sum())) + (data.starts[idx] - offsets)[seg]
    return _Rows(
        data.ids[positions],
        offsets,
        data.weights[positions],
        seg,
        data.mask[idx],
        data.target[idx],
    )


def _batches(data: _Data, order: torch.Tensor, batch_size: int) -> Iterator[_Rows]:
    """`_rows` of each batch of `order`, gathered for the whole epoch at once and sliced.

    One gather of ~2M ids per epoch instead of ~90 small ones: the per-batch index arithmetic was a
    seventh of an R8 epoch.
    """
    rows = _rows(data, order)
    bounds = [*rows.offsets.tolist(), len(rows.ids)]
    for start in range(0, len(order), batch_size):
        stop = min(start + batch_size, len(order))
        lo, hi = bounds[start], bounds[stop]
        yield _Rows(
            rows.ids[lo:hi],
            rows.offsets[start:stop] - lo,
            rows.weights[lo:hi],
            rows.seg[lo:hi] - start,
            rows.mask[start:stop],
            rows.target[start:stop],
        )


# ---------------------------------------------------------------------------------------------------
# Splits


def _folds(samples: Sequence[Sample], cfg: TrainConfig, seed: int) -> list[tuple[list[int], list[int]]]:
    """(train, held-out) index lists, stratified by label; labels with < 3 samples never held out."""
    n = len(samples)
    rng = np.random.RandomState(seed)
    by_label: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        by_label.setdefault(s.label, []).append(i)
    if n < cfg.cv_below:
        k = cfg.folds
        if n < 2 * k:
            return []
        assignment = np.full(n, -1)
        start = 0
        for label in sorted(by_label):
            members = by_label[label]
            if len(members) < 3:
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


# ---------------------------------------------------------------------------------------------------
# Embedding view: L2-regularised multinomial logistic regression


def _fit_logreg(
    x: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    c: float,
    n_labels: int,
    iters: int,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise mean CE + ||W||^2 / (2 C n), as scikit-learn's LogisticRegression (bias unpenalised)."""
    w = torch.zeros((n_labels, x.shape[1])) if init is None else init[0].clone()
    b = torch.zeros(n_labels) if init is None else init[1].clone()
    w.requires_grad_(True)
    b.requires_grad_(True)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=iters,
        tolerance_grad=1e-6,
        tolerance_change=1e-10,
        line_search_fn="strong_wolfe",
    )
    n = x.shape[0]

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = masked(x @ w.T + b, mask)
        loss = F.cross_entropy(logits, target) + w.square().sum() / (2 * c * n)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def _emb_logits(x: torch.Tensor, wb: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return x @ wb[0].T + wb[1]


# ---------------------------------------------------------------------------------------------------
# N-gram view: fastText-style bag trained with sparse Adagrad


class _SparseAdagrad:
    """Adagrad on the rows of the n-gram table that a batch touches.

    torch's sparse EmbeddingBag gradients + SparseAdam spend ~0.3 s per batch coalescing on long
    texts; aggregating the rows ourselves keeps a 5k-sample retrain within seconds. Adagrad suits
    hashed n-grams: rare n-grams keep large steps, frequent ones settle.
    """

    def __init__(self, weight: torch.Tensor, lr: float) -> None:
        self.weight = weight
        self.lr = lr
        self.acc = torch.zeros_like(weight)
        self._row_slot = torch.empty(weight.shape[0], dtype=torch.long)

    def _unique_rows(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """torch.unique(ids, return_inverse=True), by marking rows of the table instead of sorting.

        Same sorted rows and inverse, 3-4x faster on a batch of long texts (tens of thousands of ids):
        it was a sixth of a 5k-sample R8 retrain.
        """
        present = torch.zeros(self.weight.shape[0], dtype=torch.bool).index_fill_(0, ids, True)
        uniq = present.nonzero().squeeze(1)
        self._row_slot.index_copy_(0, uniq, torch.arange(len(uniq)))
        return uniq, self._row_slot.index_select(0, ids)

    @torch.no_grad()
    def step(self, rows: _Rows, bag_grad: torch.Tensor) -> None:
        if rows.ids.numel() == 0:
            return
        # index_select/index_copy_ rather than tensor[idx]: several times faster on CPU.
        per_id = bag_grad.index_select(0, rows.seg).mul_(rows.weights.unsqueeze(1))
        uniq, inverse = self._unique_rows(rows.ids)
        grad = torch.zeros((len(uniq), per_id.shape[1]), dtype=per_id.dtype).index_add_(0, inverse, per_id)
        acc = self.acc.index_select(0, uniq).addcmul_(grad, grad)
        self.acc.index_copy_(0, uniq, acc)
        updated = self.weight.index_select(0, uniq).addcdiv_(grad, acc.sqrt_().add_(1e-10), value=-self.lr)
        self.weight.index_copy_(0, uniq, updated)


class _NgramView(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(config.n_buckets, config.ngram_dim, mode="sum")
        # Zero vectors: a bucket never seen in training then adds nothing at prediction time instead
        # of random noise, and untouched rows stay exactly zero.
        nn.init.zeros_(self.bag.weight)
        self.out = nn.Linear(config.ngram_dim, config.n_labels)

    def logits(self, rows: _Rows) -> torch.Tensor:
        with torch.no_grad():
            return self.out(self.bag(rows.ids, rows.offsets, per_sample_weights=rows.weights))


def _batch_size(n: int, cfg: TrainConfig) -> int:
    return int(min(cfg.max_batch, max(8, n // 10)))


def _epoch_budget(n_train: int, cfg: TrainConfig) -> int:
    # Small sets need many passes to take enough optimiser steps; big sets converge in a few epochs.
    steps_per_epoch = max(1, math.ceil(n_train / _batch_size(n_train, cfg)))
    return int(min(cfg.max_epochs * 4, max(cfg.max_epochs, math.ceil(cfg.min_steps / steps_per_epoch))))


def _train_ngram(
    view: _NgramView,
    data: _Data,
    train_idx: torch.Tensor,
    cfg: TrainConfig,
    epochs: int,
    gen: torch.Generator,
    on_epoch: Callable[[int], bool],
) -> None:
    """Mini-batch training; `on_epoch(epoch)` returns False to stop early."""
    n = len(train_idx)
    batch_size = _batch_size(n, cfg)
    bag_opt = _SparseAdagrad(view.bag.weight.data, cfg.lr_bag)
    head_opt = torch.optim.AdamW(view.out.parameters(), lr=cfg.lr_head, weight_decay=cfg.weight_decay)
    for epoch in range(1, epochs + 1):
        order = train_idx[torch.randperm(n, generator=gen)]
        for rows in _batches(data, order, batch_size):
            # The bag is a leaf here: autograd handles the small dense head, _SparseAdagrad the table.
            with torch.no_grad():
                bag = view.bag(rows.ids, rows.offsets, per_sample_weights=rows.weights)
            bag.requires_grad_(True)
            loss = F.cross_entropy(masked(view.out(bag), rows.mask), rows.target)
            head_opt.zero_grad()
            loss.backward()
            head_opt.step()
            bag_opt.step(rows, bag.grad)
        if not on_epoch(epoch):
            return


# ---------------------------------------------------------------------------------------------------
# Mixing


def _nll(logits: np.ndarray, target: np.ndarray) -> float:
    top = logits.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return float(np.mean(log_norm - logits[np.arange(len(target)), target]))


def _score(logits: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """(accuracy, -NLL): accuracy is what we are judged on, NLL breaks its frequent ties."""
    acc = float(np.mean(logits.argmax(1) == target)) if len(target) else 0.0
    return acc, -_nll(logits, target)


def _combine(ngram: np.ndarray, emb: np.ndarray, has_emb: np.ndarray, a: float, b: float) -> np.ndarray:
    """a * ngram + b * emb on rows with an embedding, ngram alone elsewhere; masked labels stay -inf.

    Masked entries are -inf in both inputs, and 0 * -inf would be NaN, hence the detour via zeros.
    """
    allowed = np.isfinite(ngram)
    ng = np.where(allowed, ngram, 0.0)
    em = np.where(allowed, emb, 0.0)
    # The embedding view never sees inputs without embedding; those rows keep the n-gram logits.
    mixed = np.where(has_emb[:, None], a * ng + b * em, ng)
    return np.where(allowed, mixed, -np.inf)


def _fit_mix(
    ngram: np.ndarray, emb: np.ndarray, has_emb: np.ndarray, target: np.ndarray, by_nll: bool
) -> tuple[float, float, float, float]:
    """Coefficients for the n-gram and embedding logits, the temperature on top, and the share w.

    Each view is first put on a calibrated scale by its own temperature, so the share w (n-gram
    view w, embedding view 1 - w) measures trust rather than compensating for overconfidence.
    The share is chosen by held-out NLL by default: accuracy on a few dozen held-out samples is too
    coarse and picked shares that hurt on test.
    """
    t_ng = fit_temperature(ngram, target)
    if not has_emb.any():
        return 1.0 / t_ng, 0.0, 1.0, 1.0
    t_emb = fit_temperature(emb[has_emb], target[has_emb])
    best: tuple[tuple[float, float], float, float] = ((-math.inf, -math.inf), 0.5, 1.0)
    for w in np.linspace(0.0, 1.0, 21):
        logits = _combine(ngram, emb, has_emb, w / t_ng, (1 - w) / t_emb)
        t = fit_temperature(logits, target)
        acc, neg_nll = _score(logits / t, target)
        score = (neg_nll, acc) if by_nll else (acc, neg_nll)
        if score > best[0]:
            best = (score, float(w), t)
    _, w, t = best
    return w / t_ng, (1 - w) / t_emb, t, w


# ---------------------------------------------------------------------------------------------------
# Selection on held-out data, then the final fit


@dataclass
class _Selection:
    c_emb: float = 1.0
    epochs: int = 1
    coef_ngram: float = 1.0
    coef_emb: float = 1.0
    mix_ngram: float = 0.5
    temperature: float = 1.0
    temperature_ngram_only: float = 1.0
    holdout_accuracy: float | None = None
    n_holdout: int = 0
    fold_best_epochs: list[int] = field(default_factory=list)
    ngram_state: dict[str, torch.Tensor] | None = None  # best held-out state, when not retrained


@dataclass
class _EmbView:
    """The embedding view, fitted on its own (it shares nothing with the n-gram view until mixing)."""

    c: float = 1.0
    oof: dict[float, np.ndarray] = field(default_factory=dict)  # held-out logits per C tried
    weights: tuple[torch.Tensor, torch.Tensor] | None = None  # final fit on every embedded sample


class _Progress:
    def __init__(self, callback: Callable[[int, int], None] | None, planned: int) -> None:
        self.callback = callback
        self.planned = planned
        self.done = 0

    def tick(self) -> None:
        self.done += 1
        if self.callback is not None:
            self.callback(self.done, max(self.planned, self.done))

    def finish(self) -> None:
        if self.callback is not None:
            self.callback(self.done, self.done)


def _emb_path(
    data: _Dense,
    tr: torch.Tensor,
    he: torch.Tensor,
    cfg: TrainConfig,
    single_slice: bool,
    solutions: dict[float, tuple[torch.Tensor, torch.Tensor]],
) -> dict[float, np.ndarray]:
    """Held-out embedding-view logits for each C tried (smallest C first, warm-started)."""
    has = data.has_emb > 0
    tr_emb, he_emb = tr[has[tr]], he[has[he]]
    n_labels = data.mask.shape[1]
    out: dict[float, np.ndarray] = {}
    if not len(tr_emb):
        return out
    wb = None
    last_nll = math.inf
    for c in sorted(cfg.c_grid):
        wb = _fit_logreg(
            data.emb[tr_emb], data.target[tr_emb], data.mask[tr_emb], c, n_labels, cfg.lbfgs_iters, wb
        )
        solutions[c] = wb
        out[c] = masked(_emb_logits(data.emb[he], wb), data.mask[he]).numpy().astype(np.float64)
        if single_slice and len(he_emb):
            # Held-out loss along the C path is unimodal (on R8 and Rotten Tomatoes, 1k samples to
            # the full sets, it never rose and then fell again): once it rises, larger C will not win
            # the NLL-based choice. Each fit costs ~0.2 s at 5k samples and more as C grows (1 s for
            # C=100 on Rotten Tomatoes' 10k).
            rows = has[he].numpy()
            nll = _nll(out[c][rows], data.target[he_emb].numpy())
            if nll > last_nll:
                break
            last_nll = nll
    return out


def _fit_emb_view(data: _Dense, folds: list[tuple[list[int], list[int]]], cfg: TrainConfig) -> _EmbView:
    """C chosen on the pooled held-out logits, then the fit on every sample with an embedding."""
    n, n_labels = data.mask.shape
    view = _EmbView()
    solutions: dict[float, tuple[torch.Tensor, torch.Tensor]] = {}
    for train_list, held_list in folds:
        tr = torch.tensor(train_list, dtype=torch.long)
        he = torch.tensor(held_list, dtype=torch.long)
        for c, logits in _emb_path(data, tr, he, cfg, len(folds) == 1, solutions).items():
            view.oof.setdefault(c, np.zeros((n, n_labels)))[held_list] = logits
    idx = np.asarray(sorted(i for _, held_list in folds for i in held_list), dtype=np.int64)
    target = data.target.numpy()[idx]
    has = (data.has_emb > 0).numpy()
    h_has = has[idx]
    if h_has.any() and view.oof:

        def c_score(c: float) -> tuple[float, float]:
            acc, neg_nll = _score(view.oof[c][idx][h_has], target[h_has])
            return (neg_nll, acc) if cfg.c_by_nll else (acc, neg_nll)

        view.c = max(sorted(view.oof), key=c_score)
    emb_idx = torch.from_numpy(np.flatnonzero(has))
    if len(emb_idx):
        # Warm start from the held-out fit with the same C: the optimum moves little with more data.
        view.weights = _fit_logreg(
            data.emb[emb_idx],
            data.target[emb_idx],
            data.mask[emb_idx],
            view.c,
            n_labels,
            cfg.lbfgs_iters,
            solutions.get(view.c),
        )
    return view


def _select(
    data: _Data,
    folds: list[tuple[list[int], list[int]]],
    has_emb: np.ndarray,
    emb_view: Callable[[], _EmbView],
    model_config: ModelConfig,
    cfg: TrainConfig,
    budget_for: Callable[[int], int],
    keep_ngram: bool,
    gen: torch.Generator,
    progress: _Progress,
) -> _Selection:
    """Choose the n-gram epoch count, then the view mix and temperatures, on out-of-fold logits.

    `emb_view()` returns the embedding view (possibly fitted meanwhile in another thread); it is only
    waited for once the n-gram view is done.
    """
    sel = _Selection()
    n, n_labels = data.mask.shape
    target = data.target.numpy()
    histories: list[tuple[list[int], list[np.ndarray]]] = []
    held_all: list[int] = []
    patience = cfg.patience if len(folds) > 1 else cfg.patience_holdout
    for train_list, held_list in folds:
        tr = torch.tensor(train_list, dtype=torch.long)
        he = torch.tensor(held_list, dtype=torch.long)
        held_all.extend(held_list)
        view = _NgramView(model_config)
        held_rows = _rows(data, he)
        held_target = held_rows.target.numpy()
        history: list[tuple[tuple[float, float], np.ndarray]] = []

        def on_epoch(
            _epoch: int,
            view: _NgramView = view,
            held_rows: _Rows = held_rows,
            held_target: np.ndarray = held_target,
            history: list = history,
        ) -> bool:
            progress.tick()
            logits = masked(view.logits(held_rows), held_rows.mask).numpy().astype(np.float64)
            history.append((_score(logits, held_target), logits))
            best = max(range(len(history)), key=lambda i: history[i][0])
            if keep_ngram and best == len(history) - 1:
                sel.ngram_state = copy.deepcopy(view.state_dict())
            return len(history) - 1 - best < patience

        _train_ngram(view, data, tr, cfg, budget_for(len(train_list)), gen, on_epoch)
        sel.fold_best_epochs.append(1 + max(range(len(history)), key=lambda i: history[i][0]))
        histories.append((held_list, [logits for _, logits in history]))
    emb = emb_view()
    sel.c_emb = emb.c
    if not held_all:
        sel.epochs = budget_for(n)
        return sel

    # One epoch count for all folds, chosen on the pooled held-out logits: per-fold optima are noisy
    # on small folds (1 to 40 epochs on the same data). A fold that stopped early keeps its last
    # logits for later epochs.
    idx = np.asarray(sorted(held_all))
    oof_ng = np.zeros((n, n_labels))
    best_score: tuple[float, float] = (-math.inf, -math.inf)
    for e in range(1, max(len(h) for _, h in histories) + 1):
        for held_list, h in histories:
            oof_ng[held_list] = h[min(e, len(h)) - 1]
        score = _score(oof_ng[idx], target[idx])
        if score > best_score:
            best_score, sel.epochs = score, e
    for held_list, h in histories:
        oof_ng[held_list] = h[min(sel.epochs, len(h)) - 1]

    h_has, h_target, h_ng = has_emb[idx], target[idx], oof_ng[idx]
    h_emb = emb.oof[emb.c][idx] if h_has.any() and emb.oof else np.zeros_like(h_ng)
    sel.coef_ngram, sel.coef_emb, sel.temperature, sel.mix_ngram = _fit_mix(
        h_ng, h_emb, h_has, h_target, cfg.mix_by_nll
    )
    sel.temperature_ngram_only = fit_temperature(h_ng, h_target)
    if not h_has.any():
        sel.temperature = sel.temperature_ngram_only
    mixed = _combine(h_ng, h_emb, h_has, sel.coef_ngram, sel.coef_emb)
    sel.holdout_accuracy = accuracy(h_target.tolist(), mixed.argmax(1).tolist())
    sel.n_holdout = len(idx)
    return sel


def _final_net(
    data: _Data,
    emb: _EmbView,
    sel: _Selection,
    model_config: ModelConfig,
    cfg: TrainConfig,
    gen: torch.Generator,
    progress: _Progress,
) -> DukeNet:
    net = DukeNet(model_config)
    with torch.no_grad():
        nn.init.zeros_(net.emb_out.weight)
        nn.init.zeros_(net.emb_out.bias)
        if emb.weights is not None:
            net.emb_out.weight.copy_(emb.weights[0])
            net.emb_out.bias.copy_(emb.weights[1])
    view = _NgramView(model_config)
    if sel.ngram_state is not None:
        view.load_state_dict(sel.ngram_state)
    else:
        progress.planned = progress.done + sel.epochs
        all_idx = torch.arange(data.mask.shape[0], dtype=torch.long)
        _train_ngram(view, data, all_idx, cfg, sel.epochs, gen, lambda _epoch: progress.tick() or True)
    with torch.no_grad():
        net.bag.weight.copy_(view.bag.weight)
        net.ngram_out.load_state_dict(view.out.state_dict())
        net.mix.copy_(torch.tensor([sel.coef_ngram, sel.coef_emb]))
    return net.eval()


def _single_threaded(fn: Callable[..., _EmbView]) -> Callable[..., _EmbView]:
    def run(*args: object) -> _EmbView:
        # Ops in this thread must not fan out either (see `train`); the setting is per thread in
        # some OpenMP runtimes.
        torch.set_num_threads(1)
        return fn(*args)

    return run


def train(
    samples: Sequence[Sample],
    *,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    max_epochs: int | None = None,
    config: TrainConfig | None = None,
) -> TrainedModel:
    """Train one head for all task types on `samples` (which must all carry a label).

    `progress(done, total)` is called after every n-gram epoch (cross-fitting folds included);
    `total` is an upper bound until the last call, which has done == total. `max_epochs` caps the
    n-gram view's epochs (tests use it to stay fast).
    """
    if not samples:
        raise ValueError("cannot train on zero samples")
    cfg = config or TrainConfig()
    started = time.perf_counter()
    # A sample's own label always counts as offered, even if the recorded label set forgot it.
    samples = [
        s
        if s.label in s.label_set
        else Sample(s.text, s.label, (*s.label_set, s.label), s.task_type, s.embedding)
        for s in samples
    ]
    labels = sorted({label for s in samples for label in s.label_set})
    label_index = {label: i for i, label in enumerate(labels)}
    model_config = ModelConfig(
        n_buckets=cfg.n_buckets,
        ngram_dim=cfg.ngram_dim,
        n_labels=len(labels),
        char_sizes=cfg.char_sizes,
        max_tokens=cfg.max_tokens,
        length_weight=cfg.length_weight,
    )
    n = len(samples)
    folds = _folds(samples, cfg, seed)

    def budget_for(n_train: int) -> int:
        budget = _epoch_budget(n_train, cfg)
        return budget if max_epochs is None else max(1, min(budget, max_epochs))

    tracker = _Progress(progress, sum(budget_for(len(tr)) for tr, _ in folds) + budget_for(n))
    # With one big held-out slice the n-gram view is not retrained: its best epoch's weights are kept.
    keep_ngram = n >= cfg.refit_below and len(folds) == 1
    # The two views share nothing until they are mixed, so with two cores the embedding view (its C
    # path and final fit, ~1.5 s at 5k samples) runs in a second thread while this one extracts the
    # n-grams and trains their view (~3 s). Every op runs on one thread either way: two views at two
    # threads each would oversubscribe the cores, and the weights do not depend on the core count.
    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)
    pool = ThreadPoolExecutor(1, thread_name_prefix="duke-emb-view") if torch_threads() >= 2 else None
    try:
        dense = _dense(samples, model_config, label_index)
        if pool is not None:
            future = pool.submit(_single_threaded(_fit_emb_view), dense, folds, cfg)
        else:
            future = Future()
            future.set_result(_fit_emb_view(dense, folds, cfg))
        emb_view = future.result
        data = _ngrams(samples, model_config, dense)
        has_emb = (dense.has_emb > 0).numpy()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            sel = _select(
                data, folds, has_emb, emb_view, model_config, cfg, budget_for, keep_ngram, gen, tracker
            )
            net = _final_net(data, emb_view(), sel, model_config, cfg, gen, tracker)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(threads_before)
    tracker.finish()
    metadata = {
        "n_samples": n,
        "n_holdout": sel.n_holdout,
        "folds": len(folds),
        "seed": seed,
        "ngram_epochs": sel.epochs,
        "fold_best_epochs": sel.fold_best_epochs,
        "ngram_retrained": sel.ngram_state is None,
        "c_emb": sel.c_emb,
        "mix_ngram": sel.mix_ngram,
        "temperature": sel.temperature,
        "temperature_ngram_only": sel.temperature_ngram_only,
        "holdout_accuracy": sel.holdout_accuracy,
        "task_types": dict(sorted(Counter(s.task_type for s in samples).items())),
        "with_embedding": int(has_emb.sum()),
        "train_config": asdict(cfg),
        "train_seconds": round(time.perf_counter() - started, 3),
        "torch_version": str(torch.__version__),
    }
    return TrainedModel(net, labels, sel.temperature, metadata, sel.temperature_ngram_only)
