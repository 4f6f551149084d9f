"""The client address every throttle and log uses: X-Forwarded-For only as far as the trusted proxies."""

from __future__ import annotations

import pytest
from django.test import RequestFactory

from users.client_address import MAX_CLIENT_KEY, client_address, client_key


def _request(remote: str = "192.0.2.1", forwarded: str | None = None):
    headers = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        headers["HTTP_X_FORWARDED_FOR"] = forwarded
    return RequestFactory().get("/", **headers)


@pytest.mark.parametrize(
    ("proxies", "forwarded", "expected"),
    [
        (0, None, "192.0.2.1"),
        (0, "10.0.0.1", "192.0.2.1"),  # default: the header is the client's own writing
        (1, None, "192.0.2.1"),
        (1, "", "192.0.2.1"),
        (1, "10.0.0.1, 203.0.113.5", "203.0.113.5"),
        (1, "10.0.0.1,203.0.113.5 ", "203.0.113.5"),
        (2, "10.0.0.1, 203.0.113.5, 198.51.100.2", "203.0.113.5"),
        (2, "203.0.113.5", "203.0.113.5"),  # a shorter chain than configured: the first proxy's entry
    ],
)
def test_it_believes_forwarded_addresses_only_as_far_as_the_trusted_proxies(
    settings, proxies, forwarded, expected
):
    settings.AICP_TRUSTED_PROXIES = proxies
    assert client_address(_request(forwarded=forwarded)) == expected


def test_it_keeps_the_drf_proxy_count_in_step(settings):
    from aicp import settings as project_settings

    assert project_settings.REST_FRAMEWORK["NUM_PROXIES"] == project_settings.AICP_TRUSTED_PROXIES == 0


def test_it_bounds_a_long_forwarded_entry_as_a_key(settings):
    settings.AICP_TRUSTED_PROXIES = 1
    long_entry = "x" * 500
    key = client_key(_request(forwarded=long_entry))
    assert len(key) <= MAX_CLIENT_KEY and key.startswith("sha256:")
    assert key == client_key(_request(forwarded=long_entry))
    assert client_key(_request()) == "192.0.2.1"
