"""POST /tasks/batch through the API: all-or-nothing, errors by index, 402 with the shortfall, idempotency,
NDJSON, limits, and a ledger that is exact after a batch."""

from __future__ import annotations

import json
from collections import defaultdict
from decimal import Decimal

import pytest
from rest_framework.throttling import SimpleRateThrottle

from ledger.models import Account, LedgerEntry
from tasks.models import IdempotencyKey, Task
from tasks.services.batch import MAX_JSON_ITEMS, MAX_NDJSON_ITEMS

pytestmark = pytest.mark.django_db

LABELS = ["positive", "negative"]


def _task(i: int = 0, **fields) -> dict:
    return {"description": f"Classify review {i}: great film", "complexity": 2, **fields}


def _post(client, tasks, key=None):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return client.post("/tasks/batch", {"tasks": tasks}, format="json", **headers)


def _post_ndjson(client, lines: list[str], key=None):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return client.generic(
        "POST", "/tasks/batch", "\n".join(lines) + "\n", content_type="application/x-ndjson", **headers
    )


def _balance(user, kind=Account.Kind.BUYER) -> Decimal:
    return Account.objects.get(user=user, kind=kind).balance


def _nothing_created(buyer, available: Decimal) -> None:
    assert Task.objects.filter(buyer=buyer).count() == 0
    assert _balance(buyer) == available
    assert _balance(buyer, Account.Kind.ESCROW) == 0
    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.HOLD).exists()


def test_it_creates_every_task_in_input_order_with_one_hold_each(buyer, buyer_client):
    available = _balance(buyer)
    tasks = [_task(i, labels=LABELS, task_type="sentiment") for i in range(5)] + [_task(5, complexity=3)]
    response = _post(buyer_client, tasks)
    assert response.status_code == 201, response.content
    body = response.json()["tasks"]
    assert [t["description"] for t in body] == [t["description"] for t in tasks]
    assert {t["status"] for t in body} == {"pending"}
    assert [t["price"] for t in body] == ["0.0400"] * 5 + ["0.0600"]
    ids = [t["id"] for t in body]
    assert Task.objects.filter(pk__in=ids, buyer=buyer).count() == 6
    holds = LedgerEntry.objects.filter(kind=LedgerEntry.Kind.HOLD, account__kind=Account.Kind.ESCROW)
    assert sorted(str(h.task_id) for h in holds) == sorted(ids)
    assert _balance(buyer) == available - Decimal("0.2600")
    assert _balance(buyer, Account.Kind.ESCROW) == Decimal("0.2600")
    # The same body GET /tasks/{id} returns.
    assert buyer_client.get(f"/tasks/{ids[0]}").json() == body[0]


def test_it_writes_the_batch_in_one_transaction_and_enqueues_once(
    buyer, buyer_client, monkeypatch, django_capture_on_commit_callbacks
):
    calls = []
    monkeypatch.setattr("tasks.queue.enqueue_executions", lambda ids: calls.append(list(ids)))
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = _post(buyer_client, [_task(i) for i in range(450)])  # more than one INSERT chunk
    assert response.status_code == 201
    assert len(callbacks) == 1  # one transaction's one callback: the drainer request
    assert len(calls) == 1
    assert sorted(map(str, calls[0])) == sorted(t["id"] for t in response.json()["tasks"])


def test_it_refuses_the_whole_batch_naming_each_invalid_item_by_index(buyer, buyer_client):
    available = _balance(buyer)
    tasks = [_task(0), _task(1, complexity=11), _task(2), {"complexity": 1}, _task(4, price="1"), "text"]
    response = _post(buyer_client, tasks)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert set(error["fields"]) == {"1", "3", "4", "5"}
    assert any(m.startswith("complexity:") for m in error["fields"]["1"])
    assert any(m.startswith("description:") for m in error["fields"]["3"])
    assert any(m.startswith("price:") for m in error["fields"]["4"])
    assert "JSON object" in error["fields"]["5"][0]
    _nothing_created(buyer, available)


def test_it_refuses_unknown_or_unrequestable_agents_by_index(buyer, buyer_client):
    available = _balance(buyer)
    response = _post(buyer_client, [_task(0), _task(1, agent="no-such-agent"), _task(2, agent="duke")])
    assert response.status_code == 400
    fields = response.json()["error"]["fields"]
    assert set(fields) == {"1", "2"}
    assert "no-such-agent" in fields["1"][0]
    # Only unknown agents: 404, as POST /tasks answers for one, still by index.
    response = _post(buyer_client, [_task(0), _task(1, agent="no-such-agent")])
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "agent_not_found"
    assert set(response.json()["error"]["fields"]) == {"1"}
    _nothing_created(buyer, available)


