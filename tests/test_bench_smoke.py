"""The load benchmarks run end to end at a tiny size: nothing lost, no errors, a result table printed.

They are run by hand (`make bench`) and nothing else imports them, so a refactor of one can break another
unnoticed (bench/throughput.py once imported a helper bench/api_load.py no longer had). Minutes of load
make the numbers; seconds are enough to prove the scripts still work.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _run_bench(script: str, *args: str) -> str:
    # The benchmarks set up their own stack from a clean environment: not the test settings.
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AICP_", "DJANGO_"))}
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), *args, "--no-write"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.stdout


def test_the_throughput_benchmark_runs_the_whole_stack_and_loses_nothing():
    out = _run_bench(
        "throughput.py", "--tasks", "40", "--live-tasks", "20", "--latency-ms", "50", "--concurrency", "8"
    )
    assert "| completed / failed | 40 / 0 |" in out
    assert out.count("| lost / duplicated | 0 / 0 |") == 2  # the backlog and the live phase
    assert "(0 errors)" in out


def test_the_api_load_benchmark_measures_both_endpoints_without_errors():
    out = _run_bench(
        "api_load.py",
        "--clients",
        "4",
        "--seconds",
        "1",
        "--warmup-s",
        "0.5",
        "--open-loop-s",
        "1",
        "--in-process",
        "16",
    )
    rows = [line for line in out.splitlines() if line.startswith(("| bare Django view", "| `POST /tasks`"))]
    # bare insert, POST /tasks, the open-loop phase, and POST /tasks with a database per web worker
    assert len(rows) == 4, out
    for row in rows:
        errors = row.split("|")[6].strip()
        assert errors == "0", row
    assert "| POST /tasks |" in out  # the in-process table
