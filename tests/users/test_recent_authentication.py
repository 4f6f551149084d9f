"""JWT authentication reuses a token and its user for AICP_RECENT_ROWS_S, and never past what it must."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken
from rest_framework_simplejwt.utils import aware_utcnow

from users.authentication import recent_tokens, recent_users
from users.models import User

pytestmark = pytest.mark.django_db


def _client(token: AccessToken | str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def _user_reads(client: APIClient) -> tuple[int, int]:
    """The status of GET /auth/me and how many times it read the users table."""
    with CaptureQueriesContext(connection) as queries:
        status = client.get("/auth/me").status_code
    return status, sum('FROM "users_user"' in q["sql"] for q in queries.captured_queries)


def test_it_reads_the_user_once_while_the_row_is_recent(buyer, settings):
    settings.AICP_RECENT_ROWS_S = 60
    client = _client(AccessToken.for_user(buyer))
    assert _user_reads(client) == (200, 1)
    assert _user_reads(client) == (200, 0)


def test_it_reads_the_user_every_time_when_turned_off(buyer, settings):
    settings.AICP_RECENT_ROWS_S = 0
    client = _client(AccessToken.for_user(buyer))
    assert _user_reads(client) == (200, 1)
    assert _user_reads(client) == (200, 1)


def test_it_refuses_a_user_deactivated_in_this_process_at_once(buyer, settings):
    settings.AICP_RECENT_ROWS_S = 60
    client = _client(AccessToken.for_user(buyer))
    assert client.get("/auth/me").status_code == 200
    buyer.is_active = False
    buyer.save(update_fields=["is_active"])
    response = client.get("/auth/me")
    assert response.status_code == 401
    assert "inactive" in response.json()["error"]["message"]


def test_it_refuses_a_user_deactivated_elsewhere_once_the_row_expires(buyer, settings, monkeypatch):
    settings.AICP_RECENT_ROWS_S = 0.3
    now = [1000.0]
    monkeypatch.setattr(recent_users, "clock", lambda: now[0])
    monkeypatch.setattr(recent_tokens, "clock", lambda: now[0])
    client = _client(AccessToken.for_user(buyer))
    assert client.get("/auth/me").status_code == 200
    User.objects.filter(pk=buyer.pk).update(is_active=False)  # no signal: as another process would
    now[0] += 0.29
    assert client.get("/auth/me").status_code == 200  # the reused row, for at most 0.3 s
    now[0] += 0.02
    assert client.get("/auth/me").status_code == 401


def test_it_refuses_an_expired_token_it_has_seen_before(buyer, settings, monkeypatch):
    settings.AICP_RECENT_ROWS_S = 60
    token = AccessToken.for_user(buyer)
    token.set_exp(lifetime=timedelta(seconds=1))
    client = _client(token)
    assert client.get("/auth/me").status_code == 200
    # A second and a bit later, by the clocks that judge the reused token and, once it is dropped, the
    # decoding of it again.
    later = aware_utcnow() + timedelta(seconds=1.1)
    monkeypatch.setattr("users.authentication.aware_utcnow", lambda: later)
    monkeypatch.setattr("rest_framework_simplejwt.tokens.aware_utcnow", lambda: later)
    response = client.get("/auth/me")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_not_valid"


def test_it_does_not_let_a_reused_row_vouch_for_another_users_token(buyer, other_buyer, settings):
    settings.AICP_RECENT_ROWS_S = 60
    mine, theirs = _client(AccessToken.for_user(buyer)), _client(AccessToken.for_user(other_buyer))
    assert mine.get("/auth/me").json()["username"] == buyer.username
    assert theirs.get("/auth/me").json()["username"] == other_buyer.username
    assert _client("not-a-token").get("/auth/me").status_code == 401
