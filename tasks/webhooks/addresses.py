"""Which callback URLs the system may call: https to public addresses, or hosts an operator listed.

A URL is checked when the task is submitted (a 400 naming ``callback_url``) and again before every
attempt; the sender then connects to the very address that was checked (``Target.address``), so a name
that resolves elsewhere between the check and the connection (DNS rebinding) cannot reach a private host.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

Resolver = Callable[[str, int], list[str]]


class RefusedCallback(ValueError):
    """The URL may not be called; the message says why (shown to the buyer)."""


@dataclass(frozen=True)
class Target:
    scheme: str  # "http" or "https"
    host: str  # as written in the URL (lower case, no brackets): Host header, TLS server name
    port: int
    path: str  # path and query, at least "/"
    address: str  # the checked IP address to connect to


def resolve(host: str, port: int) -> list[str]:
    """Every address the host name resolves to (an IP literal: itself)."""
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise RefusedCallback(f"The host {host!r} does not resolve.") from exc
    addresses = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = str(sockaddr[0]).split("%", 1)[0]  # an IPv6 zone id is no part of the address
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise RefusedCallback(f"The host {host!r} does not resolve.")
    return addresses


def _listed(host: str, address: str, allowed: Iterable[str]) -> bool:
    ip = ipaddress.ip_address(address)
    for entry in allowed:
        entry = entry.strip().lower()
        if not entry:
            continue
        if entry == host:
            return True
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue  # a host name that is not this one
    return False


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_link_local or ip.is_loopback)


def check_callback_url(
    url: str, *, allowed: Iterable[str] | None = None, resolver: Resolver = resolve
) -> Target:
    """The target to connect to for ``url``, or RefusedCallback.

    https only, unless the host is in AICP_WEBHOOK_ALLOW_HOSTS (then http too). Every address the host
    resolves to must be public (not private, loopback, link-local, multicast, reserved or unspecified),
    unless the host or that address (or a network containing it) is listed there.
    """
    allowed = list(settings.AICP_WEBHOOK_ALLOW_HOSTS if allowed is None else allowed)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise RefusedCallback("Not a valid URL.") from exc
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if not host:
        raise RefusedCallback("The URL has no host.")
    if parts.username is not None or parts.password is not None:
        raise RefusedCallback("Credentials in the URL are not accepted; authenticate with the signature.")
    host_listed = host in {entry.strip().lower() for entry in allowed}
    if scheme == "http":
        if not host_listed:
            raise RefusedCallback(
                "Must be https (plain http only to a host listed in AICP_WEBHOOK_ALLOW_HOSTS)."
            )
    elif scheme != "https":
        raise RefusedCallback("Must be an https URL.")
    port = port or (443 if scheme == "https" else 80)
    addresses = resolver(host, port)
    for address in addresses:
        if not _public(address) and not _listed(host, address, allowed):
            raise RefusedCallback(
                f"{host} resolves to {address}, a private, loopback or link-local address; "
                "only hosts listed in AICP_WEBHOOK_ALLOW_HOSTS may be."
            )
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(scheme=scheme, host=host, port=port, path=path, address=addresses[0])