def test_it_answers_402_with_the_shortfall_and_creates_nothing(buyer, buyer_client):
    available = _balance(buyer)  # the sign-up credit
    # gpt-4o: 0.1000 per unit; complexity 10 -> 1.0000 a task.
    count = int(available) + 3
    response = _post(buyer_client, [_task(i, complexity=10, agent="openai-gpt-4o") for i in range(count)])
    assert response.status_code == 402, response.content
    error = response.json()["error"]
    assert error["code"] == "insufficient_funds"
    total = Decimal(count)
    assert Decimal(error["fields"]["total"][0]) == total
    assert Decimal(error["fields"]["shortfall"][0]) == total - available
    _nothing_created(buyer, available)


def test_it_answers_402_when_the_batch_passes_the_daily_spend_cap(buyer, buyer_client, settings):
    settings.AICP_DAILY_SPEND_CAP = Decimal("0.1000")
    available = _balance(buyer)
    response = _post(buyer_client, [_task(i) for i in range(3)])  # 3 x 0.0400 = 0.1200
    assert response.status_code == 402, response.content
    error = response.json()["error"]
    assert error["code"] == "spend_cap_exceeded"
    assert Decimal(error["fields"]["shortfall"][0]) == Decimal("0.0200")
    _nothing_created(buyer, available)


def test_it_refuses_the_whole_batch_when_it_would_pass_the_submit_limit(buyer, buyer_client, monkeypatch):
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "submit", "5/minute")
    available = _balance(buyer)
    response = _post(buyer_client, [_task(i) for i in range(6)])
    assert response.status_code == 429, response.content
    assert "Retry-After" in response
    _nothing_created(buyer, available)


def test_it_replays_the_same_ids_under_the_same_key_and_charges_once(buyer, buyer_client):
    tasks = [_task(i) for i in range(3)]
    first = _post(buyer_client, tasks, key="batch-1")
    assert first.status_code == 201
    available = _balance(buyer)
    again = _post(buyer_client, tasks, key="batch-1")
    assert again.status_code == 201
    assert again["Idempotent-Replayed"] == "true"
    assert [t["id"] for t in again.json()["tasks"]] == [t["id"] for t in first.json()["tasks"]]
    assert Task.objects.filter(buyer=buyer).count() == 3
    assert _balance(buyer) == available
    # The same tasks sent as NDJSON are the same batch.
    ndjson = _post_ndjson(buyer_client, [json.dumps(t) for t in tasks], key="batch-1")
    assert ndjson.status_code == 201
    assert [t["id"] for t in ndjson.json()["tasks"]] == [t["id"] for t in first.json()["tasks"]]


def test_it_answers_422_for_another_body_under_the_same_key(buyer, buyer_client):
    assert _post(buyer_client, [_task(0), _task(1)], key="batch-2").status_code == 201
    available = _balance(buyer)
    response = _post(buyer_client, [_task(0), _task(2)], key="batch-2")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    # A single POST /tasks under a batch's key is another body too.
    single = buyer_client.post("/tasks", _task(0), format="json", HTTP_IDEMPOTENCY_KEY="batch-2")
    assert single.status_code == 422
    assert Task.objects.filter(buyer=buyer).count() == 2
    assert _balance(buyer) == available
    assert IdempotencyKey.objects.filter(user=buyer).count() == 1


def test_it_keeps_nothing_under_a_key_when_the_batch_is_refused(buyer, buyer_client):
    assert _post(buyer_client, [_task(0, complexity=0)], key="batch-3").status_code == 400
    assert not IdempotencyKey.objects.filter(user=buyer).exists()
    assert _post(buyer_client, [_task(0)], key="batch-3").status_code == 201


def test_it_accepts_ndjson_one_task_per_line(buyer, buyer_client):
    lines = [json.dumps(_task(i, labels=LABELS)) for i in range(4)]
    response = _post_ndjson(buyer_client, lines)
    assert response.status_code == 201, response.content
    assert [t["description"] for t in response.json()["tasks"]] == [
        f"Classify review {i}: great film" for i in range(4)
    ]


def test_it_names_bad_ndjson_lines_by_index(buyer, buyer_client):
    available = _balance(buyer)
    lines = [json.dumps(_task(0)), "{not json", "", json.dumps([1, 2]), json.dumps(_task(4, complexity=0))]
    response = _post_ndjson(buyer_client, lines)
    assert response.status_code == 400
    fields = response.json()["error"]["fields"]
    assert set(fields) == {"1", "2", "3", "4"}
    assert "not valid JSON" in fields["1"][0]
    assert "empty" in fields["2"][0]
    _nothing_created(buyer, available)


def test_it_refuses_more_than_1000_json_items(buyer, buyer_client):
    available = _balance(buyer)
    response = _post(buyer_client, [_task(i) for i in range(MAX_JSON_ITEMS + 1)])
    assert response.status_code == 400
    assert "tasks" in response.json()["error"]["fields"]
    _nothing_created(buyer, available)


def test_it_refuses_more_than_10000_ndjson_lines(buyer, buyer_client):
    available = _balance(buyer)
    line = json.dumps(_task(0))
    response = _post_ndjson(buyer_client, [line] * (MAX_NDJSON_ITEMS + 1))
    assert response.status_code == 400
    assert "tasks" in response.json()["error"]["fields"]
    _nothing_created(buyer, available)


