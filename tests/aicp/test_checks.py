"""Development settings never listen beyond loopback (DEBUG pages, a public signing key)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.checks import run_checks
from django.core.management import CommandError, call_command

from aicp.checks import insecure_bind_reason, is_loopback

REPO = Path(__file__).resolve().parents[2]
REAL_KEY = "k" * 20 + "a-random-production-secret-key-0123456789"


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost", "unix:/run/aicp.sock"]
)
def test_it_takes_loopback_addresses_as_local(host):
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "", "::", "192.168.1.20", "10.0.0.1", "example.com"])
def test_it_takes_every_other_address_as_reachable(host):
    assert not is_loopback(host)


def test_it_allows_development_settings_on_loopback():
    assert (
        insecure_bind_reason("127.0.0.1", debug=True, secret_key=django_settings.DEVELOPMENT_SECRET_KEY)
        is None
    )


def test_it_refuses_debug_beyond_loopback():
    reason = insecure_bind_reason("0.0.0.0", debug=True, secret_key=REAL_KEY)
    assert reason is not None and "DEBUG" in reason


@pytest.mark.parametrize("key", [django_settings.DEVELOPMENT_SECRET_KEY, "short-key"])
def test_it_refuses_the_development_or_a_short_key_beyond_loopback(key):
    reason = insecure_bind_reason("192.168.1.20", debug=False, secret_key=key)
    assert reason is not None and "secret key" in reason


def test_it_allows_production_settings_anywhere():
    assert insecure_bind_reason("0.0.0.0", debug=False, secret_key=REAL_KEY) is None


def test_it_reports_an_insecure_aicp_host_as_a_system_check_error(monkeypatch, settings):
    settings.DEBUG = True
    monkeypatch.setenv("AICP_HOST", "0.0.0.0")
    assert [message.id for message in run_checks()] == ["aicp.E001"]
    monkeypatch.setenv("AICP_HOST", "127.0.0.1")
    assert [message.id for message in run_checks()] == []


def test_it_stops_make_run_on_a_public_host_with_development_settings(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "DATABASE_URL"))}
    env.update(DJANGO_SETTINGS_MODULE="aicp.settings", AICP_DATA_DIR=str(tmp_path), AICP_HOST="0.0.0.0")
    finished = subprocess.run(
        [sys.executable, "manage.py", "run_system"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode != 0
    assert "aicp.E001" in finished.stderr and "DEBUG on" in finished.stderr
    assert "LLM SIMULATOR" not in finished.stdout, "nothing was started"


def test_it_refuses_a_reachable_host_given_on_run_systems_command_line(settings):
    settings.DEBUG = True
    with pytest.raises(CommandError, match="0.0.0.0"):
        call_command("run_system", "--host", "0.0.0.0")
