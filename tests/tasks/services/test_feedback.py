"""POST /tasks/{id}/feedback: owner only, labels validated, corrections teach Duke and cost reputation."""

from decimal import Decimal

import pytest

from agents.models import Agent
from agents.selectors import agent_duke
from duke.models import ServedTask, TrainingData
from duke.router import RouteDecision
from tasks.models import Task
from tasks.services.lifecycle import Outcome, task_claim, task_complete
from tasks.services.submission import TaskRequest, _submit_served_by_duke
from tests.factories import submit

pytestmark = pytest.mark.django_db

LABELS = ["spam", "ham", "promo"]


def _llm_labeled(buyer, result="spam", text="Win a free cruise now"):
    task = submit(buyer, text, labels=LABELS, task_type="mail")
    task_claim(task_id=task.id)
    task_complete(task_id=task.id, outcome=Outcome(result=result, latency_ms=3))
    task.refresh_from_db()
    return task


def _duke_served(buyer, label="ham", text="Lunch at noon?"):
    return _submit_served_by_duke(
        buyer=buyer,
        request=TaskRequest(description=text, complexity=2, task_type="mail", labels=tuple(LABELS)),
        duke=agent_duke(),
        decision=RouteDecision(label=label, confidence=0.99, model_version=1, audit=False),
    )


def _feedback(client, task, **body):
    return client.post(f"/tasks/{task.id}/feedback", body, format="json")


def test_it_records_an_acceptance_without_touching_reputation(buyer, buyer_client):
    task = _llm_labeled(buyer)
    response = _feedback(buyer_client, task, accepted=True)
    assert response.status_code == 200, response.content
    assert response.json()["accepted"] is True and response.json()["correct_label"] == ""
    agent = Agent.objects.get(name="openai-gpt-4o-mini")
    assert agent.success_count == 1 and agent.failure_count == 0
    assert TrainingData.objects.get(task_id=task.id).label == "spam"


def test_it_makes_a_correction_the_training_label_and_counts_it_against_the_agent(buyer, buyer_client):
    task = _llm_labeled(buyer, result="spam")
    response = _feedback(buyer_client, task, accepted=False, correct_label="promo")
    assert response.status_code == 200, response.content
    assert response.json()["correct_label"] == "promo" and response.json()["accepted"] is False
    sample = TrainingData.objects.get(task_id=task.id)
    assert sample.output == "spam" and sample.label == "promo" and sample.source == TrainingData.Source.BUYER
    agent = Agent.objects.get(name="openai-gpt-4o-mini")
    assert agent.success_count == 0 and agent.failure_count == 1


def test_it_creates_a_sample_from_a_correction_of_duke_and_counts_it_in_live_agreement(buyer, buyer_client):
    task = _duke_served(buyer, label="ham")
    assert not TrainingData.objects.filter(task_id=task.id).exists()  # Duke's answers are never samples
    response = _feedback(buyer_client, task, accepted=False, correct_label="spam")
    assert response.status_code == 200, response.content
    sample = TrainingData.objects.get(task_id=task.id)
    assert sample.label == "spam" and sample.source == TrainingData.Source.BUYER
    assert sample.input_text == "Lunch at noon?" and sample.labels == LABELS
    assert ServedTask.objects.get(task_id=task.id).verdict == ServedTask.Verdict.REJECTED
    duke = agent_duke()
    assert duke.success_count == 0 and duke.failure_count == 1


def test_it_counts_an_acceptance_of_duke_as_live_agreement(buyer, buyer_client):
    task = _duke_served(buyer)
    assert _feedback(buyer_client, task, accepted=True).status_code == 200
    assert ServedTask.objects.get(task_id=task.id).verdict == ServedTask.Verdict.ACCEPTED
    assert not TrainingData.objects.filter(task_id=task.id).exists()


def test_it_counts_a_bare_rejection_against_the_agent_without_inventing_a_label(buyer, buyer_client):
    task = _llm_labeled(buyer)
    assert _feedback(buyer_client, task, accepted=False).status_code == 200
    assert TrainingData.objects.get(task_id=task.id).label == "spam"
    assert Agent.objects.get(name="openai-gpt-4o-mini").failure_count == 1


def test_it_requires_a_token(api_client, buyer):
    task = _llm_labeled(buyer)
    assert _feedback(api_client, task, accepted=True).status_code == 401


