"""The Batch API path (issue 21 item 4), through the real openai client against the simulator's
/v1/files and /v1/batches: the discounted quote, collection into a batch, polling, settlement, and the
fallback to normal execution when the provider has no Batch API."""

from __future__ import annotations

import logging
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from agents import llm
from agents.models import Agent
from agents.pricing import batch_quote
from ledger.models import Account, LedgerEntry
from ledger.selectors import balance_for
from tasks import jobs
from tasks.execution.drainer import Drainer
from tasks.models import LLMBatch, Task
from tasks.selectors import claimable_tasks
from tasks.services.batches import batch_tasks_claim
from tasks.services.lifecycle import task_requeue_expired

LABELS = ["sports", "politics", "science"]


@pytest.fixture
def batch_simulator(settings, make_llm_simulator):
    simulator = make_llm_simulator(batch_delay_s=3600)  # in progress until the test says otherwise
    settings.OPENAI_BASE_URL = simulator.base_url
    settings.OPENAI_API_KEY = "test-key"
    settings.AICP_LLM_TIMEOUT_S = 5.0
    return simulator


# --- agents.llm against the simulator -------------------------------------------------------------------


def test_it_submits_polls_and_reads_a_batch_through_the_openai_client(make_llm_simulator):
    simulator = make_llm_simulator(batch_delay_s=3600)
    simulator.set_answer("The match ended 2-1.", "sports")
    endpoint = llm.LLMEndpoint(model="gpt-4o-mini", base_url=simulator.base_url, api_key="k", timeout_s=5)
    requests = [
        llm.BatchRequest(custom_id="t1", text="The match ended 2-1.", labels=tuple(LABELS)),
        llm.BatchRequest(custom_id="t2", text="Write one sentence."),
    ]
    batch_id = llm.batch_submit(endpoint=endpoint, requests=requests)
    assert llm.batch_state(endpoint=endpoint, batch_id=batch_id).status == "in_progress"

    simulator.batch_delay_s = 0
    state = llm.batch_state(endpoint=endpoint, batch_id=batch_id)
    assert state.status == "completed" and state.finished and state.output_file_id
    results = llm.batch_results(endpoint=endpoint, file_id=state.output_file_id, requests=requests)
    assert results["t1"].text == "sports"
    assert results["t1"].prompt_tokens > 0 and results["t1"].completion_tokens > 0
    assert "simulator" in results["t2"].text.lower()
    assert simulator.request_count == 0  # answered through the batch, not the chat endpoint
    assert simulator.batches.request_count == 2


def test_it_says_so_when_the_provider_has_no_batch_api(make_llm_simulator):
    simulator = make_llm_simulator(batch_api=False)
    endpoint = llm.LLMEndpoint(model="gpt-4o-mini", base_url=simulator.base_url, api_key="k", timeout_s=5)
    with pytest.raises(llm.BatchAPIUnavailable):
        llm.batch_submit(endpoint=endpoint, requests=[llm.BatchRequest(custom_id="t", text="x")])


def test_it_reports_an_answer_outside_the_labels_as_an_error(make_llm_simulator):
    simulator = make_llm_simulator(batch_delay_s=0)
    simulator.set_answer("Odd one", "cooking")
    endpoint = llm.LLMEndpoint(model="gpt-4o-mini", base_url=simulator.base_url, api_key="k", timeout_s=5)
    requests = [llm.BatchRequest(custom_id="t", text="Odd one", labels=tuple(LABELS))]
    batch_id = llm.batch_submit(endpoint=endpoint, requests=requests)
    state = llm.batch_state(endpoint=endpoint, batch_id=batch_id)
    (error,) = llm.batch_results(endpoint=endpoint, file_id=state.output_file_id, requests=requests).values()
    assert isinstance(error, llm.LLMError) and error.code == "invalid_answer"


# --- pricing --------------------------------------------------------------------------------------------


def test_it_discounts_the_llm_cost_part_of_the_quote_and_rounds_for_the_buyer():
    assert batch_quote(
        quote=Decimal("0.0200"), llm_cost_estimate=Decimal("0.0100"), discount=Decimal("0.5")
    ) == (Decimal("0.0150"))
    # Fractions of the last place go to the buyer.
    assert batch_quote(
        quote=Decimal("0.0200"), llm_cost_estimate=Decimal("0.000009"), discount=Decimal("0.5")
    ) == (Decimal("0.0199"))
    assert batch_quote(
        quote=Decimal("0.0200"), llm_cost_estimate=Decimal("1"), discount=Decimal("0.5")
    ) == Decimal("0.0100")  # never more than the quote is the LLM's part
    assert batch_quote(
        quote=Decimal("0.0200"), llm_cost_estimate=Decimal("0"), discount=Decimal("0.5")
    ) == Decimal("0.0200")
    with pytest.raises(ValueError):
        batch_quote(quote=Decimal("1"), llm_cost_estimate=Decimal("1"), discount=Decimal("1.5"))


# --- the whole path -------------------------------------------------------------------------------------


def _post(client, **extra):
    body = {
        "description": "The match ended 2-1.",
        "complexity": 2,
        "labels": LABELS,
        "agent": "openai-gpt-4o",
    }
    return client.post("/tasks", {**body, **extra}, format="json")


