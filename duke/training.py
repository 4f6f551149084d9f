"""Training Duke's head. Pure torch/numpy: no Django import.

The two views are fitted separately and then mixed, because what works for one hurts the other:
- the embedding view is a multinomial logistic regression solved exactly (L-BFGS, full batch) with its
  L2 strength chosen on held-out data, since the right prior differs a lot between task types;
- the n-gram view is fastText-style (hashed n-grams -> EmbeddingBag -> linear), trained with
  sparse Adagrad and early stopping.
Held-out data (K-fold cross-fitting below `cv_below` samples, one stratified slice above) chooses the
L2 strength, the number of n-gram epochs, the weight of each view and the temperature; the final
views are then refitted on every sample given. Validation data stays with the caller.

`train` is deterministic: the same seed and the same samples in the same order give the same
weights, metrics and predictions.
"""

from __future__ import annotations

import copy
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from duke.calibration import accuracy, fit_temperature
from duke.model import Batch, DukeNet, ModelConfig, Sample, TrainedModel, build_batch, masked, set_torch_threads


@dataclass(frozen=True)
class TrainConfig:
    n_buckets: int = 1 << 18
    ngram_dim: int = 16
    char_sizes: tuple[int, ...] = (3, 4, 5)
    max_tokens: int = 400
    # Cross-fitting folds below this many samples (cheap there, and a single slice is too noisy).
    cv_below: int = 1000
    folds: int = 5
    holdout_fraction: float = 0.1
    max_holdout: int = 1000
    # Inverse L2 strengths tried for the embedding view (scikit-learn's C convention).
    c_grid: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0)
    lbfgs_iters: int = 200
    lr_bag: float = 0.5
    lr_head: float = 0.05
    weight_decay: float = 1e-4
    max_epochs: int = 40
    min_steps: int = 300
    max_batch: int = 128
    patience: int = 6
    # With one large held-out slice an epoch is expensive and the held-out score is less noisy.
    patience_holdout: int = 2
    # Below this many samples the n-gram view is retrained on all of them once the epoch count is
    # known; above it the held-out slice costs little accuracy and retraining would double the time.
    refit_below: int = 2000
    mix_by_nll: bool = True
    c_by_nll: bool = True


@dataclass
class _Data:
    ids: torch.Tensor  # all samples' n-gram ids, flat, sample after sample
    weights: torch.Tensor
    starts: torch.Tensor  # where each sample's ids begin in `ids`
    lengths: torch.Tensor
    emb: torch.Tensor
    has_emb: torch.Tensor
    mask: torch.Tensor
    target: torch.Tensor


@dataclass
class _Rows:
    ids: torch.Tensor
    offsets: torch.Tensor
    weights: torch.Tensor
    seg: torch.Tensor  # which row of the batch each id belongs to
    emb: torch.Tensor
    has_emb: torch.Tensor
    mask: torch.Tensor
    target: torch.Tensor


def _prepare(samples: Sequence[Sample], config: ModelConfig, label_index: dict[str, int]) -> _Data:
    batch: Batch = build_batch(samples, config, label_index)
    ends = torch.cat([batch.offsets[1:], torch.tensor([batch.ids.shape[0]])]) if len(samples) else batch.offsets
    target = torch.tensor([label_index[s.label] for s in samples], dtype=torch.long)
    return _Data(
        batch.ids, batch.weights, batch.offsets, ends - batch.offsets, batch.emb, batch.has_emb, batch.mask, target
    )


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
        data.emb[idx],
        data.has_emb[idx],
        data.mask[idx],
        data.target[idx],
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
        [w, b], lr=1.0, max_iter=iters, tolerance_grad=1e-6, tolerance_change=1e-10, line_search_fn="strong_wolfe"
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

    @torch.no_grad()
    def step(self, rows: _Rows, bag_grad: torch.Tensor) -> None:
        if rows.ids.numel() == 0:
            return
        # index_select/index_copy_ rather than tensor[idx]: several times faster on CPU.
        per_id = bag_grad.index_select(0, rows.seg).mul_(rows.weights.unsqueeze(1))
        uniq, inverse = torch.unique(rows.ids, return_inverse=True)
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
        for start in range(0, n, batch_size):
            rows = _rows(data, order[start : start + batch_size])
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


