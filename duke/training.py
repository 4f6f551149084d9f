"""Training Duke's head. Pure torch/numpy: no Django import.

`train` is deterministic: the same seed and the same samples (in the same order) give the same
weights, metrics and predictions. A stratified slice of the given samples is held out for early
stopping and temperature scaling; the caller keeps its own validation split outside.
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

from duke.calibration import accuracy, fit_temperature
from duke.model import (
    Batch,
    DukeNet,
    ModelConfig,
    Sample,
    TrainedModel,
    build_batch,
    masked,
    set_torch_threads,
)


@dataclass(frozen=True)
class TrainConfig:
    n_buckets: int = 1 << 18
    ngram_dim: int = 16
    holdout_fraction: float = 0.15
    min_holdout: int = 10
    lr_bag: float = 0.05
    lr_head: float = 0.01
    weight_decay: float = 1e-4
    aux_weight: float = 0.5
    view_dropout: float = 0.2
    max_epochs: int = 60
    min_steps: int = 300
    patience: int = 6
    refit: bool = True


@dataclass
class _Data:
    ids: list[torch.Tensor]
    emb: torch.Tensor
    has_emb: torch.Tensor
    mask: torch.Tensor
    target: torch.Tensor


def _prepare(samples: Sequence[Sample], config: ModelConfig, label_index: dict[str, int]) -> _Data:
    batch: Batch = build_batch(samples, config, label_index)
    bounds = [*batch.offsets.tolist(), batch.ids.shape[0]]
    ids = [batch.ids[bounds[i] : bounds[i + 1]] for i in range(len(samples))]
    target = torch.tensor([label_index[s.label] for s in samples], dtype=torch.long)
    return _Data(ids=ids, emb=batch.emb, has_emb=batch.has_emb, mask=batch.mask, target=target)


def _subset(data: _Data, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
    pieces = [data.ids[i] for i in idx.tolist()]
    lengths = torch.tensor([len(p) for p in pieces], dtype=torch.long)
    offsets = torch.zeros(len(pieces), dtype=torch.long)
    if len(pieces) > 1:
        offsets[1:] = torch.cumsum(lengths, 0)[:-1]
    ids = torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.long)
    return ids, offsets, data.emb[idx], data.has_emb[idx], data.mask[idx], data.target[idx]


def _split(samples: Sequence[Sample], fraction: float, min_holdout: int, seed: int) -> tuple[list, list]:
    """Stratified split; classes with fewer than 3 samples stay entirely in training."""
    n = len(samples)
    if fraction <= 0 or n < 2 * min_holdout:
        return list(range(n)), []
    rng = np.random.RandomState(seed)
    by_label: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        by_label.setdefault(s.label, []).append(i)
    held: list[int] = []
    for label in sorted(by_label):
        members = by_label[label]
        if len(members) < 3:
            continue
        k = max(1, int(round(fraction * len(members))))
        held.extend(rng.permutation(members)[:k].tolist())
    held_set = set(held)
    return [i for i in range(n) if i not in held_set], sorted(held)


def _loss(net: DukeNet, ids, offsets, emb, has_emb, mask, target, aux_weight: float) -> torch.Tensor:
    ngram_logits, emb_logits = net.views(ids, offsets, emb)
    combined = ngram_logits + has_emb.unsqueeze(1) * emb_logits
    loss = F.cross_entropy(masked(combined, mask), target)
    if aux_weight > 0:
        # Each view must also classify on its own: stops the n-gram view from memorising the training
        # set before the embedding view has learnt anything, and keeps inputs without embedding usable.
        loss = loss + aux_weight * F.cross_entropy(masked(ngram_logits, mask), target)
        with_emb = has_emb > 0
        if bool(with_emb.any()):
            loss = loss + aux_weight * F.cross_entropy(
                masked(emb_logits[with_emb], mask[with_emb]), target[with_emb]
            )
    return loss


def _eval_logits(net: DukeNet, data: _Data, idx: torch.Tensor) -> torch.Tensor:
    net.eval()
    with torch.inference_mode():
        ids, offsets, emb, has_emb, mask, _ = _subset(data, idx)
        logits = masked(net(ids, offsets, emb, has_emb), mask)
    net.train()
    return logits


def _fit(
    net: DukeNet,
    data: _Data,
    train_idx: torch.Tensor,
    cfg: TrainConfig,
    epochs: int,
    gen: torch.Generator,
    on_epoch: Callable[[int, DukeNet], bool] | None,
) -> int:
    """Mini-batch training; `on_epoch` returns False to stop. Returns the number of epochs run."""
    n = len(train_idx)
    batch_size = int(min(128, max(8, n // 10)))
    sparse_opt = torch.optim.SparseAdam(list(net.bag.parameters()), lr=cfg.lr_bag)
    head_params = [p for name, p in net.named_parameters() if not name.startswith("bag.")]
    dense_opt = torch.optim.AdamW(head_params, lr=cfg.lr_head, weight_decay=cfg.weight_decay)
    net.train()
    for epoch in range(1, epochs + 1):
        order = train_idx[torch.randperm(n, generator=gen)]
        for start in range(0, n, batch_size):
            ids, offsets, emb, has_emb, mask, target = _subset(data, order[start : start + batch_size])
            if cfg.view_dropout > 0:
                keep = (torch.rand(has_emb.shape, generator=gen) >= cfg.view_dropout).float()
                has_emb = has_emb * keep
            loss = _loss(net, ids, offsets, emb, has_emb, mask, target, cfg.aux_weight)
            sparse_opt.zero_grad()
            dense_opt.zero_grad()
            loss.backward()
            sparse_opt.step()
            dense_opt.step()
        if on_epoch is not None and not on_epoch(epoch, net):
            return epoch
    return epochs


def _epoch_budget(n_train: int, cfg: TrainConfig) -> int:
    # Small sets need many passes to take enough optimiser steps; big sets converge in a few epochs.
    batch_size = int(min(128, max(8, n_train // 10)))
    steps_per_epoch = max(1, math.ceil(n_train / batch_size))
    return int(min(cfg.max_epochs * 4, max(cfg.max_epochs, math.ceil(cfg.min_steps / steps_per_epoch))))


def train(
    samples: Sequence[Sample],
    *,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    max_epochs: int | None = None,
    config: TrainConfig | None = None,
) -> TrainedModel:
    """Train one head for all task types on `samples` (which must all carry a label)."""
    if not samples:
        raise ValueError("cannot train on zero samples")
    cfg = config or TrainConfig()
    started = time.perf_counter()
    set_torch_threads()
    samples = list(samples)
    labels = sorted({s.label for s in samples} | {label for s in samples for label in s.label_set})
    label_index = {label: i for i, label in enumerate(labels)}
    model_config = ModelConfig(n_buckets=cfg.n_buckets, ngram_dim=cfg.ngram_dim, n_labels=len(labels))
    # A sample's own label always counts as offered, even if the recorded label set forgot it.
    samples = [
        s
        if s.label in s.label_set
        else Sample(s.text, s.label, (*s.label_set, s.label), s.task_type, s.embedding)
        for s in samples
    ]
    data = _prepare(samples, model_config, label_index)
    train_list, held_list = _split(samples, cfg.holdout_fraction, cfg.min_holdout, seed)
    train_idx = torch.tensor(train_list, dtype=torch.long)
    held_idx = torch.tensor(held_list, dtype=torch.long)
    budget = _epoch_budget(len(train_list), cfg)
    if max_epochs is not None:
        budget = max(1, min(budget, max_epochs))
    total_epochs = budget * (2 if cfg.refit and held_list else 1)
    held_targets = data.target[held_idx] if held_list else None

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        net = DukeNet(model_config)
        init_state = copy.deepcopy(net.state_dict())
        best = {"epoch": budget, "score": (-1.0, -math.inf), "state": None}
        since_best = 0

        def on_epoch(epoch: int, current: DukeNet) -> bool:
            nonlocal since_best
            if progress is not None:
                progress(epoch, total_epochs)
            if not held_list:
                return True
            logits = _eval_logits(current, data, held_idx)
            acc = float((logits.argmax(1) == held_targets).float().mean())
            nll = float(F.cross_entropy(logits, held_targets))
            score = (acc, -nll)
            if score > best["score"]:
                best.update(epoch=epoch, score=score, state=copy.deepcopy(current.state_dict()))
                since_best = 0
            else:
                since_best += 1
            return since_best < cfg.patience

        epochs_run = _fit(net, data, train_idx, cfg, budget, gen, on_epoch)
        temperature = 1.0
        held_accuracy = None
        if held_list:
            net.load_state_dict(best["state"])
            logits = _eval_logits(net, data, held_idx)
            temperature = fit_temperature(logits.numpy(), held_targets.numpy())
            held_accuracy = accuracy(held_targets.tolist(), logits.argmax(1).tolist())
            if cfg.refit:
                # The held-out slice chose the epoch count and temperature; now let every sample teach.
                net = DukeNet(model_config)
                net.load_state_dict(init_state)
                offset = epochs_run

                def refit_progress(epoch: int, _net: DukeNet) -> bool:
                    if progress is not None:
                        progress(offset + epoch, offset + best["epoch"])
                    return True

                all_idx = torch.arange(len(samples), dtype=torch.long)
                _fit(net, data, all_idx, cfg, best["epoch"], gen, refit_progress)
    net.eval()
    counts = Counter(s.task_type for s in samples)
    metadata = {
        "n_samples": len(samples),
        "n_train": len(train_list),
        "n_holdout": len(held_list),
        "seed": seed,
        "epochs_run": epochs_run,
        "best_epoch": best["epoch"],
        "holdout_accuracy": held_accuracy,
        "temperature": temperature,
        "task_types": dict(sorted(counts.items())),
        "with_embedding": int(sum(1 for s in samples if s.embedding is not None)),
        "train_config": asdict(cfg),
        "train_seconds": round(time.perf_counter() - started, 3),
        "torch_version": torch.__version__,
    }
    return TrainedModel(net, labels, temperature, metadata)
