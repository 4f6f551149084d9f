"""Exact repeat answers through the API: hit, miss, TTL, free-form, named agents, sources that never
answer, the batch path, money, and no second training sample."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from agents.models import Agent
from duke.models import TrainingData
from ledger.models import Account
from tasks.models import Task
from tasks.services.lifecycle import Outcome, task_claim, task_complete, task_fail
from tasks.services.repeat import REPEAT_AGENT, normalise_text, repeat_key
from tests.factories import submit

pytestmark = pytest.mark.django_db

LABELS = ["positive", "negative", "neutral"]
TEXT = "Great film, would watch again"


def _answered(buyer, text=TEXT, *, labels=LABELS, task_type="sentiment", result="positive") -> Task:
    """A labeling task completed by the LLM agent it was assigned (the store's only kind of source); named,
    so that an earlier identical answer does not answer it."""
    task = submit(buyer, text, complexity=2, labels=labels, task_type=task_type, agent="openai-gpt-4o-mini")
    assert task_claim(task_id=task.id) is not None
    assert task_complete(task_id=task.id, outcome=Outcome(result=result))
    return Task.objects.get(pk=task.id)


def _post(client, text=TEXT, *, labels=LABELS, task_type="sentiment", **fields):
    body = {"description": text, "complexity": 2, "task_type": task_type, **fields}
    if labels is not None:
        body["labels"] = labels
    return client.post("/tasks", body, format="json")


def test_it_answers_an_identical_labeling_task_from_the_store(buyer, other_buyer, other_client):
    source = _answered(buyer)
    samples = TrainingData.objects.count()
    assert samples == 1
    available = Account.objects.get(user=other_buyer, kind=Account.Kind.BUYER).balance

    response = _post(other_client)

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["executed_by"] == REPEAT_AGENT
    assert body["agent"] == REPEAT_AGENT
    assert body["status"] == "completed"
    assert body["result"] == "positive"
    assert body["finished_at"] is not None
    duke = Agent.objects.get(name="duke")
    assert Decimal(body["price"]) == duke.price_per_unit * 2  # Duke's price (new reputation: x1)
    assert Decimal(body["price"]) < source.price
    # Paid exactly like a Duke-served task: the buyer charged the price, nothing held, the agent paid.
    assert Account.objects.get(user=other_buyer, kind=Account.Kind.BUYER).balance == available - Decimal(
        body["price"]
    )
    assert Account.objects.get(user=other_buyer, kind=Account.Kind.ESCROW).balance == 0
    repeat = Agent.objects.get(name=REPEAT_AGENT)
    assert Account.objects.get(agent=repeat).balance == Decimal(body["price"])
    assert repeat.success_count == 1
    # Not a second training sample.
    assert TrainingData.objects.count() == samples


def test_it_matches_whitespace_unicode_form_and_label_order(buyer, buyer_client):
    _answered(buyer, "Caf\u00e9 was great")
    response = _post(buyer_client, "  Cafe\u0301   was\tgreat\n", labels=list(reversed(LABELS)))
    assert response.json()["executed_by"] == REPEAT_AGENT
    assert response.json()["result"] == "positive"


@pytest.mark.parametrize(
    "changes",
    [
        {"text": TEXT.upper()},  # case is kept: a repeat is an exact one
        {"text": TEXT + "!"},
        {"task_type": "topic"},
        {"labels": ["positive", "negative"]},
        {"labels": ["Positive", "negative", "neutral"]},
    ],
)
def test_it_misses_a_task_that_differs(buyer, buyer_client, changes):
    _answered(buyer)
    response = _post(
        buyer_client, changes.get("text", TEXT), **{k: v for k, v in changes.items() if k != "text"}
    )
    assert response.status_code == 201
    assert response.json()["executed_by"] is None
    assert response.json()["status"] == "pending"


def test_it_never_reuses_an_answer_older_than_the_ttl(buyer, buyer_client, settings):
    source = _answered(buyer)
    settings.AICP_REPEAT_TTL = 3600
    Task.objects.filter(pk=source.pk).update(finished_at=timezone.now() - timedelta(seconds=3601))
    assert _post(buyer_client).json()["status"] == "pending"
    Task.objects.filter(pk=source.pk).update(finished_at=timezone.now() - timedelta(seconds=3500))
    assert _post(buyer_client).json()["executed_by"] == REPEAT_AGENT


def test_a_ttl_of_zero_turns_the_store_off(buyer, buyer_client, settings):
    _answered(buyer)
    settings.AICP_REPEAT_TTL = 0
    assert _post(buyer_client).json()["status"] == "pending"


def test_it_never_answers_a_free_form_task_from_the_store(buyer, buyer_client):
    task = submit(buyer, TEXT, complexity=2, task_type="sentiment")
    assert task.repeat_key == ""
    task_claim(task_id=task.id)
    task_complete(task_id=task.id, outcome=Outcome(result="A fine film."))
    response = _post(buyer_client, labels=None)
    assert response.json()["status"] == "pending"
    assert response.json()["executed_by"] is None


def test_a_buyer_naming_an_agent_gets_that_agent(buyer, buyer_client):
    _answered(buyer)
    response = _post(buyer_client, agent="openai-gpt-4o-mini")
    assert response.json()["status"] == "pending"


def test_failed_rejected_and_duke_answers_never_answer(buyer, buyer_client):
    failed = submit(buyer, TEXT, complexity=2, labels=LABELS, task_type="sentiment")
    task_claim(task_id=failed.id)
    task_fail(task_id=failed.id, error="boom")
    assert _post(buyer_client).json()["status"] == "pending"

    rejected = _answered(buyer, "Rejected text")
    Task.objects.filter(pk=rejected.pk).update(accepted=False)
    assert _post(buyer_client, "Rejected text").json()["status"] == "pending"

    by_duke = _answered(buyer, "Duke's text")
    Task.objects.filter(pk=by_duke.pk).update(executed_by=Agent.objects.get(name="duke"))
    assert _post(buyer_client, "Duke's text").json()["status"] == "pending"


def test_a_repeat_answer_is_not_itself_a_source(buyer, buyer_client):
    source = _answered(buyer)
    first = _post(buyer_client).json()
    assert first["executed_by"] == REPEAT_AGENT
    Task.objects.filter(pk=source.pk).update(accepted=False)  # the LLM's answer withdrawn
    assert _post(buyer_client).json()["status"] == "pending"


def test_the_newest_answer_wins(buyer, buyer_client):
    older = _answered(buyer, result="negative")
    Task.objects.filter(pk=older.pk).update(finished_at=timezone.now() - timedelta(hours=1))
    _answered(buyer, result="neutral")
    assert _post(buyer_client).json()["result"] == "neutral"


def test_a_batch_is_answered_from_the_store_where_it_can(buyer, buyer_client):
    _answered(buyer)
    samples = TrainingData.objects.count()
    tasks = [
        {"description": TEXT, "complexity": 2, "task_type": "sentiment", "labels": LABELS},
        {"description": "A new text", "complexity": 2, "task_type": "sentiment", "labels": LABELS},
        {"description": f" {TEXT} ", "complexity": 2, "task_type": "sentiment", "labels": LABELS},
    ]
    response = buyer_client.post("/tasks/batch", {"tasks": tasks}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()["tasks"]
    assert [t["executed_by"] for t in body] == [REPEAT_AGENT, None, REPEAT_AGENT]
    assert [t["status"] for t in body] == ["completed", "pending", "completed"]
    assert body[0]["result"] == body[2]["result"] == "positive"
    assert TrainingData.objects.count() == samples
    escrow = Account.objects.get(user=buyer, kind=Account.Kind.ESCROW).balance
    assert escrow == Decimal(body[1]["price"])  # only the pending task is still held


def test_the_key_is_documented_normalisation():
    assert normalise_text("  a\u00a0 b\n\tc ") == "a b c"
    assert normalise_text("e\u0301") == "\u00e9"
    assert repeat_key(task_type="t", labels=["a", "b"], text="x") == repeat_key(
        task_type="t", labels=["b", "a"], text=" x "
    )
    assert repeat_key(task_type="t", labels=None, text="x") == ""


def test_the_lookup_uses_the_partial_index(buyer):
    if connection.vendor != "sqlite":
        pytest.skip("the plan is read from SQLite's EXPLAIN QUERY PLAN")
    from tasks.services.repeat import repeat_answers_find

    with connection.cursor() as cursor:
        queries = []

        def capture(execute, sql, params, many, context):
            queries.append((sql, params))
            return execute(sql, params, many, context)

        with connection.execute_wrapper(capture):
            repeat_answers_find(keys=["0" * 64])
        (sql, params) = next(q for q in queries if "repeat_key" in q[0])
        cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        plan = " ".join(str(row) for row in cursor.fetchall())
    assert "task_repeat_lookup" in plan


@pytest.mark.parametrize("route_module", ["tasks.services.submission", "tasks.services.batch"])
def test_duke_comes_first_when_its_certificate_covers_the_task(
    buyer, buyer_client, monkeypatch, route_module
):
    from duke.router import RouteDecision

    _answered(buyer, result="negative")
    decision = RouteDecision(label="positive", confidence=0.99, model_version=1, audit=False)
    monkeypatch.setattr(f"{route_module}.route", lambda **_: decision)
    body = {"description": TEXT, "complexity": 2, "task_type": "sentiment", "labels": LABELS}
    if route_module.endswith("batch"):
        response = buyer_client.post("/tasks/batch", {"tasks": [body]}, format="json")
        task = response.json()["tasks"][0]
    else:
        task = buyer_client.post("/tasks", body, format="json").json()
    assert task["executed_by"] == "duke"
    assert task["result"] == "positive"
