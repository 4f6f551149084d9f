"""Races an attacker can start from one machine: sign-ups past the limit, a refresh token forked.

Each test releases its requests together from threads, each thread on its own database connection, with
real transactions (`transaction=True`), so they contend as a web server's threads and processes do. Part
of the PostgreSQL pass too (marker `races`), where the requests really run at the same time.
"""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken

from tests.factories import DEFAULT_PASSWORD, make_buyer
from tests.postgres.threads import run_concurrently
from users.models import User

# serialized_rollback: the flush after a transactional test would otherwise drop the seeded agents.
pytestmark = [pytest.mark.races, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


def test_it_lets_exactly_the_limit_of_40_concurrent_sign_ups_through(monkeypatch):
    limit = 20
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "register", f"{limit}/hour")

    def sign_up(index: int) -> int:
        body = {"username": f"racer-{index}", "password": DEFAULT_PASSWORD}
        response = APIClient().post("/auth/register", body, format="json", REMOTE_ADDR="198.51.100.20")
        return response.status_code

    statuses = run_concurrently(sign_up, 40)

    assert sorted(statuses) == [201] * limit + [429] * (40 - limit)
    assert User.objects.filter(username__startswith="racer-").count() == limit


def _rotate_concurrently(refresh_token: str, count: int) -> list[tuple[int, dict]]:
    def refresh(index: int) -> tuple[int, dict]:
        response = APIClient().post("/auth/token/refresh", {"refresh": refresh_token}, format="json")
        return response.status_code, response.json()

    return run_concurrently(refresh, count)


# Several rounds: on SQLite one process's threads interleave less than separate workers do, and the old
# check-then-blacklist forked a token in about one round in three here.
@pytest.mark.parametrize("round_", range(5))
def test_it_rotates_a_refresh_token_once_under_10_concurrent_refreshes(default_agents, round_):
    buyer = make_buyer(f"refresher-{round_}")
    login = APIClient().post(
        "/auth/token", {"username": buyer.username, "password": DEFAULT_PASSWORD}, format="json"
    )
    old_refresh = login.json()["refresh"]

    results = _rotate_concurrently(old_refresh, 10)

    assert sorted(status for status, _ in results) == [200] + [401] * 9, results
    assert all(body["error"]["code"] == "token_not_valid" for status, body in results if status == 401)
    (winner,) = [body for status, body in results if status == 200]
    assert BlacklistedToken.objects.filter(token__token=old_refresh).count() == 1
    # The one new token works; the old one stays refused.
    assert APIClient().post("/auth/token/refresh", {"refresh": old_refresh}, format="json").status_code == 401
    again = APIClient().post("/auth/token/refresh", {"refresh": winner["refresh"]}, format="json")
    assert again.status_code == 200
