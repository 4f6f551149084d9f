"""Shared by the benchmarks: a fresh environment, child processes, memory sampling, results in the docs."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import secrets
import shlex
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = REPO / "docs" / "BENCHMARKS.md"
PYTHON = sys.executable
MANAGE = str(REPO / "manage.py")
EMBEDDINGS_CACHE = REPO / ".cache" / "duke-bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stack_env(data_dir: Path, **overrides: str) -> dict[str, str]:
    """The environment of every process of a benchmark stack: its own data dir and SQLite file."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AICP_", "DJANGO_", "OPENAI_", "DATABASE_URL"))
    }
    env.update(
        {
            # Production mode: DEBUG would record every SQL query and skew the numbers.
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(48),
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "AICP_SSL_REDIRECT": "0",
            "DJANGO_SETTINGS_MODULE": "aicp.settings",
            "AICP_DATA_DIR": str(data_dir),
            "AICP_SQLITE_PATH": str(data_dir / "aicp.sqlite3"),
            "AICP_STATIC_ROOT": str(data_dir / "static"),
            "AICP_LOG_LEVEL": "INFO",
            "AICP_Q_SYNC": "0",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides)
    return env


def apply_env(env: dict[str, str]) -> None:
    """Makes this process use the stack's settings (before django.setup())."""
    for key in [k for k in os.environ if k.startswith(("AICP_", "DJANGO_", "OPENAI_", "DATABASE_URL"))]:
        del os.environ[key]
    os.environ.update(env)


def run_checked(command: Sequence[str], env: dict[str, str], log: Path) -> None:
    with log.open("ab") as out:
        subprocess.run(command, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, check=True)


def start(command: Sequence[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    out = log.open("ab")
    return subprocess.Popen(
        list(command), env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(process: subprocess.Popen, timeout_s: float = 20.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for_http(url: str, timeout_s: float = 60.0, *, accept: Iterable[int] = (200,)) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status in accept:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code in accept:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout_s:.0f} s")


def wait_for_log(log: Path, pattern: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log.exists() and re.search(pattern, log.read_text(errors="replace")):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{pattern!r} did not appear in {log} within {timeout_s:.0f} s")


# --- memory --------------------------------------------------------------------------------------------


def _proc_table() -> tuple[dict[int, int], dict[int, int]]:
    """(pid → parent pid, pid → RSS bytes) of every process we can read."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        parents[int(entry)] = int(fields.get("PPid", "0").strip())
        rss[int(entry)] = int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
    return parents, rss


def tree_pids(roots: Iterable[int]) -> set[int]:
    parents, _ = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    seen: set[int] = set()
    stack = [pid for pid in roots if pid in parents]
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        stack.extend(children.get(pid, []))
    return seen


def _pss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_memory(roots: Iterable[int]) -> tuple[int, int]:
    """(RSS, PSS) of the processes ``roots`` and all their descendants, summed.

    RSS counts a page shared by forked workers once per process; PSS splits it between them, so the
    PSS sum is what the processes really occupy together.
    """
    _, rss = _proc_table()
    pids = tree_pids(roots)
    return sum(rss.get(pid, 0) for pid in pids), sum(_pss(pid) for pid in pids)


def tree_cpu_s(roots: Iterable[int]) -> float:
    """User + system CPU seconds of the live processes of the trees (and the children they reaped)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in tree_pids(roots):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return total / ticks


class RssSampler:
    """Samples the summed memory of named process trees in a thread; keeps each one's and the total's peak."""

    def __init__(self, interval_s: float = 0.25) -> None:
        self.interval_s = interval_s
        self.roots: dict[str, list[int]] = {}
        self.peaks: dict[str, int] = {}
        self.total_peak = 0
        self.total_pss_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def watch(self, name: str, pid: int) -> None:
        self.roots.setdefault(name, []).append(pid)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def sample(self) -> None:
        total = total_pss = 0
        for name, pids in list(self.roots.items()):
            rss, pss = tree_memory(pids)
            self.peaks[name] = max(self.peaks.get(name, 0), rss)
            total += rss
            total_pss += pss
        self.total_peak = max(self.total_peak, total)
        self.total_pss_peak = max(self.total_pss_peak, total_pss)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)


def mib(value: int) -> str:
    return f"{value / 2**20:.0f} MiB"


# --- numbers and the report ----------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def load_average() -> str:
    return "{:.1f} / {:.1f} / {:.1f}".format(*os.getloadavg())


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPU ({cpu}), Python {platform.python_version()}, {platform.system()}"


def command_line() -> str:
    return " ".join(shlex.quote(arg) for arg in [".venv/bin/python", *sys.argv])


def write_section(title: str, body: str, path: Path = BENCHMARKS_MD) -> None:
    """Replaces the ``## title`` section of the benchmarks page (or appends it); other sections stay."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    section = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text)


# --- embeddings ----------------------------------------------------------------------------------------


def cached_embeddings(
    path: Path, encoder_id: str, texts: list[str], encode: Callable[[list[str]], Any]
) -> Any:
    """``encode(texts)`` for the texts of a dataset file, computed once and cached by the file's content
    hash and the encoder's id (embeddings of different encoders are not interchangeable): a numpy array.
    """
    import numpy as np

    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    safe_id = re.sub(r"[^A-Za-z0-9.-]+", "_", encoder_id)
    target = EMBEDDINGS_CACHE / f"{path.name}.{digest}.{safe_id}.npy"
    if target.exists():
        cached = np.load(target)
        if cached.shape[0] == len(texts):
            return cached
    print(
        f"encoding {len(texts)} texts of {path.name} with {encoder_id} (once; cached in {target})",
        file=sys.stderr,
    )
    started = time.perf_counter()
    encoded = encode(texts)
    print(f"  done in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    EMBEDDINGS_CACHE.mkdir(parents=True, exist_ok=True)
    np.save(target, encoded)
    return encoded
