"""`manage.py run_system` (what `make run` starts) on a fresh data folder: the whole system, for real.

It migrates a new SQLite database, seeds the agents, starts the simulator (no OPENAI_API_KEY), gunicorn and a
qcluster; a buyer registers over HTTP and sees a labeling and a free-form task complete; then SIGINT, sent
to run_system alone (not to its process group, as a terminal's Ctrl-C would), stops every process it started.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.faults.harness import alive, descendants, session_members, wait_for

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
    process, base, log_path, simulator_port = _start_run_system(tmp_path)

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


def _start_run_system(tmp_path: Path) -> tuple[subprocess.Popen, str, Path, int]:
    """run_system in its own session on free ports: process, base URL, log, the simulator's port."""
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
    env.pop("AICP_Q_SYNC", None)  # tests.settings sets it for in-process jobs; `make run` queues them
    log_path = tmp_path / "run_system.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "run_system"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own session: whatever it leaves behind is found by session id
        )
    return process, f"http://127.0.0.1:{port}", log_path, simulator_port


def _child_pid(log_path: Path, name: str, verb: str = "started") -> int | None:
    found = re.findall(rf"{verb} {re.escape(name)} \(pid (\d+)\)", log_path.read_text(errors="replace"))
    return int(found[-1]) if found else None


def test_it_shows_progress_restarts_dead_children_and_leaves_no_process_after_ctrl_c(tmp_path):
    process, base, log_path, _ = _start_run_system(tmp_path)

    def details() -> str:
        return log_path.read_text(errors="replace")[-4000:]

    try:
        wait_for(lambda: "AICP is up" in log_path.read_text(), 180, "the system to start", details)
        log = log_path.read_text()
        steps = [
            "[2/5] migrating the database… (then: agents, simulator, workers and web server)",
            "[3/5] checking the default agents and the operator account…",
            "[4/5] starting the LLM simulator…",
            "[5/5] starting the queue workers and the web server… (then: nothing)",
            "AICP is up",
        ]
        positions = [log.find(step) for step in steps]
        assert -1 not in positions and positions == sorted(positions), log

        # kill -9 the web server's master: its workers go with it, a new one answers /health.
        web = _child_pid(log_path, "web")
        assert web is not None, details()
        old_web_tree = [web, *descendants(web)]
        os.kill(web, signal.SIGKILL)
        restarted_web = wait_for(
            lambda: _child_pid(log_path, "web", "Restarted"), 60, "web to restart", details
        )
        assert restarted_web != web
        assert (
            "web (pid" in log_path.read_text() and "restarting it in 1 s (restart 1)" in log_path.read_text()
        )
        wait_for(lambda: _health(base), 60, "/health after the web server's restart", details)
        wait_for(lambda: not any(alive(pid) for pid in old_web_tree), 30, "the old web tree gone", details)

        # kill -9 the queue cluster's master: its sentinel and workers are killed, a new cluster starts,
        # and a task submitted now completes on it.
        cluster = _child_pid(log_path, "qcluster")
        assert cluster is not None, details()
        old_cluster_tree = [cluster, *descendants(cluster)]
        assert len(old_cluster_tree) >= 3, old_cluster_tree
        os.kill(cluster, signal.SIGKILL)
        wait_for(lambda: _child_pid(log_path, "qcluster", "Restarted"), 60, "the cluster to restart", details)
        wait_for(lambda: not any(alive(pid) for pid in old_cluster_tree), 30, "the old cluster gone", details)
        status, _ = _call(
            "POST", f"{base}/auth/register", {"username": "after", "password": "after-pass-9271"}
        )
        assert status == 201
        token = _call("POST", f"{base}/auth/token", {"username": "after", "password": "after-pass-9271"})[1]
        body = {"description": "Is this about sport? The match ended 2-1.", "complexity": 1}
        body["labels"] = ["sport", "politics"]
        status, task = _call("POST", f"{base}/tasks", body, token["access"])
        assert status == 201, task

        def finished() -> dict | None:
            current = _call("GET", f"{base}/tasks/{task['id']}", token=token["access"])[1]
            return current if current["status"] in ("completed", "failed") else None

        assert wait_for(finished, 120, "the task on the restarted cluster", details)["status"] == "completed"
        assert len(session_members(process.pid)) >= 6  # run_system, simulator, web tree, cluster trees
    finally:
        # A terminal's Ctrl-C: SIGINT to run_system's whole foreground process group.
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            for pid in session_members(process.pid):
                os.kill(pid, signal.SIGKILL)
            raise
    wait_for(lambda: session_members(process.pid) == [], 15, "no process of the session left", details)
    assert process.returncode == 0, details()
    assert "Stopped: no process left." in log_path.read_text()


def _make_dry_run(*args: str) -> str:
    result = subprocess.run(
        ["make", "-n", *args, "run"], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout


@pytest.mark.skipif(
    shutil.which("make") is None or not (REPO / ".venv" / ".runtime-installed").exists(),
    reason="needs make and an installed .venv",
)
def test_make_run_installs_only_when_the_requirements_changed():
    # Warm: the stamp is newer than requirements.txt, so pip does not run and step 1 is one line.
    warm = _make_dry_run()
    assert "pip install" not in warm
    assert "[1/5] dependencies are installed" in warm and "manage.py run_system" in warm
    # As if requirements.txt had just changed (-W: without touching it): pip runs, announced as step 1.
    changed = _make_dry_run("-W", "requirements.txt")
    assert "[1/5] installing dependencies" in changed and "pip install" in changed
    assert changed.index("pip install") < changed.index("manage.py run_system")
