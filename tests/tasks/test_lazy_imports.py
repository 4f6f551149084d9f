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
import aicp.urls, aicp.wsgi, tasks.admin, tasks.batch, tasks.jobs, duke.admin, duke.jobs
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
