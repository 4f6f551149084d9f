"""OWASP API2: tokens that expired, were rotated out, logged out, forged or swapped are refused."""

from __future__ import annotations

from datetime import timedelta

import pytest
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from tests.factories import DEFAULT_PASSWORD

pytestmark = pytest.mark.django_db


def _bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def _login(api_client, user) -> dict:
    response = api_client.post(
        "/auth/token", {"username": user.username, "password": DEFAULT_PASSWORD}, format="json"
    )
    assert response.status_code == 200, response.content
    return response.json()


def _refresh(api_client, refresh: str):
    return api_client.post("/auth/token/refresh", {"refresh": refresh}, format="json")


def test_it_accepts_a_fresh_access_token(buyer, api_client):
    tokens = _login(api_client, buyer)
    assert _bearer(tokens["access"]).get("/auth/me").status_code == 200


def test_it_refuses_an_expired_access_token(buyer):
    token = AccessToken.for_user(buyer)
    token.set_exp(lifetime=-timedelta(seconds=1))
    response = _bearer(str(token)).get("/auth/me")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_not_valid"


def test_it_refuses_an_expired_refresh_token(buyer, api_client):
    token = RefreshToken.for_user(buyer)
    token.set_exp(lifetime=-timedelta(seconds=1))
    assert _refresh(api_client, str(token)).status_code == 401


def test_it_refuses_a_refresh_token_rotated_out(buyer, api_client):
    first = _login(api_client, buyer)["refresh"]
    rotated = _refresh(api_client, first)
    assert rotated.status_code == 200
    second = rotated.json()["refresh"]
    assert second != first

    replay = _refresh(api_client, first)

    assert replay.status_code == 401
    assert replay.json()["error"]["code"] == "token_not_valid"
    assert _refresh(api_client, second).status_code == 200, "the rotated-in token still works"


def test_it_refuses_a_refresh_token_after_logout(buyer, api_client):
    tokens = _login(api_client, buyer)
    assert (
        _bearer(tokens["access"])
        .post("/auth/logout", {"refresh": tokens["refresh"]}, format="json")
        .status_code
        == 204
    )
    assert _refresh(api_client, tokens["refresh"]).status_code == 401


def test_it_refuses_to_log_out_someone_elses_refresh_token(buyer, other_buyer, api_client):
    theirs = _login(api_client, other_buyer)
    mine = _login(api_client, buyer)

    response = _bearer(mine["access"]).post("/auth/logout", {"refresh": theirs["refresh"]}, format="json")

    assert response.status_code in (400, 403)
    assert _refresh(api_client, theirs["refresh"]).status_code == 200, "their session survives"


def test_it_refuses_a_tampered_token(buyer):
    header, payload, signature = str(AccessToken.for_user(buyer)).split(".")
    flipped = signature[:-2] + ("AA" if not signature.endswith("AA") else "BB")
    assert _bearer(f"{header}.{payload}.{flipped}").get("/auth/me").status_code == 401


def test_it_refuses_an_unsigned_token(buyer):
    # {"alg":"none"} with this buyer's id: the classic signature bypass.
    token = AccessToken.for_user(buyer)
    forged = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + str(token).split(".")[1] + "."
    assert _bearer(forged).get("/auth/me").status_code == 401


def test_it_refuses_a_refresh_token_used_as_an_access_token(buyer):
    assert _bearer(str(RefreshToken.for_user(buyer))).get("/auth/me").status_code == 401


def test_it_refuses_an_access_token_used_as_a_refresh_token(buyer, api_client):
    assert _refresh(api_client, str(AccessToken.for_user(buyer))).status_code == 401


def test_it_refuses_the_token_of_a_deactivated_user(buyer):
    token = str(AccessToken.for_user(buyer))
    buyer.is_active = False
    buyer.save(update_fields=["is_active"])
    assert _bearer(token).get("/auth/me").status_code == 401


def test_it_refuses_a_wrong_password_without_saying_which_part_was_wrong(buyer, api_client):
    wrong_password = api_client.post(
        "/auth/token", {"username": buyer.username, "password": "not-it-at-all"}, format="json"
    )
    no_such_user = api_client.post(
        "/auth/token", {"username": "nobody-here", "password": "not-it-at-all"}, format="json"
    )
    assert wrong_password.status_code == no_such_user.status_code == 401
    assert wrong_password.json() == no_such_user.json()
