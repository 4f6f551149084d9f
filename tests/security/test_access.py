"""OWASP API1/API2/API3/API5: authentication everywhere it is due, nobody sees or touches another buyer's
objects, and a client cannot set what the server decides. Routes come from the URL resolver."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from ledger.models import Account, LedgerEntry
from tasks.models import Task
from tests.factories import submit
from tests.security.routes import all_routes

pytestmark = pytest.mark.django_db

# Reachable without a token, on purpose. Anything else must refuse an anonymous caller.
PUBLIC_ROUTES = {"health", "schema", "docs", "redoc", "landing", "register", "token-obtain", "token-refresh"}
ROUTES = all_routes()
ANONYMOUS_CALLS = [
    pytest.param(route, method, id=f"{method.upper()} {route.name}")
    for route in ROUTES
    if route.name not in PUBLIC_ROUTES
    for method in route.methods()
]
TASK_ROUTES = [route for route in ROUTES if "task_id" in route.parameters]
OTHERS_TASK_CALLS = [
    pytest.param(route, method, id=f"{method.upper()} {route.name}")
    for route in TASK_ROUTES
    for method in route.methods()
]
READ_ROUTES = [route for route in ROUTES if "get" in route.methods()]
# A body that passes validation, so an ownership check placed after validation is reached too.
VALID_BODIES = {"task-feedback": {"accepted": True}}


def _balance(user, kind: str = Account.Kind.BUYER) -> Decimal:
    return Account.objects.get(user=user, kind=kind).balance


def _refuses_anonymous(response, route) -> bool:
    if response.status_code == 401:
        return True
    if route.is_api:
        return False
    # A page for people (the dashboard) sends them to the login page instead, or refuses the method.
    if response.status_code == 302:
        return response["Location"].startswith(settings.LOGIN_URL)
    return response.status_code == 405


def test_it_finds_the_routes_it_must_guard():
    names = {route.name for route in ROUTES}
    assert {"task-list", "task-detail", "me", "logout", "agent-list"} <= names
    assert PUBLIC_ROUTES <= names, "a public route was renamed: update PUBLIC_ROUTES"
    assert TASK_ROUTES, "no route takes a task id"


@pytest.mark.parametrize(("route", "method"), ANONYMOUS_CALLS)
def test_it_refuses_every_non_public_route_without_a_token(api_client, route, method):
    response = getattr(api_client, method)(route.path(), {}, format="json")
    assert _refuses_anonymous(response, route), (response.status_code, response.content[:300])
    if route.is_api:
        assert response.json()["error"]["code"] == "not_authenticated"
        assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("route", "method"), ANONYMOUS_CALLS)
def test_it_refuses_every_non_public_route_with_a_forged_token(route, method):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer eyJhbGciOiJub25lIn0.eyJ1c2VyX2lkIjoxfQ.")
    response = getattr(client, method)(route.path(), {}, format="json")
    assert _refuses_anonymous(response, route), (response.status_code, response.content[:300])


def test_it_keeps_the_admin_behind_its_login(api_client):
    response = api_client.get("/admin/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize(("route", "method"), OTHERS_TASK_CALLS)
def test_it_answers_404_for_another_buyers_task_on_every_task_route(
    buyer, other_buyer, buyer_client, other_client, route, method
):
    theirs = submit(other_buyer, "Their private task", labels=["yes", "no"])
    mine = submit(buyer, "My own task", labels=["yes", "no"])
    before = Task.objects.values().get(pk=theirs.pk)

    body = VALID_BODIES.get(route.name, {})
    response = getattr(buyer_client, method)(route.path(task_id=str(theirs.id)), body, format="json")

    assert response.status_code == 404, response.content[:300]
    assert response.json()["error"]["code"].endswith("not_found")
    assert "Their private task" not in response.content.decode()
    assert Task.objects.values().get(pk=theirs.pk) == before
    # The same call on one's own task is not a 404: the route really was reached.
    own = getattr(buyer_client, method)(route.path(task_id=str(mine.id)), body, format="json")
    assert own.status_code != 404, own.content[:300]


@pytest.mark.parametrize("route", READ_ROUTES, ids=[route.name for route in READ_ROUTES])
def test_it_never_shows_another_buyers_task_on_any_page(buyer, other_buyer, buyer_client, route):
    theirs = submit(other_buyer, "SECRET-OTHER-BUYER-TEXT", labels=["yes", "no"])
    submit(buyer, "my own text")
    values = {name: str(theirs.id) for name in route.parameters if name == "task_id"}
    try:
        path = route.path(**values)
    except StopIteration:
        pytest.skip("no sample value fits this route's parameters")
    for query in ("", "?status=pending", "?buyer=buyer-two", "?page=1"):
        response = buyer_client.get(path + query)
        # A streamed answer (GET /tasks/export) is read whole too.
        body = b"".join(response.streaming_content) if response.streaming else response.content
        content = body.decode()
        assert "SECRET-OTHER-BUYER-TEXT" not in content
        assert str(theirs.id) not in content
        assert "buyer-two" not in content


def test_it_lists_only_the_buyers_own_tasks(buyer, other_buyer, buyer_client, operator_client):
    mine = {str(submit(buyer, f"mine {i}").id) for i in range(3)}
    theirs = {str(submit(other_buyer, f"theirs {i}").id) for i in range(2)}

    listed = {row["id"] for row in buyer_client.get("/tasks").json()["results"]}
    filtered = {row["id"] for row in buyer_client.get("/tasks?status=pending").json()["results"]}
    everything = {row["id"] for row in operator_client.get("/tasks").json()["results"]}

    assert listed == mine
    assert filtered == mine
    assert everything >= mine | theirs


SERVER_FIELDS = {
    "price": "0.0001",
    "status": "completed",
    "result": "paid in full",
    "buyer": "buyer-two",
    "executed_by": "duke",
    "balance": "1000000",
    "cost": "0",
    "confidence": 1.0,
    "attempts": 0,
    "id": "00000000-0000-0000-0000-000000000001",
    "held": "0",
}


@pytest.mark.parametrize("field", sorted(SERVER_FIELDS))
def test_it_ignores_or_refuses_server_fields_on_submit(buyer, buyer_client, field):
    before = _balance(buyer)
    body = {"description": "Summarise this.", "complexity": 2, field: SERVER_FIELDS[field]}

    response = buyer_client.post("/tasks", body, format="json")

    if response.status_code == 400:
        assert field in response.json()["error"]["fields"]
        assert Task.objects.count() == 0
        assert _balance(buyer) == before
        return
    assert response.status_code == 201, response.content
    task = Task.objects.get()
    assert task.buyer == buyer
    assert task.status == Task.Status.PENDING
    assert task.result == ""
    assert task.executed_by is None
    assert str(task.id) != SERVER_FIELDS["id"]
    assert task.price > Decimal("0.0001")
    assert _balance(buyer) == before - task.price


def test_it_ignores_privilege_and_money_fields_on_register(api_client):
    body = {
        "username": "mallory",
        "password": "a-Strong-pass-42",
        "balance": "1000000",
        "is_staff": True,
        "is_superuser": True,
        "role": "operator",
        "daily_spend_cap": "0",
    }
    response = api_client.post("/auth/register", body, format="json")

    from users.models import User

    assert response.status_code in (201, 400), response.content
    if response.status_code == 201:
        user = User.objects.get(username="mallory")
        assert not user.is_staff and not user.is_superuser
        assert user.daily_spend_cap is None
        assert _balance(user) == settings.AICP_SIGNUP_CREDIT
        assert response.json()["role"] == "buyer"


def test_it_cannot_change_a_task_through_feedback_fields(buyer, buyer_client):
    task = submit(buyer, "Classify: fine", labels=["yes", "no"])
    Task.objects.filter(pk=task.pk).update(status=Task.Status.COMPLETED, result="yes")
    before = Task.objects.values("status", "result", "price", "executed_by", "buyer").get(pk=task.pk)
    entries = LedgerEntry.objects.count()

    buyer_client.post(
        f"/tasks/{task.id}/feedback",
        {"accepted": True, "status": "failed", "result": "no", "price": "0", "executed_by": "duke"},
        format="json",
    )

    assert Task.objects.values("status", "result", "price", "executed_by", "buyer").get(pk=task.pk) == before
    assert LedgerEntry.objects.count() == entries


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
@pytest.mark.parametrize("path", ["/tasks/{id}", "/auth/me", "/tasks"])
def test_it_offers_no_write_verbs_on_tasks_and_accounts(buyer, buyer_client, method, path):
    task = submit(buyer, "Leave me alone")
    before_task = Task.objects.values().get(pk=task.pk)
    before_balance = _balance(buyer)

    response = getattr(buyer_client, method)(
        path.format(id=task.id), {"status": "completed", "price": "0", "balance": "999"}, format="json"
    )

    assert response.status_code == 405
    assert Task.objects.values().get(pk=task.pk) == before_task
    assert _balance(buyer) == before_balance
