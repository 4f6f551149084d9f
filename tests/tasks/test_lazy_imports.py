"""Web and queue processes that never train, serve Duke or call an LLM don't map torch or openai."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import sys
import django
django.setup()
import aicp.urls, aicp.wsgi, tasks.admin, tasks.execution.drainer, tasks.jobs, duke.admin, duke.jobs
heavy = ("torch", "openai", "transformers", "sentence_transformers")
print(",".join(name for name in heavy if name in sys.modules))
"""


def test_it_loads_the_web_and_the_queue_without_torch_or_openai(tmp_path):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "AICP_TEST_ROOT": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


WORKER_PROBE = """
import sys
import django
django.setup()
from django_q.signals import post_spawn
post_spawn.send(sender="django_q", proc_name="probe")
print("openai" in sys.modules, "torch" in sys.modules)
"""


def test_it_loads_the_llm_client_when_a_queue_worker_starts(tmp_path):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "AICP_TEST_ROOT": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", WORKER_PROBE], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "False"]  # its first drainer's calls don't wait for the import
