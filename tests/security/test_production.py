"""`DJANGO_DEBUG=0`: Django's deployment checks pass, responses carry the security headers, cookies are
secure, and an insecure configuration refuses to start. Each case is a fresh process with production
settings (`aicp.settings`, not the test settings), as a deployment would run it."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HOST = "aicp.example.com"


def _production_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "DJANGO_SETTINGS_MODULE": "aicp.settings",
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
        "DJANGO_ALLOWED_HOSTS": HOST,
        "AICP_DATA_DIR": str(tmp_path / "data"),
        "AICP_STATIC_ROOT": str(tmp_path / "static"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.update(overrides)
    return {key: value for key, value in env.items() if value is not None}


def _manage(tmp_path: Path, *args: str, **overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "manage.py"), *args],
        cwd=REPO,
        env=_production_env(tmp_path, **overrides),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_it_passes_the_deployment_checks(tmp_path):
    result = _manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    "secret_key",
    [
        pytest.param("", id="missing"),
        pytest.param("dev-only-insecure-secret-key-change-me-0123456789abcdefghijklmnop", id="the-dev-key"),
        pytest.param("short-but-set", id="too-short"),
    ],
)
def test_it_refuses_to_start_with_an_insecure_secret_key(tmp_path, secret_key):
    result = _manage(tmp_path, "check", DJANGO_SECRET_KEY=secret_key)
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr


def test_it_refuses_to_start_without_allowed_hosts(tmp_path):
    result = _manage(tmp_path, "check", DJANGO_ALLOWED_HOSTS="")
    assert result.returncode != 0
    assert "DJANGO_ALLOWED_HOSTS" in result.stderr


_PROBE = f"""
import json, django
django.setup()
from django.conf import settings
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.management import call_command
from django.http import HttpResponse
from django.middleware.csrf import CsrfViewMiddleware, get_token
from django.test import Client, RequestFactory
call_command("migrate", verbosity=0)
client = Client(HTTP_HOST="{HOST}")
api = client.get("/auth/me", secure=True)
plain = client.get("/auth/me")

def view(request):
    get_token(request)  # a page with a form
    request.session["seen"] = True  # a logged-in operator
    return HttpResponse("ok")

request = RequestFactory().get("/dashboard", secure=True, HTTP_HOST="{HOST}")
response = SessionMiddleware(CsrfViewMiddleware(view))(request)

def flags(name):
    cookie = response.cookies[name]
    return {{"secure": cookie["secure"], "httponly": cookie["httponly"], "samesite": cookie["samesite"]}}

print(json.dumps({{
    "api_status": api.status_code,
    "api_headers": dict(api.headers),
    "plain_status": plain.status_code,
    "plain_location": plain.headers.get("Location", ""),
    "csrf_cookie": flags(settings.CSRF_COOKIE_NAME),
    "session_cookie": flags(settings.SESSION_COOKIE_NAME),
    "settings": {{name: getattr(settings, name) for name in (
        "DEBUG", "SESSION_COOKIE_SECURE", "SESSION_COOKIE_HTTPONLY", "CSRF_COOKIE_SECURE",
        "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS")}},
}}))
"""


@pytest.fixture(scope="module")
def production_responses(tmp_path_factory) -> dict:
    tmp_path = tmp_path_factory.mktemp("production")
    result = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=REPO,
        env=_production_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_it_sends_security_headers_in_production(production_responses):
    headers = production_responses["api_headers"]
    assert headers["Strict-Transport-Security"].startswith("max-age=31536000")
    assert "includeSubDomains" in headers["Strict-Transport-Security"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert production_responses["api_status"] == 401


def test_it_sets_secure_cookies_in_production(production_responses):
    assert production_responses["settings"] == {
        "DEBUG": False,
        "SESSION_COOKIE_SECURE": True,
        "SESSION_COOKIE_HTTPONLY": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_SSL_REDIRECT": True,
        "SECURE_HSTS_SECONDS": 31536000,
    }
    assert production_responses["session_cookie"] == {"secure": True, "httponly": True, "samesite": "Lax"}
    assert production_responses["csrf_cookie"]["secure"] is True
    assert production_responses["csrf_cookie"]["samesite"] == "Lax"


def test_it_redirects_plain_http_to_https_in_production(production_responses):
    assert production_responses["plain_status"] == 301
    assert production_responses["plain_location"] == f"https://{HOST}/auth/me"
