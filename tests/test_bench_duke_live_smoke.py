"""bench/duke_live.py runs end to end at a tiny size: three real stacks, nothing lost, its tables printed.

Like tests/test_bench_smoke.py for the load benchmarks: minutes make the numbers, this proves the script
still works against the stack (run_system, the API, the learning cluster) as it is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
LABELS = ("sports", "cooking", "finance")
WORDS = {
    "sports": "goal striker match league coach stadium referee season champion",
    "cooking": "recipe oven flour butter simmer garlic bake sauce kitchen",
    "finance": "shares dividend bank interest profit market stock bond investor",
}


def _dataset(path: Path, rows: int) -> Path:
    with path.open("w") as handle:
        for index in range(rows):
            label = LABELS[index % len(LABELS)]
            words = WORDS[label].split()
            text = " ".join(words[(index + k) % len(words)] for k in range(6)) + f" item {index}"
            handle.write(json.dumps({"text": text, "label": label}) + "\n")
    return path


def test_the_duke_live_benchmark_runs_learning_serving_and_both_throughput_stacks(tmp_path):
    dataset = _dataset(tmp_path / "topics.jsonl", 120)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AICP_", "DJANGO_"))}
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "duke_live.py"),
            *("--dataset", str(dataset), "--tasks", "60", "--new-tasks", "20", "--rate", "40"),
            *("--throughput-tasks", "30", "--latency-requests", "10", "--latency-ms", "20"),
            *("--settle-s", "5", "--sample-s", "1", "--train-every", "50", "--repeat", "1", "--no-write"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "### Learning and serving over time" in out
    assert "| learning phase: tasks POSTed (LLM agent) / rejected | 60 / 0 |" in out
    assert "| serving phase: tasks POSTed (`auto`) | 20 |" in out
    assert "| models loaded inside a request | 0 |" in out
    assert "| completed / failed / rejected | 30 / 0 / 0 | 30 / 0 / 0 |" in out
    assert "| ÷ learning off (target ≥ 0.8) |" in out
