"""The AICP-Signature header: ``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">``.

Keyed by the buyer's webhook secret (GET /auth/me shows it, POST /auth/webhook-secret rotates it). A
receiver recomputes v1 over the raw body it received and compares in constant time, and refuses a ``t``
too far from its clock (replays). ``verify`` is the receiver's side, used by the tests and the README.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "AICP-Signature"


def signature(*, secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return mac.hexdigest()


def header_value(*, secret: str, timestamp: int, body: bytes) -> str:
    return f"t={timestamp},v1={signature(secret=secret, timestamp=timestamp, body=body)}"


def verify(*, secret: str, header: str, body: bytes, now: int, tolerance_s: int = 300) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` and its timestamp is within the tolerance."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = signature(secret=secret, timestamp=timestamp, body=body)
    return hmac.compare_digest(expected, fields.get("v1", ""))
