"""Idempotency-Key on POST /tasks: replay, mismatch, expiry, validation and concurrent duplicates."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal
from unittest import mock

import pytest
from django.db import connection
from django.utils import timezone

from ledger.models import Account, LedgerEntry
from tasks.models import IdempotencyKey, Task
from tasks.services.idempotency import _find_key
from tasks.services.lifecycle import Outcome, task_claim, task_complete
from tests.factories import authenticated_client, make_buyer

pytestmark = pytest.mark.django_db

BODY = {"description": "Classify: great film", "complexity": 2, "labels": ["positive", "negative"]}


def _post(client, key, body=None):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return client.post("/tasks", body or BODY, format="json", **headers)


def _available(user) -> Decimal:
    return Account.objects.get(user=user, kind=Account.Kind.BUYER).balance


def test_it_replays_the_first_response_and_creates_and_charges_nothing(buyer, buyer_client):
    first = _post(buyer_client, "order-42")
    assert first.status_code == 201 and "Idempotent-Replayed" not in first
    entries, balance = LedgerEntry.objects.count(), _available(buyer)

    again = _post(buyer_client, "order-42")
    assert again.status_code == 201
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert Task.objects.count() == 1
    assert LedgerEntry.objects.count() == entries and _available(buyer) == balance


def test_it_replays_the_first_response_even_after_the_task_moved_on(buyer, buyer_client):
    first = _post(buyer_client, "k1").json()
    task_claim(task_id=first["id"])
    task_complete(task_id=first["id"], outcome=Outcome(result="positive"))
    replay = _post(buyer_client, "k1").json()
    assert replay == first and replay["status"] == "pending"
    assert buyer_client.get(f"/tasks/{first['id']}").json()["status"] == "completed"


def test_it_treats_an_equivalent_spelling_of_the_body_as_the_same_request(buyer_client):
    first = _post(buyer_client, "k2", {"complexity": 2, "description": "Summarise", "agent": "auto"})
    same = _post(buyer_client, "k2", {"description": "  Summarise ", "complexity": 2, "task_type": ""})
    assert same.status_code == 201 and same["Idempotent-Replayed"] == "true"
    assert same.json()["id"] == first.json()["id"]


def test_it_refuses_the_same_key_with_a_different_body_with_422(buyer, buyer_client):
    _post(buyer_client, "k3")
    entries = LedgerEntry.objects.count()
    response = _post(buyer_client, "k3", {**BODY, "complexity": 3})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "idempotency_key_reused" and "different request body" in error["message"]
    assert Task.objects.count() == 1 and LedgerEntry.objects.count() == entries


def test_it_keeps_keys_per_user(buyer_client, other_client):
    mine, theirs = _post(buyer_client, "shared"), _post(other_client, "shared", {**BODY, "complexity": 9})
    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["id"] != theirs.json()["id"] and "Idempotent-Replayed" not in theirs


def test_it_lets_an_expired_key_be_used_again(buyer, buyer_client, settings):
    settings.AICP_IDEMPOTENCY_TTL_H = 24
    first = _post(buyer_client, "daily-report").json()
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(hours=24, seconds=1))
    second = _post(buyer_client, "daily-report", {**BODY, "complexity": 5})
    assert second.status_code == 201 and "Idempotent-Replayed" not in second
    assert second.json()["id"] != first["id"] and Task.objects.count() == 2
    assert list(IdempotencyKey.objects.values_list("task_id", flat=True)) == [
        Task.objects.get(complexity=5).pk
    ]


def test_it_still_replays_a_key_just_inside_its_lifetime(buyer_client, settings):
    settings.AICP_IDEMPOTENCY_TTL_H = 24
    _post(buyer_client, "k4")
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(hours=23, minutes=59))
    assert _post(buyer_client, "k4")["Idempotent-Replayed"] == "true"
    assert Task.objects.count() == 1


@pytest.mark.parametrize("key", ["", "x" * 256, "has space", "tab\there", "caf\u00e9"])
def test_it_rejects_a_malformed_key_with_400(buyer_client, key):
    response = _post(buyer_client, key)
    assert response.status_code == 400, response.content
    assert "Idempotency-Key" in response.json()["error"]["fields"]
    assert Task.objects.count() == 0


@pytest.mark.parametrize("key", ["a", "x" * 255, "550e8400-e29b-41d4-a716-446655440000", "k_1.2:3~/+="])
def test_it_accepts_keys_of_printable_ascii_up_to_255_characters(buyer_client, key):
    assert _post(buyer_client, key).status_code == 201
    assert IdempotencyKey.objects.get().key == key


def test_it_stores_no_key_when_the_submission_is_refused_so_the_key_works_after_topping_up(settings):
    from ledger.services import buyer_credit

    settings.AICP_SIGNUP_CREDIT = Decimal("0")
    broke = make_buyer("broke")
    client = authenticated_client(broke)
    refused = _post(client, "k5")
    assert refused.status_code == 402 and "Idempotent-Replayed" not in refused
    assert not IdempotencyKey.objects.exists() and not Task.objects.exists()
    buyer_credit(user_id=broke.pk, amount=Decimal("1"))
    response = _post(client, "k5")
    assert response.status_code == 201 and "Idempotent-Replayed" not in response


def test_it_does_not_replay_over_the_spend_cap(buyer, buyer_client, settings):
    first = _post(buyer_client, "k6")
    settings.AICP_DAILY_SPEND_CAP = Decimal("0.0100")
    replay = _post(buyer_client, "k6")
    assert replay.status_code == 201 and replay.json() == first.json()  # a replay is not a new spend
    assert _post(buyer_client, "k7").status_code == 429


def test_it_turns_a_lost_insert_race_into_a_replay(buyer, buyer_client):
    """The duplicate's lookup ran before the first committed: its insert hits the unique constraint."""
    first = _post(buyer_client, "race")
    calls = {"n": 0}

    def stale_then_real(**kwargs):
        calls["n"] += 1
        return None if calls["n"] == 1 else _find_key(**kwargs)

    with mock.patch("tasks.services.idempotency._find_key", side_effect=stale_then_real):
        second = _post(buyer_client, "race")
    assert calls["n"] == 2
    assert second.status_code == 201 and second["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()
    assert Task.objects.count() == 1
    assert LedgerEntry.objects.filter(kind="hold", amount__lt=0).count() == 1
    assert _available(buyer) == Decimal("100.0000") - Decimal(first.json()["price"])


def test_it_answers_409_when_the_key_stays_taken_and_never_creates_a_second_task(buyer, buyer_client):
    _post(buyer_client, "stuck")
    with mock.patch("tasks.services.idempotency._find_key", return_value=None):
        response = _post(buyer_client, "stuck")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_in_progress"
    assert Task.objects.count() == 1 and LedgerEntry.objects.filter(kind="hold").count() == 2


# serialized_rollback: the flush after a transactional test would otherwise drop the seeded agents.
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_it_creates_one_task_for_concurrent_duplicates(llm_settings):
    buyer = make_buyer("racer")
    clients = [authenticated_client(buyer) for _ in range(6)]
    barrier = threading.Barrier(len(clients))
    responses: list = []
    errors: list = []

    def send(client) -> None:
        try:
            barrier.wait()
            responses.append(_post(client, "same-click"))
        except Exception as exc:  # noqa: BLE001 — reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert sorted(r.status_code for r in responses) == [201] * len(clients)
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(r.get("Idempotent-Replayed") == "true" for r in responses) == len(clients) - 1
    assert Task.objects.count() == 1
    assert LedgerEntry.objects.filter(kind="hold", amount__lt=0).count() == 1
    task = Task.objects.get()
    spent = task.price if task.status == Task.Status.COMPLETED else Decimal("0")
    held = task.price if not task.is_final else Decimal("0")
    assert _available(buyer) == Decimal("100.0000") - spent - held
