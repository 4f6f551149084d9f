"""Duke's routing decision under 8 concurrent requests, before and after n-gram first, side by side.

Trains one Duke version on ``--samples`` texts of ``--dataset`` (gold labels as the LLM's, embeddings from
the production encoder), then, on the SAME weights:

* certifies a threshold under each serving rule on the out-of-fold answers (Learn-then-Test, as
  training does): "mixed" = the mixed model with the text's embedding for every text (the rule before);
  "n-gram first" = the n-gram view's answer when its own probability reaches ``ngram_first``, else the
  mixed model's (the rule now, `TrainedModel.predict_served`); and scores both on ``--serve-dataset``:
  share served and agreement with the gold labels;
* times the decision a web worker makes per request, as the web server runs it: ``--processes`` worker
  processes × ``--threads`` threads (gunicorn's 2 × 8 by default; ``--clients`` requests in flight at
  once), interleaved rounds of: "before" = encode every text (one torch thread per call, no lock: the
  code before) then decide; "after" = n-gram first, and otherwise encode under the process's lock then
  decide (`duke.router`'s path). Only Duke's part of POST /tasks: HTTP, Django and the database come
  on top (see bench/duke_live.py's latency phase for the whole request).

    .venv/bin/python bench/duke_route_ab.py
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import REPO, load_average, percentile  # noqa: E402
from bench._live_stack import read_dataset, task_type_of  # noqa: E402

if TYPE_CHECKING:
    from duke.model import Sample, TrainedModel

DATASETS = REPO.parent / "shared" / "datasets"
TARGET_P99_MS = 50.0


def _train(args: argparse.Namespace) -> tuple[TrainedModel, list[Sample], list[tuple[str, str]], str]:
    from duke.encoder import encode_texts
    from duke.model import Sample
    from duke.training import TrainConfig, train

    rows = read_dataset(args.dataset)
    random.Random(args.seed).shuffle(rows)
    rows = rows[: args.samples]
    serve = read_dataset(args.serve_dataset)
    random.Random(args.seed + 1).shuffle(serve)
    serve = serve[: args.serve]
    labels = tuple(sorted({label for _, label in rows} | {label for _, label in serve}))
    task_type = task_type_of(args.dataset)
    started = time.perf_counter()
    vectors = encode_texts([text for text, _ in rows])
    encoded = time.perf_counter()
    samples = [
        Sample(text, label, labels, task_type, vec) for (text, label), vec in zip(rows, vectors, strict=True)
    ]
    model = train(samples, seed=args.seed, config=TrainConfig())
    print(
        f"trained on {len(samples)} samples: encoding {encoded - started:.0f} s, "
        f"training {time.perf_counter() - encoded:.0f} s",
        flush=True,
    )
    return model, samples, serve, task_type


def _certify(model: TrainedModel, samples: list[Sample], rule: float | None) -> tuple[float | None, float]:
    import numpy as np

    from duke.certification import certify_threshold

    oof = model.out_of_fold
    predicted, confidence = oof.served(rule)
    truth = np.asarray([model.label_index[samples[int(i)].label] for i in oof.index])
    usable = oof.has_embedding
    cert = certify_threshold(confidence[usable], (predicted == truth)[usable], target=0.95, delta=0.05)
    return cert.threshold, cert.coverage


# --- timing in worker processes -------------------------------------------------------------------------

_model = None


def _decide_before(
    model: TrainedModel, text: str, labels: tuple[str, ...], task_type: str, threshold: float
) -> tuple[bool, bool]:
    import torch

    from duke.encoder import _production_encoder
    from duke.model import Input

    # The request path before: every text encoded, one torch thread per call, no lock.
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    embedding = _production_encoder().encode([text])[0]
    prediction = model.predict([Input(text, labels, task_type, embedding)])[0]
    return prediction.confidence >= threshold, True


def _decide_after(
    model: TrainedModel, text: str, labels: tuple[str, ...], task_type: str, threshold: float
) -> tuple[bool, bool]:
    from duke.encoder import encode_texts
    from duke.model import Input

    alone = model.predict([Input(text, labels, task_type)])[0]
    if alone.confidence >= model.ngram_first:
        return alone.confidence >= threshold, False
    embedding = encode_texts([text])[0]
    prediction = model.predict([Input(text, labels, task_type, embedding)])[0]
    return prediction.confidence >= threshold, True


def _worker(payload: bytes, job: dict, out: Any) -> None:
    from duke.encoder import encode_texts
    from duke.model import TrainedModel

    model = TrainedModel.from_bytes(payload)
    encode_texts(["warm up"])  # loaded before the clock starts, as the preloader does
    decide = _decide_before if job["variant"] == "before" else _decide_after
    texts, labels, task_type, threshold = job["texts"], job["labels"], job["task_type"], job["threshold"]
    lock = threading.Lock()
    results: list[tuple[float, bool, bool]] = []
    start = threading.Barrier(job["threads"])

    def client(mine: list[str]) -> None:
        start.wait()
        for text in mine:
            began = time.perf_counter()
            served, encoded = decide(model, text, labels, task_type, threshold)
            ms = (time.perf_counter() - began) * 1000
            with lock:
                results.append((ms, served, encoded))

    threads = [
        threading.Thread(target=client, args=(texts[k :: job["threads"]],)) for k in range(job["threads"])
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.put(results)


def _round(
    payload: bytes,
    variant: str,
    texts: list[str],
    args: argparse.Namespace,
    labels: tuple[str, ...],
    task_type: str,
    threshold: float,
) -> list:
    ctx = multiprocessing.get_context("spawn")  # fork after torch ran threads can deadlock
    out = ctx.Queue()
    per = [texts[k :: args.processes] for k in range(args.processes)]
    procs = [
        ctx.Process(
            target=_worker,
            args=(
                payload,
                {
                    "variant": variant,
                    "texts": mine,
                    "labels": labels,
                    "task_type": task_type,
                    "threshold": threshold,
                    "threads": args.clients // args.processes,
                },
                out,
            ),
        )
        for mine in per
    ]
    for proc in procs:
        proc.start()
    results = [row for _ in procs for row in out.get()]
    for proc in procs:
        proc.join()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DATASETS / "reuters-r8.train.jsonl")
    parser.add_argument("--serve-dataset", type=Path, default=DATASETS / "reuters-r8.test.jsonl")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--serve", type=int, default=800, help="texts of --serve-dataset scored and timed")
    parser.add_argument("--clients", type=int, default=8, help="requests in flight at once")
    parser.add_argument("--processes", type=int, default=2, help="web worker processes")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per variant")
    parser.add_argument("--requests", type=int, default=400, help="timed requests per round")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for path in (args.dataset, args.serve_dataset):
        if not path.is_file():
            parser.error(f"dataset {path} not found (see ../shared/datasets/README.md)")
    load_before = load_average()
    model, samples, serve, task_type = _train(args)
    from duke.model import Input

    labels = tuple(sorted(model.label_index))
    kappa = model.ngram_first
    rules = {"mixed model for every text (before)": None, f"n-gram first at {kappa} (now)": kappa}
    print(
        f"\n| rule | certified threshold | out-of-fold coverage | served on {args.serve_dataset.name} "
        "| agreement with gold |\n|---|---:|---:|---:|---:|"
    )
    from duke.encoder import encode_texts

    serve_vecs = encode_texts([text for text, _ in serve])
    thresholds = {}
    for name, rule in rules.items():
        threshold, coverage = _certify(model, samples, rule)
        thresholds[rule] = threshold
        model.metadata["ngram_first"] = rule
        preds = model.predict_served(
            [Input(t, labels, task_type, v) for (t, _), v in zip(serve, serve_vecs, strict=True)]
        )
        served = [
            (p.label == gold)
            for p, (_, gold) in zip(preds, serve, strict=True)
            if threshold is not None and p.confidence >= threshold
        ]
        agree = f"{sum(served) / len(served):.1%}" if served else "–"
        shown = "–" if threshold is None else f"{threshold:.3f}"
        print(f"| {name} | {shown} | {coverage:.1%} | {len(served) / len(serve):.1%} | {agree} |")
    model.metadata["ngram_first"] = kappa
    payload = model.to_bytes()
    threshold = thresholds[kappa] if thresholds[kappa] is not None else 0.5
    rng = random.Random(args.seed)
    texts = [text for text, _ in serve]
    timings: dict[str, list] = {"before": [], "after": []}
    for _ in range(args.rounds):
        for variant in ("before", "after"):
            chosen = rng.sample(texts, min(args.requests, len(texts)))
            timings[variant] += _round(payload, variant, chosen, args, labels, task_type, threshold)
    print(
        f"\nDecision time per request, {args.clients} in flight ({args.processes} processes × "
        f"{args.clients // args.processes} threads), {args.rounds} interleaved rounds × {args.requests}; "
        f"load average before {load_before}, after {load_average()}\n"
    )
    print(
        "| variant | requests | encoded | p50 | p99 | max | served: p99 |\n"
        "|---|---:|---:|---:|---:|---:|---:|"
    )
    for variant, rows in timings.items():
        ms = [r[0] for r in rows]
        served = [r[0] for r in rows if r[1]]
        print(
            f"| {variant} | {len(rows)} | {sum(r[2] for r in rows) / len(rows):.0%} | "
            f"{percentile(ms, 50):.1f} | {percentile(ms, 99):.1f} | {max(ms):.1f} | "
            f"{percentile(served, 99) if served else float('nan'):.1f} ms |"
        )
    after_p99 = percentile([r[0] for r in timings["after"] if r[1]], 99)
    before_p99 = percentile([r[0] for r in timings["before"] if r[1]], 99)
    print(
        f"\nVERDICT Duke's decision, served requests, p99 at {args.clients} in flight: before "
        f"{before_p99:.1f} ms, after {after_p99:.1f} ms ({before_p99 / after_p99:.1f}x); "
        f"{'under' if after_p99 < TARGET_P99_MS else 'NOT under'} {TARGET_P99_MS:g} ms; load {load_average()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