@pytest.mark.django_db
def test_it_prices_a_batch_task_below_the_normal_quote_by_the_configured_discount(buyer_client, settings):
    normal = Decimal(_post(buyer_client).json()["price"])
    batch = Decimal(_post(buyer_client, priority="batch").json()["price"])
    assert batch < normal
    settings.AICP_BATCH_DISCOUNT = Decimal("0")
    assert Decimal(_post(buyer_client, priority="batch").json()["price"]) == normal


@pytest.mark.django_db
def test_it_completes_batch_tasks_when_their_batch_returns_and_charges_the_discounted_quote(
    buyer, buyer_client, batch_simulator, django_capture_on_commit_callbacks
):
    batch_simulator.set_answer("The match ended 2-1.", "sports")
    balance_before = balance_for(user_id=buyer.pk, kind=Account.Kind.BUYER)
    created = [_post(buyer_client, priority="batch").json() for _ in range(3)]
    ids = [body["id"] for body in created]
    price = Decimal(created[0]["price"])
    assert all(body["priority"] == "batch" and body["status"] == "pending" for body in created)
    assert not claimable_tasks().filter(pk__in=ids).exists()  # no drainer takes them
    assert Drainer().run().claimed == 0

    assert jobs.run_llm_batches() == (1, 0)
    batch = LLMBatch.objects.get()
    assert sorted(batch.task_ids) == sorted(ids)
    assert set(Task.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"running"}
    # Leased for the provider's window: the reaper does not run them a second time meanwhile.
    leases = Task.objects.filter(pk__in=ids).values_list("lease_until", flat=True)
    assert all(lease > timezone.now() + timedelta(hours=24) for lease in leases)
    assert task_requeue_expired() == []
    assert jobs.run_llm_batches() == (0, 0)  # still in progress: nothing to settle

    batch_simulator.batch_delay_s = 0  # the provider finishes the batch
    with django_capture_on_commit_callbacks(execute=True):
        assert jobs.run_llm_batches() == (0, 1)

    batch.refresh_from_db()
    assert batch.status == LLMBatch.Status.COMPLETED
    tasks = list(Task.objects.filter(pk__in=ids))
    assert {(task.status, task.result, task.executed_by.name) for task in tasks} == {
        ("completed", "sports", "openai-gpt-4o")
    }
    assert all(task.cost > 0 and task.prompt_tokens > 0 for task in tasks)
    assert batch_simulator.request_count == 0
    # Exactly the discounted quotes, held then paid: the buyer's balance moved by their sum, to the digit.
    assert balance_for(user_id=buyer.pk, kind=Account.Kind.BUYER) == balance_before - 3 * price
    assert balance_for(user_id=buyer.pk, kind=Account.Kind.ESCROW) == Decimal("0")
    payouts = LedgerEntry.objects.filter(task_id__in=ids, kind="payout", amount__lt=0)
    assert sorted(entry.amount for entry in payouts) == [-price] * 3


@pytest.mark.django_db
def test_it_falls_back_to_normal_execution_without_a_batch_api(
    buyer_client, settings, make_llm_simulator, caplog, django_capture_on_commit_callbacks
):
    simulator = make_llm_simulator(batch_api=False)
    simulator.set_answer("The match ended 2-1.", "sports")
    settings.OPENAI_BASE_URL = simulator.base_url
    settings.OPENAI_API_KEY = "test-key"
    body = _post(buyer_client, priority="batch").json()

    with caplog.at_level(logging.WARNING, logger="tasks"):
        with django_capture_on_commit_callbacks(execute=True):
            assert jobs.run_llm_batches() == (0, 0)
    assert "falling back to normal execution" in caplog.text

    # Back to normal priority, and the drainer asked for on commit (run in process: the queue is in sync
    # mode here) answered it through the chat endpoint; its claim by the collector did not count.
    task = Task.objects.get(pk=body["id"])
    assert (task.status, task.priority, task.attempts, task.result) == ("completed", "normal", 1, "sports")
    assert Decimal(body["price"]) == task.price  # the discounted quote held stays the price
    assert simulator.request_count == 1
    assert not LLMBatch.objects.exists()


@pytest.mark.django_db
def test_it_leaves_a_batch_task_that_duke_answers_to_duke(buyer, batch_simulator):
    duke = Agent.objects.get(backend=Agent.Backend.DUKE)
    task = Task.objects.create(
        buyer=buyer, description="x", complexity=1, agent=duke, price=Decimal("0.0020"), priority="batch"
    )
    assert jobs.run_llm_batches() == (0, 0)
    task.refresh_from_db()
    assert task.status == "pending"


@pytest.mark.django_db
def test_it_leaves_tasks_claimed_by_a_collector_that_died_to_the_reaper(buyer_client, batch_simulator):
    task_id = _post(buyer_client, priority="batch").json()["id"]
    (claimed,) = batch_tasks_claim(limit=10)  # and then the collector died before sending them
    assert claimed.lease_until < timezone.now() + timedelta(hours=1)
    Task.objects.filter(pk=task_id).update(lease_until=timezone.now() - timedelta(seconds=1))
    assert [str(t) for t in task_requeue_expired()] == [task_id]
    assert jobs.run_llm_batches() == (1, 0)  # collected again
