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