def test_it_hides_the_task_from_another_buyer(buyer, other_client):
    task = _llm_labeled(buyer)
    response = _feedback(other_client, task, accepted=False, correct_label="ham")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "task_not_found"
    task.refresh_from_db()
    assert task.accepted is None


def test_it_refuses_an_operator_who_can_see_the_task(buyer, operator_client):
    task = _llm_labeled(buyer)
    response = _feedback(operator_client, task, accepted=True)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "not_task_owner"


def test_it_refuses_an_unknown_key_and_records_no_verdict(buyer, buyer_client):
    task = _llm_labeled(buyer)
    response = _feedback(buyer_client, task, accepted=False, corect_label="ham")
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "corect_label": ["Unknown field; did you mean 'correct_label'?"]
    }
    task.refresh_from_db()
    assert task.accepted is None


def test_it_answers_404_for_a_malformed_or_unknown_id(buyer_client):
    assert (
        buyer_client.post("/tasks/not-a-uuid/feedback", {"accepted": True}, format="json").status_code == 404
    )
    unknown = "/tasks/00000000-0000-4000-8000-000000000000/feedback"
    assert buyer_client.post(unknown, {"accepted": True}, format="json").status_code == 404


def test_it_rejects_a_label_outside_the_task_labels(buyer, buyer_client):
    task = _llm_labeled(buyer)
    response = _feedback(buyer_client, task, accepted=False, correct_label="eggs")
    assert response.status_code == 400
    assert "correct_label" in response.json()["error"]["fields"]
    assert Agent.objects.get(name="openai-gpt-4o-mini").failure_count == 0


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"accepted": "yes"},
        {"accepted": 1},
        {"accepted": None},
        {"accepted": True, "correct_label": "ham"},  # accepts the answer yet names another label
        {"accepted": False, "correct_label": "spam"},  # rejects the answer by naming it
    ],
)
def test_it_rejects_malformed_or_contradictory_feedback(buyer, buyer_client, body):
    task = _llm_labeled(buyer, result="spam")
    assert _feedback(buyer_client, task, **body).status_code == 400
    task.refresh_from_db()
    assert task.accepted is None


def test_it_treats_naming_the_result_as_an_acceptance(buyer, buyer_client):
    task = _llm_labeled(buyer, result="spam")
    response = _feedback(buyer_client, task, accepted=True, correct_label="spam")
    assert response.status_code == 200
    assert response.json()["correct_label"] == ""
    assert TrainingData.objects.get(task_id=task.id).source == TrainingData.Source.LLM


def test_it_refuses_feedback_on_a_task_that_is_not_finished(buyer, buyer_client):
    task = submit(buyer, "still waiting", labels=LABELS)
    response = _feedback(buyer_client, task, accepted=False, correct_label="ham")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "feedback_not_applicable"


def test_it_refuses_feedback_on_a_free_form_task(buyer, buyer_client):
    task = submit(buyer, "Write a haiku")
    task_claim(task_id=task.id)
    task_complete(task_id=task.id, outcome=Outcome(result="an old silent pond"))
    assert _feedback(buyer_client, task, accepted=False).status_code == 409


def test_it_takes_feedback_once_and_replays_an_identical_repeat(buyer, buyer_client):
    task = _llm_labeled(buyer)
    first = _feedback(buyer_client, task, accepted=False, correct_label="ham")
    again = _feedback(buyer_client, task, accepted=False, correct_label="ham")
    assert first.status_code == again.status_code == 200
    assert Agent.objects.get(name="openai-gpt-4o-mini").failure_count == 1  # counted once
    changed = _feedback(buyer_client, task, accepted=False, correct_label="promo")
    assert changed.status_code == 409
    assert changed.json()["error"]["code"] == "feedback_exists"
    assert TrainingData.objects.get(task_id=task.id).label == "ham"


def test_it_keeps_the_price_paid_when_feedback_is_negative(buyer, buyer_client):
    # Feedback teaches and rates; it is not a refund mechanism.
    task = _llm_labeled(buyer)
    _feedback(buyer_client, task, accepted=False, correct_label="ham")
    assert Task.objects.get(pk=task.id).price == task.price
    assert task.price > Decimal("0")
