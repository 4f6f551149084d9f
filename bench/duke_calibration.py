"""Offline check of Duke's certified routing: train on the first N samples of a dataset's train file,
certify the threshold on the out-of-fold predictions (Learn-then-Test), then serve its test file.

Reports per N: training seconds, the certified threshold and its certificate, and on the test file the
share Duke would serve and the agreement of what it serves. Nothing is tuned here: the defaults of
duke.training.TrainConfig and DUKE_TARGET_AGREEMENT / DUKE_RISK_DELTA's defaults are used.

    .venv/bin/python bench/duke_calibration.py --dataset r8 --sizes 100,500,1000
    .venv/bin/python bench/duke_calibration.py --dataset composite20 --sizes 100,300,700,1000,1500

`composite20` is a 20-class long-text set built from the shared files: a Reuters R8 story followed by a
Rotten Tomatoes snippet, labelled topic/kind (e.g. `acq/fresh`); 4 of the 24 pairs are dropped. With
--embeddings DIR, sentence embeddings are read from DIR/<dataset>_<split>.npy (as bench computes them
with duke.encoder.encode_texts, in file order), else encoded here (slow: ~25 long texts/s on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from duke.certification import certify_threshold  # noqa: E402
from duke.model import Sample  # noqa: E402
from duke.training import train  # noqa: E402

DATASETS = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"
TARGET, DELTA = 0.95, 0.05


def _load(path: Path) -> list[dict]:
    if not path.exists():
        sys.exit(f"missing dataset file {path}")
    return [json.loads(line) for line in path.open()]


def rows_for(dataset: str, split: str, root: Path) -> list[dict]:
    if dataset == "r8":
        return _load(root / f"reuters-r8.{split}.jsonl")
    r8, rt = _load(root / f"reuters-r8.{split}.jsonl"), _load(root / f"rotten-tomatoes.{split}.jsonl")
    random.Random(0).shuffle(rt)
    drop = {("grain", k) for k in ("fresh", "rotten", "plot")} | {("ship", "plot")}
    out = []
    for i, a in enumerate(r8):
        b = rt[i % len(rt)]
        if (a["label"], b["label"]) not in drop:
            out.append({"text": a["text"] + " " + b["text"], "label": f"{a['label']}/{b['label']}"})
    return out


def embeddings(rows: list[dict], cached: Path | None) -> np.ndarray:
    if cached is not None and cached.exists():
        return np.load(cached)
    from duke.encoder import encode_texts

    return np.concatenate(
        [encode_texts([r["text"] for r in rows[i : i + 128]]) for i in range(0, len(rows), 128)]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["r8", "composite20"], default="r8")
    parser.add_argument("--sizes", default="100,500,1000")
    parser.add_argument("--test", type=int, default=1500, help="test rows served (from the file's start)")
    parser.add_argument("--datasets", type=Path, default=DATASETS)
    parser.add_argument("--embeddings", type=Path, default=None)
    parser.add_argument("--no-embeddings", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    name = "r8" if args.dataset == "r8" else "c20"
    train_rows = rows_for(args.dataset, "train", args.datasets)[: max(sizes)]
    test_rows = rows_for(args.dataset, "test", args.datasets)[: args.test]
    labels = tuple(sorted({r["label"] for r in train_rows + test_rows}))
    if args.no_embeddings:
        train_emb = test_emb = None
    else:
        cache = args.embeddings
        train_emb = embeddings(train_rows, cache / f"{name}_train.npy" if cache else None)
        test_emb = embeddings(test_rows, cache / f"{name}_test.npy" if cache else None)

    def sample(rows: list[dict], emb: np.ndarray | None, i: int) -> Sample:
        vector = emb[i] if emb is not None and i < len(emb) else None
        return Sample(rows[i]["text"], rows[i]["label"], labels, "topic", vector)

    samples = [sample(train_rows, train_emb, i) for i in range(len(train_rows))]
    tests = [sample(test_rows, test_emb, i) for i in range(len(test_rows))]
    columns = "train s | OOF acc | threshold | certified on (served/n, LB) | test served | test agreement"
    print(f"| {args.dataset} N | {columns} |")
    print("|---|---|---|---|---|---|---|")
    for n in sizes:
        started = time.perf_counter()
        model = train(samples[:n], seed=0)
        seconds = time.perf_counter() - started
        oof = model.out_of_fold
        truth = np.asarray([samples[i].label for i in oof.index])
        predicted = np.asarray([model.labels[j] for j in oof.predicted])
        correct = predicted == truth
        cert = certify_threshold(oof.confidence, correct, target=TARGET, delta=DELTA)
        preds = model.predict(tests)
        if cert.threshold is None:
            served, agreement = 0, float("nan")
        else:
            chosen = [
                p.label == t.label
                for p, t in zip(preds, tests, strict=True)
                if p.confidence >= cert.threshold
            ]
            served, agreement = len(chosen), (float(np.mean(chosen)) if chosen else float("nan"))
        threshold = f"{cert.threshold:.4f}" if cert.threshold is not None else "none"
        print(
            f"| {n} | {seconds:.1f} | {correct.mean():.3f} | {threshold} | {cert.served}/{cert.n}, "
            f"{cert.lower_bound:.3f} | {served / len(tests):.1%} | {agreement:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
