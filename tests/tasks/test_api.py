import uuid

import pytest

from ledger.models import Account
from ledger.selectors import balance_for
from tasks.models import Task
from tests.factories import submit

pytestmark = pytest.mark.django_db

LABELS = ["positive", "negative"]


def _post(client, **body):
    payload = {"description": "Classify: great film", "complexity": 2, **body}
    return client.post("/tasks", payload, format="json")


def test_it_creates_a_pending_task_with_a_quote(buyer_client):
    response = _post(buyer_client, labels=LABELS, task_type="sentiment")
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "pending"
    assert body["agent"] == "openai-gpt-4o-mini"
    assert body["price"] == "0.0400"
    assert body["labels"] == LABELS
    assert uuid.UUID(body["id"])


def test_it_works_with_a_trailing_slash(buyer_client):
    assert (
        buyer_client.post("/tasks/", {"description": "x", "complexity": 1}, format="json").status_code == 201
    )
    assert buyer_client.get("/tasks/").status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"description": ""}, "description"),
        ({"description": "x" * 8001}, "description"),
        ({"complexity": 0}, "complexity"),
        ({"complexity": 11}, "complexity"),
        ({"complexity": "3"}, "complexity"),
        ({"complexity": 2.5}, "complexity"),
        ({"complexity": True}, "complexity"),
        ({"labels": ["only-one"]}, "labels"),
        ({"labels": ["a", "a"]}, "labels"),
        ({"labels": ["a", ""]}, "labels"),
        ({"labels": [str(i) for i in range(101)]}, "labels"),
        ({"labels": "positive"}, "labels"),
        ({"task_type": "Not A Slug!"}, "task_type"),
    ],
)
def test_it_rejects_bad_input_naming_the_field(buyer_client, body, field):
    response = _post(buyer_client, **body)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert field in error["fields"]


def test_it_rejects_a_missing_complexity(buyer_client):
    response = buyer_client.post("/tasks", {"description": "x"}, format="json")
    assert response.status_code == 400
    assert "complexity" in response.json()["error"]["fields"]


@pytest.mark.parametrize("field", ["price", "status", "result", "buyer", "executed_by"])
def test_it_refuses_server_computed_fields(buyer_client, field):
    response = _post(buyer_client, **{field: "0"})
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert Task.objects.count() == 0


def test_it_refuses_a_misspelt_key_naming_it_and_holds_nothing(buyer, buyer_client):
    available = balance_for(user_id=buyer.pk, kind=Account.Kind.BUYER)
    response = _post(buyer_client, lables=LABELS)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert error["fields"] == {"lables": ["Unknown field; did you mean 'labels'?"]}
    assert error["message"].startswith("lables: ")
    assert Task.objects.count() == 0
    assert balance_for(user_id=buyer.pk, kind=Account.Kind.BUYER) == available
    assert balance_for(user_id=buyer.pk, kind=Account.Kind.ESCROW) == 0


def test_it_names_every_unknown_and_server_computed_key_at_once(buyer_client):
    response = _post(buyer_client, labels=LABELS, colour="red", price="0")
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "colour": ["Unknown field."],
        "price": ["This field is computed by the server and cannot be set."],
    }
    assert Task.objects.count() == 0


def test_it_refuses_an_operator_submitting_a_task_with_403(operator_client):
    response = _post(operator_client)
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "buyers_only"
    assert "buyer" in error["message"]
    assert Task.objects.count() == 0
    assert operator_client.get("/tasks").status_code == 200  # reading stays open to operators


def test_it_rejects_an_unknown_agent(buyer_client):
    response = _post(buyer_client, agent="nobody")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "agent_not_found"


def test_it_refuses_duke_by_name(buyer_client):
    response = _post(buyer_client, agent="duke", labels=LABELS)
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"agent": ["duke is routed automatically"]}


def test_it_uses_a_named_agent_and_its_price(buyer_client):
    body = _post(buyer_client, agent="openai-gpt-4o").json()
    assert body["agent"] == "openai-gpt-4o"
    assert body["price"] == "0.2000"


def test_it_requires_a_token(api_client):
    assert _post(api_client).status_code == 401
    assert api_client.get("/tasks").status_code == 401
    assert api_client.get(f"/tasks/{uuid.uuid4()}").status_code == 401


def test_it_hides_other_buyers_tasks(buyer, other_client):
    task = submit(buyer)
    response = other_client.get(f"/tasks/{task.id}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "task_not_found"
    assert other_client.get("/tasks").json()["count"] == 0


def test_it_answers_404_for_a_malformed_id(buyer_client):
    assert buyer_client.get("/tasks/not-a-uuid").status_code == 404


def test_it_lets_operators_see_every_task(buyer, other_buyer, operator_client):
    submit(buyer)
    submit(other_buyer)
    assert operator_client.get("/tasks").json()["count"] == 2


def test_it_lists_own_tasks_paginated_and_filtered(buyer, buyer_client):
    for _ in range(3):
        submit(buyer)
    Task.objects.filter(pk=Task.objects.first().pk).update(status=Task.Status.FAILED)
    page = buyer_client.get("/tasks").json()
    assert page["count"] == 3 and len(page["results"]) == 3
    assert buyer_client.get("/tasks?status=failed").json()["count"] == 1
    assert buyer_client.get("/tasks?status=bogus").status_code == 400


def test_it_shows_task_detail_fields(buyer, buyer_client):
    task = submit(buyer, labels=LABELS)
    body = buyer_client.get(f"/tasks/{task.id}").json()
    for field in [
        "status",
        "result",
        "executed_by",
        "price",
        "attempts",
        "error",
        "latency_ms",
        "prompt_tokens",
        "completion_tokens",
    ]:
        assert field in body


def test_it_returns_json_errors_for_malformed_json(buyer_client):
    response = buyer_client.generic("POST", "/tasks", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert "error" in response.json()
