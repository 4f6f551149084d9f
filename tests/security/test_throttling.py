"""OWASP API4: registration, login and submission are rate limited, and say when to come back."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from rest_framework.throttling import SimpleRateThrottle

from tests.factories import DEFAULT_PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def rates(monkeypatch):
    """Tight limits for one test; the cache holding the request history starts and ends empty."""
    cache.clear()

    def set_rate(scope: str, rate: str) -> None:
        # Throttles read the rates dict on every request; monkeypatch restores it afterwards.
        monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, scope, rate)

    yield set_rate
    cache.clear()


def _assert_throttled(response) -> None:
    assert response.status_code == 429, response.content
    assert response.json()["error"]["code"] == "throttled"
    assert 0 < int(response["Retry-After"]) <= 60


def test_it_throttles_registration(api_client, rates):
    rates("register", "2/minute")
    statuses = [
        api_client.post(
            "/auth/register", {"username": f"new-{i}", "password": DEFAULT_PASSWORD}, format="json"
        ).status_code
        for i in range(2)
    ]
    assert statuses == [201, 201]

    _assert_throttled(
        api_client.post("/auth/register", {"username": "new-3", "password": DEFAULT_PASSWORD}, format="json")
    )

    from users.models import User

    assert not User.objects.filter(username="new-3").exists()


def test_it_throttles_password_guessing_on_the_token_endpoint(buyer, api_client, rates):
    rates("token", "3/minute")
    guesses = [
        api_client.post(
            "/auth/token", {"username": buyer.username, "password": f"guess-{i}"}, format="json"
        ).status_code
        for i in range(3)
    ]
    assert guesses == [401, 401, 401]

    # Even the right password waits: the limit is on attempts, not on failures.
    _assert_throttled(
        api_client.post(
            "/auth/token", {"username": buyer.username, "password": DEFAULT_PASSWORD}, format="json"
        )
    )
    _assert_throttled(api_client.post("/auth/token/refresh", {"refresh": "x"}, format="json"))


def test_it_throttles_submission_per_buyer(buyer_client, other_client, rates):
    rates("submit", "2/minute")
    body = {"description": "Summarise this.", "complexity": 1}
    assert [buyer_client.post("/tasks", body, format="json").status_code for _ in range(2)] == [201, 201]

    _assert_throttled(buyer_client.post("/tasks", body, format="json"))

    # Per user: another buyer is not held back, and reading is not submitting.
    assert other_client.post("/tasks", body, format="json").status_code == 201
    assert buyer_client.get("/tasks").status_code == 200


# --- the client address: forwarded headers are believed only behind trusted proxies ---------------------

SIGNUP_LIMIT = "20/hour"  # AICP_THROTTLE_REGISTER's default


def _sign_up(api_client, index: int, **headers):
    body = {"username": f"spoofer-{index}", "password": DEFAULT_PASSWORD}
    return api_client.post("/auth/register", body, format="json", **headers)


def test_it_counts_sign_ups_with_spoofed_forwarded_addresses_as_one_client(api_client, rates):
    rates("register", SIGNUP_LIMIT)

    statuses = [
        _sign_up(api_client, i, REMOTE_ADDR="198.51.100.7", HTTP_X_FORWARDED_FOR=f"10.0.{i}.1").status_code
        for i in range(25)
    ]

    assert statuses == [201] * 20 + [429] * 5
    from users.models import User

    assert User.objects.filter(username__startswith="spoofer-").count() == 20


def test_it_takes_the_address_the_trusted_proxy_appended(api_client, rates, settings):
    settings.AICP_TRUSTED_PROXIES = 1
    rates("register", "2/hour")
    proxy = {"REMOTE_ADDR": "127.0.0.1"}

    # The client writes whatever it likes on the left; the proxy appends the address it saw.
    first = [
        _sign_up(api_client, i, HTTP_X_FORWARDED_FOR=f"10.9.9.{i}, 203.0.113.5", **proxy).status_code
        for i in range(3)
    ]
    other = _sign_up(api_client, 3, HTTP_X_FORWARDED_FOR="203.0.113.5, 203.0.113.6", **proxy)

    assert first == [201, 201, 429]
    assert other.status_code == 201, "another client behind the same proxy has its own limit"


def test_it_ignores_the_forwarded_header_without_trusted_proxies(api_client, rates, settings):
    settings.AICP_TRUSTED_PROXIES = 0
    rates("register", "1/hour")
    forwarded = {"HTTP_X_FORWARDED_FOR": "1.1.1.1"}
    assert _sign_up(api_client, 0, REMOTE_ADDR="198.51.100.8", **forwarded).status_code == 201
    # Same forwarded value, another peer: a separate client.
    assert _sign_up(api_client, 1, REMOTE_ADDR="198.51.100.9", **forwarded).status_code == 201
    assert _sign_up(api_client, 2, REMOTE_ADDR="198.51.100.8").status_code == 429


def test_it_opens_a_new_window_when_the_old_one_is_over(api_client, rates):
    from datetime import timedelta

    from users.models import ThrottleCounter

    rates("register", "1/hour")
    assert _sign_up(api_client, 0).status_code == 201
    refused = _sign_up(api_client, 1)
    assert refused.status_code == 429 and 3500 < int(refused["Retry-After"]) <= 3600

    # An hour later (the window's start moved back instead of the clock moving on).
    counter = ThrottleCounter.objects.get(scope="register")
    counter.window_started_at -= timedelta(hours=1)
    counter.save()

    assert _sign_up(api_client, 2).status_code == 201
    assert ThrottleCounter.objects.get(scope="register").hits == 1
