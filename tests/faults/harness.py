"""The fault harness: a real `manage.py qcluster` in its own process group, found and killed through /proc.

Works on both engines: on SQLite the cluster opens the test database file, on PostgreSQL the test
database (pytest-django's `test_<name>`), with the Redis broker when AICP_REDIS_URL is set. Tests using it
need `transaction=True` so the cluster sees committed rows, and must enqueue to the broker (patch
django_q's Conf.SYNC off in-process).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import quote

from django.db import connection

REPO = Path(__file__).resolve().parents[2]


def database_env() -> dict[str, str]:
    """Points a subprocess at the database this test process uses (the test database, not the dev one)."""
    settings_dict = connection.settings_dict
    if connection.vendor == "sqlite":
        return {"AICP_SQLITE_PATH": str(settings_dict["NAME"])}
    user = quote(settings_dict.get("USER") or "", safe="")
    password = quote(settings_dict.get("PASSWORD") or "", safe="")
    credentials = f"{user}:{password}@" if user else ""
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    return {"DATABASE_URL": f"postgresql://{credentials}{host}{port}/{settings_dict['NAME']}"}


def cluster_env(simulator_url: str, **overrides: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "AICP_Q_SYNC": "0",
        "AICP_TEST_KEEP_LLM_ENV": "1",
        "OPENAI_BASE_URL": simulator_url,
        "OPENAI_API_KEY": "test-key",
        "PYTHONUNBUFFERED": "1",
        **database_env(),
    }
    env.update(overrides)
    return env


# --- /proc ----------------------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, start time in clock ticks) of a live process, None if it is gone or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name may hold spaces and parentheses: the fields after it start at the last ')'.
    fields = raw[raw.rfind(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), float(fields[19])


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie, exited but not yet reaped, does not)."""
    return _stat(pid) is not None


def descendants(root: int) -> list[int]:
    """Live descendants of `root`, oldest first."""
    parents: dict[int, int] = {}
    started: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                parents[int(entry.name)], started[int(entry.name)] = stat
    found: list[int] = []
    frontier = [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        found.extend(children)
        frontier = children
    return sorted(found, key=lambda pid: started[pid])


def _socket_inodes_connected_to(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[3] == "01":  # ESTABLISHED
                inodes.add(fields[9])
    return inodes


def pids_connected_to(pids: Iterable[int], port: int) -> list[int]:
    """Those of `pids` holding an open TCP connection to `port` on this machine."""
    inodes = _socket_inodes_connected_to(port)
    connected = []
    for pid in pids:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if any(link.startswith("socket:[") and link[8:-1] in inodes for link in links):
            connected.append(pid)
    return connected


# --- the cluster ----------------------------------------------------------------------------------------


class Cluster:
    """`manage.py qcluster` as a session leader, so the whole tree can be killed at once."""

    def __init__(self, env: dict[str, str], log_path: Path, workers: int) -> None:
        self.env = env
        self.log_path = log_path
        self.workers = workers
        self.process: subprocess.Popen | None = None
        self.kills: list[str] = []

    def start(self, timeout_s: float = 60) -> Cluster:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(REPO / "manage.py"), "qcluster"],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # The qcluster process starts a sentinel, which starts the workers, a monitor and a pusher.
        wait_for(lambda: len(self.tree()) >= self.workers + 3, timeout_s, "the cluster to start", self.log)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def tree(self) -> list[int]:
        return descendants(self.pid) if self.process and self.process.poll() is None else []

    def workers_calling(self, port: int) -> list[int]:
        """Cluster processes with a connection to the LLM (the simulator): the workers running a drainer."""
        return pids_connected_to(self.tree(), port)

    def kill_worker(self, pid: int) -> None:
        assert pid in self.tree(), f"{pid} is not a process of this cluster"
        os.kill(pid, signal.SIGKILL)
        self.kills.append(f"worker {pid}")

    def kill_all(self) -> None:
        """SIGKILL to every process of the cluster at once: a power cut, nothing gets to clean up."""
        os.killpg(os.getpgid(self.pid), signal.SIGKILL)
        assert self.process is not None
        self.process.wait(timeout=30)
        self.kills.append(f"cluster {self.pid}")
        self.process = None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(os.getpgid(self.pid), signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""


def wait_for(
    condition: Callable[[], object], timeout_s: float, what: str, details: Callable[[], str] = lambda: ""
) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}\n{details()}")


# --- a Redis server of the test's own (tests/faults/test_broker_down.py) ----------------------------------


def free_loopback_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A redis-server on a free loopback port that the test stops and starts again (same port), never
    the shared one. Nothing persisted: a restart comes back empty, as after a crash without AOF."""

    def __init__(self, workdir: Path) -> None:
        import shutil

        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed")
        self.binary = binary
        self.workdir = workdir
        self.port = free_loopback_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 20) -> RedisServer:
        import redis

        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_for(answers, timeout_s, f"redis-server on port {self.port}")
        client.close()
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


# --- sessions (run_system's orphans) ------------------------------------------------------------------


def session_members(sid: int) -> list[int]:
    """Live processes of session `sid`, however deep or orphaned (re-parented to init) they are.

    A process started with start_new_session=True leads a session of its own, and everything it starts
    stays in it unless it calls setsid: what is left of it after it exits is found here.
    """
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        fields = raw[raw.rfind(")") + 2 :].split()
        if fields[0] not in ("Z", "X") and int(fields[3]) == sid:
            members.append(int(entry.name))
    return members