def _fit_mix(
    ngram: np.ndarray, emb: np.ndarray, has_emb: np.ndarray, target: np.ndarray, by_nll: bool = False
) -> tuple[float, float, float, float]:
    """Coefficients for the n-gram and embedding logits, the temperature on top, and the share w.

    Each view is first put on a calibrated scale by its own temperature, so the share w (n-gram
    view w, embedding view 1 - w) measures trust rather than compensating for overconfidence.
    """
    t_ng = fit_temperature(ngram, target)
    t_emb = fit_temperature(emb[has_emb], target[has_emb]) if has_emb.any() else 1.0
    ng, em = ngram / t_ng, emb / t_emb
    best: tuple[tuple[float, float], float, float] = ((-1.0, -math.inf), 0.5, 1.0)
    for w in np.linspace(0.0, 1.0, 21):
        # The embedding view never sees inputs without embedding; those rows keep the n-gram logits.
        logits = np.where(has_emb[:, None], w * ng + (1 - w) * em, ng)
        t = fit_temperature(logits, target)
        score = _score(logits / t, target)
        if by_nll:
            score = (score[1], score[0])
        if score > best[0]:
            best = (score, float(w), t)
    _, w, t = best
    return w / t_ng, (1 - w) / t_emb, t, w


# ---------------------------------------------------------------------------------------------------


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
    `total` is an upper bound until the last call, which has done == total.
    """
    if not samples:
        raise ValueError("cannot train on zero samples")
    cfg = config or TrainConfig()
    started = time.perf_counter()
    set_torch_threads()
    samples = list(samples)
    labels = sorted({s.label for s in samples} | {label for s in samples for label in s.label_set})
    label_index = {label: i for i, label in enumerate(labels)}
    n_labels = len(labels)
    model_config = ModelConfig(
        n_buckets=cfg.n_buckets,
        ngram_dim=cfg.ngram_dim,
        n_labels=n_labels,
        char_sizes=cfg.char_sizes,
        max_tokens=cfg.max_tokens,
    )
    # A sample's own label always counts as offered, even if the recorded label set forgot it.
    samples = [
        s if s.label in s.label_set else Sample(s.text, s.label, (*s.label_set, s.label), s.task_type, s.embedding)
        for s in samples
    ]
    data = _prepare(samples, model_config, label_index)
    n = len(samples)
    folds = _folds(samples, cfg, seed)
    has = data.has_emb > 0
    target = data.target.numpy()

    def budget_for(n_train: int) -> int:
        b = _epoch_budget(n_train, cfg)
        return b if max_epochs is None else max(1, min(b, max_epochs))

    planned = sum(budget_for(len(tr)) for tr, _ in folds) + budget_for(n)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, max(planned, done))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)

        # Out-of-fold logits per candidate, to choose C, epochs and the mix on unseen samples only.
        oof_emb = {c: np.zeros((n, n_labels)) for c in cfg.c_grid}
        oof_ng = np.zeros((n, n_labels))
        held_all: list[int] = []
        best_epochs: list[int] = []
        histories: list[tuple[list[int], list[np.ndarray]]] = []
        # With one big held-out slice the n-gram view is not retrained; keep its best epoch's weights.
        reuse = n >= cfg.refit_below and len(folds) == 1
        kept: dict[str, object] = {}
        emb_solutions: dict[float, tuple[torch.Tensor, torch.Tensor]] = {}
        for train_list, held_list in folds:
            tr = torch.tensor(train_list, dtype=torch.long)
            he = torch.tensor(held_list, dtype=torch.long)
            held_all.extend(held_list)
            tr_emb = tr[has[tr]]
            he_emb = he[has[he]]
            wb = None
            worse_in_row, last_nll = 0, math.inf
            for c in sorted(cfg.c_grid):  # warm start from the more regularised solution
                if not len(tr_emb):
                    break
                wb = _fit_logreg(
                    data.emb[tr_emb], data.target[tr_emb], data.mask[tr_emb], c, n_labels, cfg.lbfgs_iters, wb
                )
                emb_solutions[c] = wb
                oof_emb[c][held_list] = masked(_emb_logits(data.emb[he], wb), data.mask[he]).numpy()
                if len(folds) == 1 and len(he_emb):
                    # Held-out loss along the C path is unimodal in practice: once it has risen twice
                    # in a row, larger C will not win, and each fit costs ~0.2 s at 5k samples.
                    nll = _nll(oof_emb[c][he_emb.numpy()], target[he_emb.numpy()])
                    worse_in_row = worse_in_row + 1 if nll > last_nll else 0
                    last_nll = nll
                    if worse_in_row >= 2:
                        break
            view = _NgramView(model_config)
            held_rows = _rows(data, he)
            history: list[tuple[tuple[float, float], np.ndarray]] = []

            def on_epoch(epoch: int, view: _NgramView = view, held_rows: _Rows = held_rows, history=history) -> bool:
                tick()
                logits = masked(view.logits(held_rows), held_rows.mask).numpy().astype(np.float64)
                history.append((_score(logits, held_rows.target.numpy()), logits))
                best = max(range(len(history)), key=lambda i: history[i][0])
                if reuse and best == len(history) - 1:
                    kept["state"] = copy.deepcopy(view.state_dict())
                return len(history) - 1 - best < (cfg.patience if len(folds) > 1 else cfg.patience_holdout)

            _train_ngram(view, data, tr, cfg, budget_for(len(train_list)), gen, on_epoch)
            best = max(range(len(history)), key=lambda i: history[i][0])
            best_epochs.append(best + 1)
            histories.append((held_list, [logits for _, logits in history]))

        # One epoch count for all folds, chosen on the pooled held-out logits: per-fold optima are
        # noisy on small folds (1 to 40 epochs on the same data). A fold that stopped early keeps
        # its last logits for later epochs.
        pooled_epochs = max((len(h) for _, h in histories), default=0)
        pooled_best: tuple[tuple[float, float], int] = ((-1.0, -math.inf), 1)
        for e in range(pooled_epochs):
            for held_list, h in histories:
                oof_ng[held_list] = h[min(e, len(h) - 1)]
            idx = np.asarray(sorted(held_all))
            score = _score(oof_ng[idx], target[idx])
            if score > pooled_best[0]:
                pooled_best = (score, e + 1)
        for held_list, h in histories:
            oof_ng[held_list] = h[min(pooled_best[1], len(h)) - 1]

        # Choose the embedding view's C and the mix on the pooled held-out logits.
        c_best, temperature, temperature_ng, held_accuracy = 1.0, 1.0, 1.0, None
        mix_ngram, coef_ng, coef_emb = 0.5, 1.0, 1.0
        epochs = budget_for(n)
        if held_all:
            idx = np.asarray(sorted(held_all))
            h_has = has.numpy()[idx]
            h_target = target[idx]
            if h_has.any():
                def c_score(c: float) -> tuple[float, float]:
                    acc, neg_nll = _score(oof_emb[c][idx][h_has], h_target[h_has])
                    return (neg_nll, acc) if cfg.c_by_nll else (acc, neg_nll)

                c_best = max(sorted(emb_solutions), key=c_score)
            coef_ng, coef_emb, temperature, mix_ngram = _fit_mix(
                oof_ng[idx], oof_emb[c_best][idx], h_has, h_target, cfg.mix_by_nll
            )
            temperature_ng = fit_temperature(oof_ng[idx], h_target)
            mixed = np.where(h_has[:, None], coef_ng * oof_ng[idx] + coef_emb * oof_emb[c_best][idx], oof_ng[idx])
            held_accuracy = accuracy(h_target.tolist(), mixed.argmax(1).tolist())
            epochs = pooled_best[1]
            if max_epochs is not None:
                epochs = max(1, min(epochs, max_epochs))

        # Final views on every sample.
        net = DukeNet(model_config)
        all_idx = torch.arange(n, dtype=torch.long)
        emb_idx = all_idx[has]
        if len(emb_idx):
            # Warm start from the held-out fit with the same C: the optimum moves little with 10% more data.
            w, b = _fit_logreg(
                data.emb[emb_idx],
                data.target[emb_idx],
                data.mask[emb_idx],
                c_best,
                n_labels,
                cfg.lbfgs_iters,
                emb_solutions.get(c_best),
            )
            with torch.no_grad():
                net.emb_out.weight.copy_(w)
                net.emb_out.bias.copy_(b)
        if reuse and "state" in kept:
            view = _NgramView(model_config)
            view.load_state_dict(kept["state"])
        else:
            view = _NgramView(model_config)
            planned = done + epochs
            _train_ngram(view, data, all_idx, cfg, epochs, gen, lambda _epoch: tick() or True)
        with torch.no_grad():
            net.bag.weight.copy_(view.bag.weight)
            net.ngram_out.load_state_dict(view.out.state_dict())
            net.mix.copy_(torch.tensor([coef_ng, coef_emb]))
    if progress is not None:
        progress(done, done)
    net.eval()
    counts = Counter(s.task_type for s in samples)
    metadata = {
        "n_samples": n,
        "n_holdout": len(held_all),
        "folds": len(folds),
        "seed": seed,
        "ngram_epochs": epochs,
        "fold_best_epochs": best_epochs,
        "c_emb": c_best,
        "holdout_accuracy": held_accuracy,
        "temperature": temperature,
        "temperature_ngram_only": temperature_ng,
        "mix_ngram": mix_ngram,
        "task_types": dict(sorted(counts.items())),
        "with_embedding": int(has.sum()),
        "train_config": asdict(cfg),
        "train_seconds": round(time.perf_counter() - started, 3),
        "torch_version": str(torch.__version__),  # a TorchVersion object: weights_only loads refuse it
    }
    return TrainedModel(net, labels, temperature, metadata, temperature_ng)
