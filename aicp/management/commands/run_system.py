"""`make run`: migrate, then run the web server, the django-q2 clusters and (without an API key) the LLM
simulator.

Two clusters: the main one executes tasks; Duke's learning cluster (DUKE_LEARNING_CLUSTER, "duke" unless
set, empty for none) trains and encodes at a low CPU priority (duke.workers). The web server preloads
Duke's production model in the background (DUKE_PRELOAD, duke.serving).

Ctrl-C (or SIGTERM) stops everything it started; if any child dies, the others are stopped too.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from aicp.checks import insecure_bind_reason
from core.perf.web import gunicorn_command

BANNER = "=" * 78


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    # SIGTERM takes the same clean path as Ctrl-C: every child is stopped.
    raise KeyboardInterrupt


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
        children: list[tuple[str, subprocess.Popen]] = []
        child_env = os.environ.copy()
        child_env["PYTHONUNBUFFERED"] = "1"
        python = sys.executable
        manage = str(Path(settings.BASE_DIR) / "manage.py")

        def stop_all(*_: object) -> None:
            # A second Ctrl-C or SIGTERM must not cut the shutdown short and orphan a child.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            for name, process in reversed(children):
                if process.poll() is None:
                    self.stdout.write(f"Stopping {name} (pid {process.pid})")
                    process.terminate()
            deadline = time.monotonic() + 15
            for _, process in children:
                try:
                    process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.kill()

        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        # Explicitly, because a shell starts a background job with SIGINT ignored and Python keeps that.
        signal.signal(signal.SIGINT, _raise_keyboard_interrupt)
        failed = False
        try:
            if not os.environ.get("OPENAI_API_KEY"):
                base_url = f"http://127.0.0.1:{options['simulator_port']}/v1"
                command = [python, manage, "llm_simulator", "--port", str(options["simulator_port"])]
                command += ["--latency-ms", str(options["simulator_latency_ms"])]
                if options["simulator_dataset"]:
                    command += ["--dataset", options["simulator_dataset"]]
                children.append(("llm simulator", subprocess.Popen(command, env=child_env)))
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
            call_command("migrate", interactive=False, verbosity=1)
            if not settings.DEBUG:
                call_command("collectstatic", interactive=False, verbosity=0)
            self._ensure_operator()
            learning_cluster = child_env.setdefault("DUKE_LEARNING_CLUSTER", "duke")
            children.append(("qcluster", subprocess.Popen([python, manage, "qcluster"], env=child_env)))
            if learning_cluster and not options["no_learning_workers"]:
                learning_env = {**child_env, "Q_CLUSTER_NAME": learning_cluster}
                learning = subprocess.Popen([python, manage, "qcluster"], env=learning_env)
                children.append(("duke learning qcluster", learning))
            bind = f"{options['host']}:{options['port']}"
            gunicorn = gunicorn_command(
                python=python,
                bind=bind,
                workers=options["web_workers"],
            )
            web_env = {**child_env, "DUKE_PRELOAD": child_env.get("DUKE_PRELOAD", "1")}
            children.append(("web", subprocess.Popen(gunicorn, env=web_env)))
            self._wait_for(f"http://{bind}/health", "the web server", accept_degraded=True)
            self.stdout.write(
                self.style.SUCCESS(
                    f"AICP is up: API http://{bind}/ · docs http://{bind}/api/docs/ · "
                    f"dashboard http://{bind}/dashboard · admin http://{bind}/admin/ "
                    "(Ctrl-C stops everything)"
                )
            )
            while True:
                for name, process in children:
                    if process.poll() is not None:
                        raise RuntimeError(f"{name} exited with code {process.returncode}")
                time.sleep(0.5)
        except KeyboardInterrupt:
            self.stdout.write("Shutting down…")
        except RuntimeError as exc:
            self.stderr.write(self.style.ERROR(f"{exc}; stopping the rest."))
            failed = True
        finally:
            stop_all()
        if failed:
            sys.exit(1)

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
