"""Selection on held-out data (epochs, view mix, temperatures), then the final fit: `train`."""

from __future__ import annotations

import copy
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from duke.calibration import accuracy, fit_temperature
from duke.encoder import ENCODER_ID, torch_threads
from duke.model import DukeNet, ModelConfig, OutOfFold, Sample, TrainedModel, masked
from duke.training.config import TrainConfig
from duke.training.data import NgramData, Rows, dense_data, folds_for, ngram_data, rows_of, score_logits
from duke.training.emb_view import EmbView, fit_emb_view
from duke.training.ngram_view import NgramView, epoch_budget, train_ngram


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
        acc, neg_nll = score_logits(logits / t, target)
        score = (neg_nll, acc) if by_nll else (acc, neg_nll)
        if score > best[0]:
            best = (score, float(w), t)
    _, w, t = best
    return w / t_ng, (1 - w) / t_emb, t, w


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
    out_of_fold: OutOfFold | None = None


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


def _select(
    data: NgramData,
    folds: list[tuple[list[int], list[int]]],
    has_emb: np.ndarray,
    emb_view: Callable[[], EmbView],
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
        view = NgramView(model_config)
        held_rows = rows_of(data, he)
        held_target = held_rows.target.numpy()
        history: list[tuple[tuple[float, float], np.ndarray]] = []

        def on_epoch(
            _epoch: int,
            view: NgramView = view,
            held_rows: Rows = held_rows,
            held_target: np.ndarray = held_target,
            history: list = history,
        ) -> bool:
            progress.tick()
            logits = masked(view.logits(held_rows), held_rows.mask).numpy().astype(np.float64)
            history.append((score_logits(logits, held_target), logits))
            best = max(range(len(history)), key=lambda i: history[i][0])
            if keep_ngram and best == len(history) - 1:
                sel.ngram_state = copy.deepcopy(view.state_dict())
            return len(history) - 1 - best < patience

        train_ngram(view, data, tr, cfg, budget_for(len(train_list)), gen, on_epoch)
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
        score = score_logits(oof_ng[idx], target[idx])
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
    # What the final model's `predict` would say, tempered the same way (mixed with an embedding, the
    # n-gram view alone without one), from models that never saw the sample.
    scaled = np.where(h_has[:, None], mixed / sel.temperature, h_ng / sel.temperature_ngram_only)
    probs = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    alone = h_ng / sel.temperature_ngram_only
    alone = np.exp(alone - alone.max(axis=1, keepdims=True))
    alone /= alone.sum(axis=1, keepdims=True)
    sel.out_of_fold = OutOfFold(
        idx,
        probs.argmax(1),
        probs.max(1),
        h_has,
        ngram_predicted=alone.argmax(1),
        ngram_confidence=alone.max(1),
    )
    return sel


def _final_net(
    data: NgramData,
    emb: EmbView,
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
    view = NgramView(model_config)
    if sel.ngram_state is not None:
        view.load_state_dict(sel.ngram_state)
    else:
        progress.planned = progress.done + sel.epochs
        all_idx = torch.arange(data.mask.shape[0], dtype=torch.long)
        train_ngram(view, data, all_idx, cfg, sel.epochs, gen, lambda _epoch: progress.tick() or True)
    with torch.no_grad():
        net.bag.weight.copy_(view.bag.weight)
        net.ngram_out.load_state_dict(view.out.state_dict())
        net.mix.copy_(torch.tensor([sel.coef_ngram, sel.coef_emb]))
    return net.eval()


def _single_threaded(fn: Callable[..., EmbView]) -> Callable[..., EmbView]:
    def run(*args: object) -> EmbView:
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
    folds = folds_for(samples, cfg, seed)

    def budget_for(n_train: int) -> int:
        budget = epoch_budget(n_train, cfg)
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
        dense = dense_data(samples, model_config, label_index)
        if pool is not None:
            future = pool.submit(_single_threaded(fit_emb_view), dense, folds, cfg)
        else:
            future = Future()
            future.set_result(fit_emb_view(dense, folds, cfg))
        emb_view = future.result
        data = ngram_data(samples, model_config, dense)
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
        # The embedding view is calibrated on this encoder's vectors; serving refuses another encoder's.
        "encoder_id": ENCODER_ID if int(has_emb.sum()) else None,
        # How serving answers (TrainedModel.predict_served); without embeddings the n-gram view answers all.
        "ngram_first": cfg.ngram_first if int(has_emb.sum()) else None,
        "train_config": asdict(cfg),
        "train_seconds": round(time.perf_counter() - started, 3),
        "torch_version": str(torch.__version__),
    }
    model = TrainedModel(net, labels, sel.temperature, metadata, sel.temperature_ngram_only)
    model.out_of_fold = sel.out_of_fold
    return model
