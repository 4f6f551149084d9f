"""One webhook POST, to the address that was checked (no redirects followed, no proxy, bounded time)."""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from dataclasses import dataclass

from tasks.webhooks.addresses import Target
from tasks.webhooks.signing import HEADER

USER_AGENT = "AICP-Webhooks/1"
MAX_RESPONSE_BYTES = 64 * 1024  # the answer's body is not used; read a little so keep-alive ends cleanly


@dataclass(frozen=True)
class Sent:
    status_code: int | None  # None: no HTTP answer (timeout, refused, TLS error)
    duration_ms: int
    error: str

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = target.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout, context=ssl.create_default_context())
        self._address = target.address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        # SNI and the certificate's name check use the URL's host, while the socket goes to the address.
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def post(*, target: Target, body: bytes, signature: str, timeout_s: float) -> Sent:
    """POSTs ``body`` (JSON) signed. Connecting, sending and each wait for the answer time out after
    ``timeout_s`` (AICP_WEBHOOK_TIMEOUT_S): a receiver that accepts and never answers costs that long."""
    started = time.monotonic()
    connection_class = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
    connection = connection_class(target, timeout_s)
    try:
        connection.request(
            "POST",
            target.path,
            body=body,
            headers={
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                HEADER: signature,
            },
        )
        response = connection.getresponse()
        response.read(MAX_RESPONSE_BYTES)
        status: int | None = response.status
        error = "" if 200 <= response.status < 300 else f"HTTP {response.status}"
    except TimeoutError:
        status, error = None, f"timed out after {timeout_s:g} s"
    except (OSError, http.client.HTTPException) as exc:
        status, error = None, f"{type(exc).__name__}: {exc}"[:500]
    finally:
        connection.close()
    return Sent(status_code=status, duration_ms=round((time.monotonic() - started) * 1000), error=error)
