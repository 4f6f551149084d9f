"""`manage.py run_system` (what `make run` starts) on a fresh data folder: the whole system, for real.

It migrates a new SQLite database, seeds the agents, starts the simulator (no OPENAI_API_KEY), gunicorn and a
qcluster; a buyer registers over HTTP and sees a labeling and a free-form task complete; then SIGINT, sent
to run_system alone (not to its process group, as a terminal's Ctrl-C would), stops every process it started.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.faults.harness import alive, descendants, wait_for

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _call(method: str, url: str, body: dict | None = None, token: str = "") -> tuple[int, dict]:
    request = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _health(base: str) -> dict | None:
    try:
        return _call("GET", f"{base}/health")[1]
    except OSError:
        return None


def test_it_starts_the_whole_system_and_stops_everything_on_sigint(tmp_path):
    port, simulator_port = _free_port(), _free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OPENAI_", "DATABASE_URL"))}
    env.update(
        DJANGO_SETTINGS_MODULE="aicp.settings",
        AICP_DATA_DIR=str(tmp_path / "data"),
        AICP_PORT=str(port),
        AICP_SIMULATOR_PORT=str(simulator_port),
        AICP_SIMULATOR_LATENCY_MS="50",
        PYTHONUNBUFFERED="1",
    )
    env.pop("AICP_REDIS_URL", None)
    log_path = tmp_path / "run_system.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "run_system"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"

    def details() -> str:
        return log_path.read_text(errors="replace")[-4000:]

    try:
        health = wait_for(lambda: _health(base), 180, "the web server", details)
        assert health["status"] in ("up", "down") and "llm" not in health  # details are for operators
        password = (tmp_path / "data" / "admin-password.txt").read_text().strip()
        status, operator = _call("POST", f"{base}/auth/token", {"username": "admin", "password": password})
        assert status == 200, operator
        operator_health = _call("GET", f"{base}/health", token=operator["access"])[1]
        assert operator_health["llm"] == {
            "backend": "simulator",
            "base_url": f"http://127.0.0.1:{simulator_port}/v1",
        }
        assert "LLM SIMULATOR" in log_path.read_text()
        started = descendants(process.pid)
        assert len(started) >= 4, started  # simulator, gunicorn master + workers, qcluster and its workers

        status, _ = _call(
            "POST", f"{base}/auth/register", {"username": "fresh", "password": "fresh-pass-9271"}
        )
        assert status == 201
        status, tokens = _call(
            "POST", f"{base}/auth/token", {"username": "fresh", "password": "fresh-pass-9271"}
        )
        assert status == 200
        token = tokens["access"]
        labeling = {"description": "Is this about sport? The match ended 2-1.", "complexity": 1}
        labeling["labels"] = ["sport", "politics"]
        submitted = [
            _call("POST", f"{base}/tasks", labeling, token),
            _call("POST", f"{base}/tasks", {"description": "Write one sentence.", "complexity": 1}, token),
        ]
        assert [status for status, _ in submitted] == [201, 201], submitted

        def final() -> list[dict] | None:
            tasks = [_call("GET", f"{base}/tasks/{body['id']}", token=token)[1] for _, body in submitted]
            return tasks if all(t["status"] in ("completed", "failed") for t in tasks) else None

        done = wait_for(final, 120, "both tasks to finish", details)
        assert [t["status"] for t in done] == ["completed", "completed"], done
        assert done[0]["result"] in ("sport", "politics") and done[1]["result"]
    finally:
        os.kill(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
    survivors = [pid for pid in started if alive(pid)]
    assert survivors == [], details()
    assert "Shutting down" in log_path.read_text()
