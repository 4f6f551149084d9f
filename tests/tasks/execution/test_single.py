"""Submit through the API; the job runs through the real django-q2 path (sync mode) and the real openai
client talks to the simulator over HTTP."""

from decimal import Decimal

import pytest

from agents.models import Agent
from agents.simulator import Answer, Fault
from duke.models import TrainingData
from ledger.models import Account
from tasks.models import Task

pytestmark = pytest.mark.django_db

LABELS = ["sports", "politics", "science"]


def _submit(client, capture, **body):
    payload = {"description": "The match ended 2-1 after extra time.", "complexity": 2, **body}
    with capture(execute=True):
        response = client.post("/tasks", payload, format="json")
    assert response.status_code == 201, response.content
    return Task.objects.get(pk=response.json()["id"])


def test_it_completes_a_labeling_task_with_one_of_its_labels(
    buyer, buyer_client, llm_settings, django_capture_on_commit_callbacks
):
    llm_settings.set_answer("The match ended 2-1 after extra time.", "sports")
    task = _submit(buyer_client, django_capture_on_commit_callbacks, labels=LABELS, task_type="topic")
    task.refresh_from_db()
    assert task.status == Task.Status.COMPLETED
    assert task.result == "sports"
    assert task.executed_by.name == "openai-gpt-4o-mini"
    assert task.prompt_tokens > 0 and task.completion_tokens > 0 and task.latency_ms is not None
    assert task.cost > 0
    body = buyer_client.get(f"/tasks/{task.id}").json()
    assert body["status"] == "completed" and body["result"] == "sports"
    assert body["executed_by"] == "openai-gpt-4o-mini"
    sample = TrainingData.objects.get(task_id=task.id)
    assert sample.output == "sports" and sample.task_type == "topic"
    assert Account.objects.get(user=buyer, kind="buyer").balance == Decimal("100") - task.price


def test_it_completes_a_free_form_task_with_text(
    buyer, buyer_client, llm_settings, django_capture_on_commit_callbacks
):
    task = _submit(buyer_client, django_capture_on_commit_callbacks, description="Write one line about tea.")
    task.refresh_from_db()
    assert task.status == Task.Status.COMPLETED
    assert task.result.strip()
    assert TrainingData.objects.get(task_id=task.id).labels is None


def test_it_fails_and_refunds_when_the_answer_is_never_one_of_the_labels(
    buyer, buyer_client, llm_settings, django_capture_on_commit_callbacks, settings
):
    settings.AICP_LLM_MAX_ATTEMPTS = 2
    llm_settings.script(Answer('{"label": "cooking"}'), Answer('{"label": "gardening"}'))
    task = _submit(buyer_client, django_capture_on_commit_callbacks, labels=LABELS)
    task.refresh_from_db()
    assert task.status == Task.Status.FAILED
    assert task.error_code == "invalid_answer"
    assert "gardening" in task.error
    assert llm_settings.request_count == 2
    assert Account.objects.get(user=buyer, kind="buyer").balance == Decimal("100.0000")
    assert Account.objects.get(user=buyer, kind="escrow").balance == 0
    assert not TrainingData.objects.filter(task_id=task.id).exists()


def test_it_retries_a_rate_limit_then_succeeds(
    buyer, buyer_client, llm_settings, django_capture_on_commit_callbacks
):
    llm_settings.script(Fault(status=429, code="rate_limit_exceeded", retry_after=0))
    task = _submit(buyer_client, django_capture_on_commit_callbacks, labels=LABELS)
    task.refresh_from_db()
    assert task.status == Task.Status.COMPLETED
    assert task.result in LABELS
    assert llm_settings.request_count == 2


def test_it_fails_fast_on_a_permanent_auth_error(
    buyer, buyer_client, llm_settings, django_capture_on_commit_callbacks
):
    llm_settings.script(Fault(status=401, code="invalid_api_key", message="Incorrect API key provided"))
    task = _submit(buyer_client, django_capture_on_commit_callbacks, labels=LABELS)
    task.refresh_from_db()
    assert task.status == Task.Status.FAILED
    assert task.error_code == "auth"
    assert llm_settings.request_count == 1
    assert Account.objects.get(user=buyer, kind="buyer").balance == Decimal("100.0000")
    assert Agent.objects.get(name="openai-gpt-4o-mini").failure_count == 1


def test_it_keeps_forty_tasks_apart_between_buyers(
    buyer, buyer_client, other_client, llm_settings, django_capture_on_commit_callbacks
):
    for index in range(40):
        _submit(buyer_client, django_capture_on_commit_callbacks, description=f"Item {index}", labels=LABELS)
    tasks = Task.objects.filter(buyer=buyer)
    assert tasks.count() == 40
    assert set(tasks.values_list("status", flat=True)) == {"completed"}
    assert set(tasks.values_list("result", flat=True)) <= set(LABELS)
    assert other_client.get("/tasks").json()["count"] == 0
