from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from users.models import User

pytestmark = pytest.mark.django_db

PASSWORD = "a-Strong-pass-42"


def _register(client: APIClient, username: str = "alice", password: str = PASSWORD):
    return client.post("/auth/register", {"username": username, "password": password}, format="json")


def _tokens(client: APIClient, username: str = "alice", password: str = PASSWORD) -> dict:
    response = client.post("/auth/token", {"username": username, "password": password}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def test_it_registers_a_buyer_with_the_signup_credit(api_client):
    response = _register(api_client)
    assert response.status_code == 201
    assert response.json() == {"username": "alice", "role": "buyer", "balance": "100.0000"}


def test_it_refuses_a_taken_username_with_409(api_client):
    _register(api_client)
    response = _register(api_client, "ALICE")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "username_taken"


def test_it_refuses_a_weak_password_naming_the_field(api_client):
    response = _register(api_client, password="123")
    assert response.status_code == 400
    assert "password" in response.json()["error"]["fields"]


def test_it_refuses_a_bad_username(api_client):
    response = _register(api_client, username="no spaces allowed")
    assert response.status_code == 400
    assert "username" in response.json()["error"]["fields"]


def test_it_issues_tokens_and_shows_me(api_client):
    _register(api_client)
    tokens = _tokens(api_client)
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    me = api_client.get("/auth/me").json()
    secret = me.pop("webhook_secret")  # issue 21: the buyer's webhook signing key
    assert secret.startswith("whsec_") and len(secret) == 6 + 64
    assert me == {"username": "alice", "role": "buyer", "balance": "100.0000", "held": "0.0000"}


def test_it_refuses_wrong_credentials(api_client):
    _register(api_client)
    response = api_client.post("/auth/token", {"username": "alice", "password": "wrong"}, format="json")
    assert response.status_code == 401
    assert "error" in response.json()


def test_it_rotates_refresh_tokens_and_refuses_the_old_one(api_client):
    _register(api_client)
    tokens = _tokens(api_client)
    rotated = api_client.post("/auth/token/refresh", {"refresh": tokens["refresh"]}, format="json")
    assert rotated.status_code == 200
    assert rotated.json()["refresh"] != tokens["refresh"]
    replay = api_client.post("/auth/token/refresh", {"refresh": tokens["refresh"]}, format="json")
    assert replay.status_code == 401


def test_it_refuses_unknown_keys_on_every_auth_write(api_client):
    from_register = api_client.post(
        "/auth/register", {"username": "bob", "password": PASSWORD, "email": "b@example.com"}, format="json"
    )
    assert from_register.status_code == 400
    assert from_register.json()["error"]["fields"] == {"email": ["Unknown field."]}
    assert not User.objects.filter(username="bob").exists()
    _register(api_client)
    obtain = api_client.post(
        "/auth/token", {"username": "alice", "password": PASSWORD, "pasword": PASSWORD}, format="json"
    )
    assert obtain.status_code == 400
    assert obtain.json()["error"]["fields"] == {"pasword": ["Unknown field; did you mean 'password'?"]}
    tokens = _tokens(api_client)
    refresh = api_client.post(
        "/auth/token/refresh", {"refresh": tokens["refresh"], "extra": 1}, format="json"
    )
    assert refresh.status_code == 400
    assert "extra" in refresh.json()["error"]["fields"]
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    logout = api_client.post("/auth/logout", {"refresh": tokens["refresh"], "all": True}, format="json")
    assert logout.status_code == 400
    assert "all" in logout.json()["error"]["fields"]
    # None of those was acted on: the refresh token is still good.
    api_client.credentials()
    assert (
        api_client.post("/auth/token/refresh", {"refresh": tokens["refresh"]}, format="json").status_code
        == 200
    )


def test_it_logs_out_by_blacklisting_the_refresh_token(api_client):
    _register(api_client)
    tokens = _tokens(api_client)
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    assert api_client.post("/auth/logout", {"refresh": tokens["refresh"]}, format="json").status_code == 204
    api_client.credentials()
    assert (
        api_client.post("/auth/token/refresh", {"refresh": tokens["refresh"]}, format="json").status_code
        == 401
    )


def test_it_requires_a_token_for_me(api_client):
    response = api_client.get("/auth/me")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_it_shows_operators_their_role(operator_client):
    assert operator_client.get("/auth/me").json()["role"] == "operator"


def test_it_makes_an_operator_with_createsuperuser_noinput(monkeypatch):
    from django.core.management import call_command

    from users.models import User

    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "ops")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", PASSWORD)
    monkeypatch.setenv("DJANGO_SUPERUSER_EMAIL", "ops@example.com")
    call_command("createsuperuser", interactive=False, verbosity=0)
    assert User.objects.get(username="ops").role == "operator"


def test_it_starts_new_buyers_with_the_configured_credit(api_client, settings):
    settings.AICP_SIGNUP_CREDIT = Decimal("5.5")
    assert _register(api_client, "bob").json()["balance"] == "5.5000"
