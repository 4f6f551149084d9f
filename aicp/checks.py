"""Refuse to serve beyond this machine with development settings.

DEBUG's error pages show code and settings, and the development secret key is public: with it anyone
can sign an operator's JWT. Both are fine on loopback and never on an address others can reach.
`insecure_bind_reason` decides; `manage.py run_system` asks it about the address it is told to bind, and
the system check below asks it about AICP_HOST, so `AICP_HOST=0.0.0.0 make run` stops before starting.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, register

MIN_SECRET_KEY_LENGTH = 50


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach: 127.0.0.0/8, ::1, localhost, a unix socket."""
    name = host.strip().lower()
    if name.startswith("unix:") or name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False  # "", 0.0.0.0's spellings, a hostname: possibly reachable from elsewhere


def insecure_bind_reason(host: str, *, debug: bool, secret_key: str) -> str | None:
    """Why listening on ``host`` with these settings is unsafe, or None when it is fine."""
    if is_loopback(host):
        return None
    where = host or "every interface"
    if debug:
        return (
            f"Refusing to listen on {where} with DEBUG on: its error pages show code and settings. "
            "Set DJANGO_DEBUG=0 (with DJANGO_SECRET_KEY and DJANGO_ALLOWED_HOSTS), or listen on 127.0.0.1."
        )
    if secret_key == settings.DEVELOPMENT_SECRET_KEY or len(secret_key) < MIN_SECRET_KEY_LENGTH:
        return (
            f"Refusing to listen on {where} with the development secret key: it is public, so anyone "
            "could sign an operator's token. Set DJANGO_SECRET_KEY to a random string of 50+ characters."
        )
    return None


@register()
def check_bind_address(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    host = os.environ.get("AICP_HOST")
    if host is None:
        return []
    reason = insecure_bind_reason(host, debug=settings.DEBUG, secret_key=settings.SECRET_KEY)
    return [] if reason is None else [Error(reason, hint="AICP_HOST=" + host, id="aicp.E001")]
