"""`make run`: migrate, then run the web server, the django-q2 clusters and (without an API key) the LLM
simulator, and keep them running.

Two clusters: the main one executes tasks; Duke's learning cluster (DUKE_LEARNING_CLUSTER, "duke" unless
set, empty for none) trains and encodes at a low CPU priority (duke.workers). The web server preloads
Duke's production model in the background (DUKE_PRELOAD, duke.serving).

Each step prints a progress line with what remains ("[2/5] migrating the database…"; step 1, installing the
dependencies, is the Makefile's). Each child runs in a process group of its own: if one dies it is restarted
(after a backoff that doubles, up to RESTART_BACKOFF_MAX_S, with a log line), whatever it left behind in
its group killed first; a child that keeps dying right after its start makes run_system give up. Ctrl-C,
SIGTERM or SIGHUP stop every child's whole process group (SIGTERM, then SIGKILL after STOP_GRACE_S), so
nothing is left running; children also get SIGTERM if run_system itself is killed (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from aicp.checks import insecure_bind_reason
from core.perf.web import gunicorn_command

BANNER = "=" * 78
STEPS = 5  # 1 dependencies (the Makefile), 2 migrate, 3 agents and operator, 4 simulator, 5 workers and web
STOP_GRACE_S = 10.0  # how long children get to stop on SIGTERM before their process groups are killed
RESTART_BACKOFF_S = 1.0
RESTART_BACKOFF_MAX_S = 30.0
STABLE_AFTER_S = 60.0  # a child that ran this long before dying starts again with the shortest backoff
GIVE_UP_AFTER = 5  # consecutive deaths within STABLE_AFTER_S of their start: the child cannot run here
SUPERVISE_POLL_S = 0.5
PR_SET_PDEATHSIG = 1
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    # SIGTERM and SIGHUP take the same clean path as Ctrl-C: every child is stopped.
    raise KeyboardInterrupt


def _child_setup() -> None:
    """In the child before exec: its own process group (so a terminal's Ctrl-C reaches run_system alone,
    and stopping the child's group stops everything it started), and SIGTERM if run_system dies."""
    os.setpgid(0, 0)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # blocked in the parent around the fork
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: stop_all still stops the groups on a normal exit


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class Child:
    """A supervised child: how to start it, its process (its pid is its process group), its restarts."""

    name: str
    command: list[str]
    env: dict[str, str]
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    quick_deaths: int = 0
    restart_at: float | None = None  # monotonic; set while it waits for its backoff
    pgids: set[int] = field(default_factory=set)  # every group it ever had, for the final sweep

    def start(self) -> None:
        # A Ctrl-C between the fork and this bookkeeping would orphan the child: it waits until after.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            self.process = subprocess.Popen(self.command, env=self.env, preexec_fn=_child_setup)
            self.pgids.add(self.process.pid)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        self.started_at = time.monotonic()
        self.restart_at = None


class Command(BaseCommand):
    help = "Start AICP: web (gunicorn), workers (qcluster) and, without OPENAI_API_KEY, the LLM simulator."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=os.environ.get("AICP_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("AICP_PORT", "8000")))
        parser.add_argument("--web-workers", type=int, default=int(os.environ.get("AICP_WEB_WORKERS", "2")))
        parser.add_argument(
            "--simulator-port", type=int, default=int(os.environ.get("AICP_SIMULATOR_PORT", "8100"))
        )
        parser.add_argument(
            "--simulator-dataset",
            default=os.environ.get("AICP_SIMULATOR_DATASET", ""),
            help="JSONL {text,label} the simulator answers from (a perfect teacher for those texts).",
        )
        parser.add_argument(
            "--simulator-latency-ms",
            type=int,
            default=int(os.environ.get("AICP_SIMULATOR_LATENCY_MS", "300")),
        )
        parser.add_argument(
            "--no-learning-workers",
            action="store_true",
            help="Queue Duke's training and encoding on the learning cluster but start no worker for it "
            "(one runs elsewhere, e.g. on another machine).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # --host on the command line is invisible to the AICP_HOST system check: refuse it here too.
        refused = insecure_bind_reason(options["host"], debug=settings.DEBUG, secret_key=settings.SECRET_KEY)
        if refused:
            raise CommandError(refused)
        self.children: list[Child] = []
        child_env = os.environ.copy()
        child_env["PYTHONUNBUFFERED"] = "1"
        python = sys.executable
        manage = str(Path(settings.BASE_DIR) / "manage.py")

        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        signal.signal(signal.SIGHUP, _raise_keyboard_interrupt)
        # Explicitly, because a shell starts a background job with SIGINT ignored and Python keeps that.
        signal.signal(signal.SIGINT, _raise_keyboard_interrupt)
        failed = False
        try:
            self._step(2, "migrating the database", "agents, simulator, workers and web server")
            call_command("migrate", interactive=False, verbosity=1)
            if not settings.DEBUG:
                call_command("collectstatic", interactive=False, verbosity=0)
            self._step(3, "checking the default agents and the operator account", "simulator, workers, web")
            self._report_agents()
            self._ensure_operator()
            if not os.environ.get("OPENAI_API_KEY"):
                self._step(4, "starting the LLM simulator", "workers and web server")
                base_url = f"http://127.0.0.1:{options['simulator_port']}/v1"
                command = [python, manage, "llm_simulator", "--port", str(options["simulator_port"])]
                command += ["--latency-ms", str(options["simulator_latency_ms"])]
                if options["simulator_dataset"]:
                    command += ["--dataset", options["simulator_dataset"]]
                self._start(Child("llm simulator", command, dict(child_env)))
                self._wait_for(f"http://127.0.0.1:{options['simulator_port']}/health", "the LLM simulator")
                child_env.update(
                    {"OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "simulator", "AICP_LLM_SIMULATED": "1"}
                )
                self.stdout.write(
                    self.style.WARNING(
                        f"{BANNER}\nNo OPENAI_API_KEY: using the bundled LLM SIMULATOR at {base_url}\n"
                        "Answers are simulated, not from a real model. "
                        f"Set OPENAI_API_KEY to use the real API.\n{BANNER}"
                    )
                )
            else:
                self._step(4, "OPENAI_API_KEY is set: no simulator", "workers and web server")
            self._step(5, "starting the queue workers and the web server", "nothing")
            learning_cluster = child_env.setdefault("DUKE_LEARNING_CLUSTER", "duke")
            self._start(Child("qcluster", [python, manage, "qcluster"], dict(child_env)))
            if learning_cluster and not options["no_learning_workers"]:
                learning_env = {**child_env, "Q_CLUSTER_NAME": learning_cluster}
                self._start(Child("duke learning qcluster", [python, manage, "qcluster"], learning_env))
            bind = f"{options['host']}:{options['port']}"
            gunicorn = gunicorn_command(
                python=python,
                bind=bind,
                workers=options["web_workers"],
                balanced=settings.AICP_PERF_WEB_WORKER,
            )
            web_env = {**child_env, "DUKE_PRELOAD": child_env.get("DUKE_PRELOAD", "1")}
            self._start(Child("web", gunicorn, web_env))
            self._wait_for(f"http://{bind}/health", "the web server", accept_degraded=True)
            self.stdout.write(
                self.style.SUCCESS(
                    f"AICP is up: API http://{bind}/ · docs http://{bind}/api/docs/ · "
                    f"dashboard http://{bind}/dashboard · admin http://{bind}/admin/ "
                    "(Ctrl-C stops everything)"
                )
            )
            self._supervise()
        except KeyboardInterrupt:
            self.stdout.write("Shutting down…")
        except RuntimeError as exc:
            self.stderr.write(self.style.ERROR(f"{exc}; stopping the rest."))
            failed = True
        finally:
            self._stop_all()
        if failed:
            sys.exit(1)

    def _step(self, number: int, doing: str, remaining: str) -> None:
        self.stdout.write(f"[{number}/{STEPS}] {doing}… (then: {remaining})")
        self.stdout.flush()

    def _report_agents(self) -> None:
        from agents.models import Agent

        names = sorted(Agent.objects.filter(is_active=True).values_list("name", flat=True))
        self.stdout.write(f"      {len(names)} active agent(s): {', '.join(names) or 'none'}")

    def _start(self, child: Child) -> None:
        self.children.append(child)  # first: a Ctrl-C right after the start finds it
        child.start()
        assert child.process is not None
        self.stdout.write(f"      started {child.name} (pid {child.process.pid})")

    def _supervise(self) -> None:
        """Restarts children that die (the web server stays up when a worker cluster dies, and back)."""
        while True:
            now = time.monotonic()
            for child in self.children:
                process = child.process
                if child.restart_at is not None:
                    if now >= child.restart_at:
                        child.start()
                        assert child.process is not None
                        self.stdout.write(f"Restarted {child.name} (pid {child.process.pid})")
                    continue
                if process is None or process.poll() is None:
                    continue
                # Whatever it started (gunicorn's workers, the cluster's sentinel and workers) goes with it:
                # an orphaned worker would hold the port or keep running tasks beside the new one.
                _kill_group(process.pid, signal.SIGKILL)
                ran_s = now - child.started_at
                child.quick_deaths = 0 if ran_s >= STABLE_AFTER_S else child.quick_deaths + 1
                if child.quick_deaths >= GIVE_UP_AFTER:
                    raise RuntimeError(
                        f"{child.name} exited with code {process.returncode}, {child.quick_deaths} times "
                        f"in a row within {STABLE_AFTER_S:.0f} s of its start"
                    )
                backoff = min(RESTART_BACKOFF_MAX_S, RESTART_BACKOFF_S * 2 ** max(0, child.quick_deaths - 1))
                child.restarts += 1
                child.restart_at = now + backoff
                self.stderr.write(
                    self.style.ERROR(
                        f"{child.name} (pid {process.pid}) exited with code {process.returncode}; "
                        f"restarting it in {backoff:.0f} s (restart {child.restarts})"
                    )
                )
            time.sleep(SUPERVISE_POLL_S)

    def _stop_all(self) -> None:
        """Stops every child and everything it started; returns when no process of theirs is left."""
        # A second Ctrl-C or SIGTERM must not cut the shutdown short and orphan a child.
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        children = getattr(self, "children", [])
        for child in reversed(children):
            process = child.process
            if process is not None and process.poll() is None:
                self.stdout.write(f"Stopping {child.name} (pid {process.pid})")
                process.terminate()  # the leader stops its own workers in order
        pgids = {pgid for child in children for pgid in child.pgids}
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline and any(_group_alive(pgid) for pgid in pgids):
            for child in children:
                if child.process is not None and child.process.poll() is not None:
                    _kill_group(child.process.pid, signal.SIGTERM)  # the leader is gone: tell the rest
            time.sleep(0.1)
        for pgid in pgids:
            if _group_alive(pgid):
                self.stdout.write(f"Killing what is left of process group {pgid}")
                _kill_group(pgid, signal.SIGKILL)
        for child in children:
            if child.process is not None:
                try:
                    child.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_group_alive(pgid) for pgid in pgids):
            time.sleep(0.05)
        self.stdout.write("Stopped: no process left.")

    def _wait_for(self, url: str, what: str, *, accept_degraded: bool = False, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except urllib.error.HTTPError as exc:
                if accept_degraded and exc.code == 503:
                    return
            except OSError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"{what} did not answer at {url} within {timeout_s:.0f} s")

    def _ensure_operator(self) -> None:
        from users.models import User

        if User.objects.filter(is_staff=True).exists():
            return
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME")
        if username and os.environ.get("DJANGO_SUPERUSER_PASSWORD"):
            call_command("createsuperuser", interactive=False, verbosity=0)
            self.stdout.write(f"Created operator {username!r} from DJANGO_SUPERUSER_*.")
            return
        if not settings.DEBUG:
            self.stdout.write(self.style.WARNING("No operator exists: run `manage.py createsuperuser`."))
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser(username="admin", password=password)
        secret_file = Path(settings.DATA_DIR) / "admin-password.txt"
        secret_file.write_text(password + "\n")
        secret_file.chmod(0o600)
        self.stdout.write(
            self.style.WARNING(
                f"Created development operator 'admin' with password {password} (saved in {secret_file})."
            )
        )
