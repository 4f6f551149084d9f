"""A flaky LLM (30% 429/500/503 and dropped connections) still gets every task done, correct, billed once;
a permanent refusal (insufficient_quota, 401) fails fast, refunds, and does not hammer the provider."""

from __future__ import annotations

import time

import pytest

from agents.simulator import Drop, Fault
from ledger.models import Account
from tasks.models import Task
from tests.factories import make_buyer, submit
from tests.faults.test_cluster_kills import (
    CLUSTER_SETTINGS,
    LABELS,
    assert_settled_exactly_once,
    counts,
    wait_until_final,
)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_it_finishes_every_task_correctly_and_bills_once_through_a_flaky_llm(
    make_llm_simulator, start_cluster, broker_enqueue, settings, capsys
):
    settings.AICP_DRAINERS = 4
    simulator = make_llm_simulator(latency_ms=50, fault_rate=0.3, seed=7)
    simulator.script(Drop(), Fault(503), Drop(), Drop(), Fault(429, retry_after=0.05), Drop())
    texts = [f"Flaky provider text {i}" for i in range(50)]
    expected = {text: LABELS[i % 3] for i, text in enumerate(texts[:40])}
    for text, label in expected.items():
        simulator.set_answer(text, label)
    cluster = start_cluster(
        simulator.base_url,
        workers=2,
        AICP_BREAKER_COOLDOWN_S="0.5",
        AICP_LLM_TIMEOUT_S="5",
        **CLUSTER_SETTINGS,
    )
    buyer = make_buyer("flaky-provider")
    start_balance = Account.objects.get(user=buyer, kind=Account.Kind.BUYER).balance
    started = time.monotonic()

    tasks = [submit(buyer, text, labels=LABELS if text in expected else None) for text in texts]
    ids = [task.id for task in tasks]
    wait_until_final(ids, 180, cluster)

    assert counts(ids) == {Task.Status.COMPLETED: 50}, cluster.log()
    results = dict(Task.objects.filter(pk__in=ids).values_list("description", "result"))
    assert {text: results[text] for text in expected} == expected
    money = assert_settled_exactly_once(buyer, tasks, start_balance)
    assert money["payouts"] == 50
    requests = simulator.request_count
    assert 50 < requests <= 50 * settings.AICP_LLM_MAX_ATTEMPTS * settings.AICP_TASK_MAX_ATTEMPTS
    with capsys.disabled():
        print(
            f"\nfault drill (flaky LLM): tasks=50 completed=50 payouts={money['payouts']} "
            f"llm_requests={requests} seconds={time.monotonic() - started:.1f}"
        )


def _submit_all(client, capture, count: int) -> list[Task]:
    tasks = []
    for i in range(count):
        with capture(execute=True):
            response = client.post(
                "/tasks",
                {"description": f"Doomed task {i}", "complexity": 1, "labels": LABELS},
                format="json",
            )
        assert response.status_code == 201, response.content
        tasks.append(Task.objects.get(pk=response.json()["id"]))
    return tasks


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fault", "error_code"),
    [
        pytest.param(
            Fault(429, code="insufficient_quota", message="You exceeded your quota"), "quota", id="quota"
        ),
        pytest.param(Fault(401, code="invalid_api_key", message="Incorrect API key"), "auth", id="401"),
    ],
)
def test_it_fails_fast_without_a_retry_storm_on_a_permanent_refusal(
    buyer, buyer_client, llm_settings, django_capture_on_commit_callbacks, fault, error_code
):
    llm_settings.script(*[fault] * 100)
    before = Account.objects.get(user=buyer, kind=Account.Kind.BUYER).balance

    tasks = _submit_all(buyer_client, django_capture_on_commit_callbacks, 10)

    for task in tasks:
        task.refresh_from_db()
        assert task.status == Task.Status.FAILED
        assert task.error_code == error_code
        assert task.attempts <= 1
    # One request per task at most: no retries of a refusal that retrying cannot change.
    assert llm_settings.request_count <= len(tasks)
    assert Account.objects.get(user=buyer, kind=Account.Kind.BUYER).balance == before
    assert Account.objects.get(user=buyer, kind=Account.Kind.ESCROW).balance == 0
