"""The client's address: X-Forwarded-For is believed only as far as AICP_TRUSTED_PROXIES says.

Each proxy appends the address it received the request from, so with N trusted proxies in front the
client is the Nth address from the right; anything left of it was written by the client and proves
nothing. With no trusted proxy (the default) the header is ignored and the socket's peer counts.
This is DRF's rule for NUM_PROXIES (settings set both from the same value), in one place for every
reader of the client address.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.http import HttpRequest

# A forwarded entry is whatever a proxy wrote; a counter key stays short whatever it is.
MAX_CLIENT_KEY = 64


def client_address(request: HttpRequest) -> str:
    remote = request.META.get("REMOTE_ADDR", "")
    trusted_proxies = settings.AICP_TRUSTED_PROXIES
    if trusted_proxies == 0:
        return remote
    forwarded = [entry.strip() for entry in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    forwarded = [entry for entry in forwarded if entry]
    if not forwarded:
        return remote
    return forwarded[-min(trusted_proxies, len(forwarded))]


def client_key(request: HttpRequest) -> str:
    """The client address as a bounded key: itself when short, else a digest of it."""
    address = client_address(request)
    if len(address) <= MAX_CLIENT_KEY:
        return address
    return "sha256:" + hashlib.sha256(address.encode()).hexdigest()[: MAX_CLIENT_KEY - 7]