@pytest.mark.parametrize(
    "body", [{"tasks": []}, {"tasks": "x"}, [_task(0)], {"tasks": [_task(0)], "extra": 1}]
)
def test_it_refuses_a_malformed_envelope(buyer, buyer_client, body):
    response = buyer_client.post("/tasks/batch", body, format="json")
    assert response.status_code == 400
    assert Task.objects.count() == 0


def test_it_refuses_operators_and_anonymous_callers(operator_client, api_client):
    assert _post(operator_client, [_task(0)]).status_code == 403
    assert _post(api_client, [_task(0)]).status_code == 401


def test_the_ledger_is_exact_after_a_batch(buyer, buyer_client):
    available = _balance(buyer)
    tasks = [_task(i, complexity=1 + i % 10) for i in range(300)]
    response = _post(buyer_client, tasks)
    assert response.status_code == 201
    total = sum((Decimal(t["price"]) for t in response.json()["tasks"]), Decimal(0))
    assert total == sum((Decimal("0.0200") * (1 + i % 10) for i in range(300)), Decimal(0))
    assert _balance(buyer) == available - total
    assert _balance(buyer, Account.Kind.ESCROW) == total
    # Every transaction's entries sum to zero; the accounts' balances are their entries' sums (summed in
    # Decimal here: SQLite's SUM adds binary floats).
    per_transaction: dict = defaultdict(Decimal)
    per_account: dict = defaultdict(Decimal)
    for entry in LedgerEntry.objects.all():
        per_transaction[entry.transaction_id] += entry.amount
        per_account[entry.account_id] += entry.amount
    assert set(per_transaction.values()) == {Decimal(0)}
    for account in Account.objects.filter(user=buyer):
        assert account.balance == per_account[account.pk]
    assert (
        LedgerEntry.objects.filter(kind=LedgerEntry.Kind.HOLD, account__kind=Account.Kind.ESCROW).count()
        == 300
    )


def test_it_accepts_a_batch_larger_than_the_single_request_body_limit(buyer, buyer_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 256 * 1024
    tasks = [_task(i, description=f"{i} " + "x" * 7000) for i in range(100)]  # ~700 KB
    response = _post(buyer_client, tasks)
    assert response.status_code == 201, response.content[:300]
    ndjson = _post_ndjson(buyer_client, [json.dumps(t) for t in tasks])
    assert ndjson.status_code == 201, ndjson.content[:300]


@pytest.mark.parametrize("content_type", ["application/json", "application/x-ndjson"])
def test_it_answers_413_for_a_body_over_the_batch_limit(buyer, buyer_client, monkeypatch, content_type):
    monkeypatch.setattr("tasks.api.MAX_BATCH_BODY_BYTES", 10_000)
    available = _balance(buyer)
    body = json.dumps({"tasks": [_task(i) for i in range(300)]})
    if content_type != "application/json":
        body = "\n".join(json.dumps(_task(i)) for i in range(300))
    response = buyer_client.generic("POST", "/tasks/batch", body, content_type=content_type)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    _nothing_created(buyer, available)


def test_it_answers_400_for_malformed_json(buyer, buyer_client):
    response = buyer_client.generic("POST", "/tasks/batch", '{"tasks": [', content_type="application/json")
    assert response.status_code == 400
    assert Task.objects.count() == 0


def test_duke_serves_the_items_it_is_confident_about_inside_the_batch(buyer, buyer_client, monkeypatch):
    from duke.models import ServedTask, TrainingData
    from duke.router import RouteDecision

    def route(*, text, labels, task_type):
        confident = "obvious" in text
        return (
            RouteDecision(label="positive", confidence=0.99, model_version=1, audit=False)
            if confident
            else None
        )

    monkeypatch.setattr("tasks.services.batch.route", route)
    available = _balance(buyer)
    tasks = [
        _task(0, description="an obvious one", labels=LABELS, task_type="sentiment"),
        _task(1, description="a hard one", labels=LABELS, task_type="sentiment"),
        _task(2, description="obvious but named", labels=LABELS, agent="openai-gpt-4o-mini"),
    ]
    response = _post(buyer_client, tasks)
    assert response.status_code == 201, response.content
    body = response.json()["tasks"]
    assert [t["executed_by"] for t in body] == ["duke", None, None]
    assert [t["status"] for t in body] == ["completed", "pending", "pending"]
    assert body[0]["result"] == "positive"
    assert body[0]["price"] == "0.0040"  # Duke's price: 0.0020 per unit
    assert ServedTask.objects.filter(task_id=body[0]["id"]).exists()
    assert not TrainingData.objects.exists()  # Duke's own answer is not a sample
    total = sum((Decimal(t["price"]) for t in body), Decimal(0))
    assert _balance(buyer) == available - total
    assert _balance(buyer, Account.Kind.ESCROW) == Decimal(body[1]["price"]) + Decimal(body[2]["price"])
