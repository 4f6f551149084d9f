"""Confidence routing: Duke serves a labeling task in the request only when it has earned it."""

import math
import random
from decimal import Decimal

import pytest

from agents.models import Agent
from duke.model import Input
from duke.models import ModelVersion, RoutingState, ServedTask, TrainingData
from duke.router import decide, route, threshold_for
from duke.selectors import routing_status
from duke.services import evaluate
from duke.training import TrainConfig, train
from ledger.models import Account
from tasks.models import Task
from tasks.services.lifecycle import Outcome, task_claim, task_complete
from tests.duke.routing_helpers import (
    LABELS,
    TASK_TYPE,
    install_production,
    synthetic_samples,
    topic_text,
    trained_model,
)
from tests.factories import submit

pytestmark = pytest.mark.django_db

SPORTS = "striker goal match league coach stadium referee season"


@pytest.fixture(autouse=True)
def _no_audits(settings):
    settings.DUKE_AUDIT_RATE = 0.0


def _post(client, description, *, labels=LABELS, task_type=TASK_TYPE, **extra):
    body = {"description": description, "complexity": 2, "labels": list(labels), "task_type": task_type}
    return client.post("/tasks", {**body, **extra}, format="json")


def _confidence(text, labels=LABELS, task_type=TASK_TYPE):
    return trained_model().predict([Input(text, tuple(labels), task_type)])[0].confidence


def test_it_serves_a_confident_task_in_the_request(
    buyer, buyer_client, llm_settings, django_capture_on_commit_callbacks
):
    install_production()
    with django_capture_on_commit_callbacks(execute=True):
        response = _post(buyer_client, SPORTS)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "completed" and body["result"] == "sports"
    assert body["executed_by"] == "duke" and body["agent"] == "duke"
    assert body["confidence"] >= 0.6
    assert Decimal(body["price"]) == Decimal("0.0040")  # Duke's 0.0020 per unit, complexity 2
    assert Decimal(body["cost"]) == 0
    assert llm_settings.request_count == 0  # no LLM call, not even in the background
    assert Account.objects.get(user=buyer, kind=Account.Kind.BUYER).balance == Decimal("99.9960")
    assert Account.objects.get(user=buyer, kind=Account.Kind.ESCROW).balance == 0
    assert Agent.objects.get(name="duke").earnings == Decimal("0.0040")
    assert not TrainingData.objects.exists()  # Duke's own answer is never a training label


def test_it_sends_a_task_below_the_threshold_to_the_llm(buyer, buyer_client):
    text = "the a of and today this striker"
    threshold = math.nextafter(_confidence(text), 1.0)
    install_production(thresholds={TASK_TYPE: {"threshold": threshold, "coverage": 0.5}})
    response = _post(buyer_client, text)
    assert response.status_code == 201
    assert response.json()["status"] == "pending" and response.json()["agent"] == "openai-gpt-4o-mini"
    assert response.json()["executed_by"] is None and response.json()["confidence"] is None


def test_it_serves_exactly_at_the_threshold_and_not_a_hair_below():
    model = trained_model()
    text = "the a of and today this striker"
    confidence = _confidence(text)
    served = decide(
        model, text=text, labels=LABELS, task_type=TASK_TYPE, embedding=None, threshold=confidence
    )
    assert served is not None and served.confidence == confidence
    above = math.nextafter(confidence, 1.0)
    assert (
        decide(model, text=text, labels=LABELS, task_type=TASK_TYPE, embedding=None, threshold=above) is None
    )


def test_it_does_not_route_a_task_type_without_a_threshold(buyer):
    install_production(thresholds={TASK_TYPE: {"threshold": 0.6}, "other-topic": {"threshold": None}})
    for task_type in ("other-topic", "never-seen"):
        task = submit(buyer, SPORTS, labels=LABELS, task_type=task_type)
        assert task.status == Task.Status.PENDING and task.agent.name == "openai-gpt-4o-mini"


def test_it_lets_an_explicit_agent_bypass_routing(buyer, buyer_client):
    install_production()
    response = _post(buyer_client, SPORTS, agent="openai-gpt-4o")
    assert response.status_code == 201
    assert response.json()["status"] == "pending" and response.json()["agent"] == "openai-gpt-4o"
    assert not ServedTask.objects.exists()


def test_it_never_routes_free_form_tasks(buyer):
    install_production(thresholds={"": {"threshold": 0.0}, TASK_TYPE: {"threshold": 0.0}})
    task = submit(buyer, SPORTS, task_type=TASK_TYPE)
    assert task.status == Task.Status.PENDING


def test_it_does_not_route_without_a_production_version(buyer):
    assert route(text=SPORTS, labels=LABELS, task_type=TASK_TYPE) is None
    assert submit(buyer, SPORTS, labels=LABELS, task_type=TASK_TYPE).status == Task.Status.PENDING


def test_it_does_not_route_when_a_label_is_unknown_to_duke(buyer):
    install_production()
    # Duke could never answer "travel", so its confidence among the others says nothing.
    assert route(text=SPORTS, labels=(*LABELS, "travel"), task_type=TASK_TYPE) is None
    # A subset of known labels is fine: the logits are masked to it.
    decision = route(text=SPORTS, labels=("sports", "finance"), task_type=TASK_TYPE)
    assert decision is not None and decision.label == "sports"


def test_it_does_not_route_a_suspended_type_until_a_new_version(buyer):
    first = install_production()
    RoutingState.objects.create(model_version=first.number, task_type=TASK_TYPE, suspended=True)
    assert route(text=SPORTS, labels=LABELS, task_type=TASK_TYPE) is None
    assert submit(buyer, SPORTS, labels=LABELS, task_type=TASK_TYPE).status == Task.Status.PENDING
    second = install_production()
    decision = route(text=SPORTS, labels=LABELS, task_type=TASK_TYPE)
    assert decision is not None and decision.model_version == second.number


def test_it_reloads_when_production_changes():
    first = install_production()
    assert route(text=SPORTS, labels=LABELS, task_type=TASK_TYPE).model_version == first.number
    ModelVersion.objects.filter(pk=first.pk).update(status=ModelVersion.Status.RETIRED)
    assert route(text=SPORTS, labels=LABELS, task_type=TASK_TYPE) is None
    second = install_production()
    assert route(text=SPORTS, labels=LABELS, task_type=TASK_TYPE).model_version == second.number


def test_it_falls_back_to_the_llm_when_the_artifact_is_broken(buyer, settings):
    version = install_production(number=41)
    (settings.DUKE_MODEL_DIR / version.artifact_path).write_bytes(b"not a model")
    from duke import registry

    registry.clear_cache()
    assert route(text=SPORTS, labels=LABELS, task_type=TASK_TYPE) is None
    assert submit(buyer, SPORTS, labels=LABELS, task_type=TASK_TYPE).status == Task.Status.PENDING


def test_it_routes_by_the_thresholds_calibration_computed():
    """Thresholds certified on a version's out-of-fold answers (the training path's `evaluate`) decide
    what Duke serves."""
    samples = synthetic_samples(per_label=60, seed=7)
    model = train(samples, seed=0, config=TrainConfig(n_buckets=1 << 14, max_epochs=20, min_steps=100))
    thresholds = evaluate(model, samples).thresholds
    assert TASK_TYPE in thresholds
    assert thresholds[TASK_TYPE]["certificate"]["lower_bound"] >= 0.95
    version = install_production(thresholds=thresholds, data=model.to_bytes())
    threshold = threshold_for(version, TASK_TYPE)
    rng = random.Random(11)
    texts = [(topic_text(label, rng, words=4), label) for _ in range(30) for label in LABELS]
    served = agreed = 0
    for text, truth in texts:
        decision = route(text=text, labels=LABELS, task_type=TASK_TYPE)
        confidence = model.predict([Input(text, LABELS, TASK_TYPE)])[0].confidence
        assert (decision is not None) == (confidence >= threshold)
        if decision is not None:
            served += 1
            agreed += decision.label == truth
    assert served > 0
    assert agreed / served >= 0.95


# --- savings --------------------------------------------------------------------------------------------


def test_it_records_what_the_llm_would_have_cost_in_decimal(buyer, buyer_client):
    from agents.llm import estimate_label_tokens
    from agents.pricing import token_cost

    install_production()
    llm = Agent.objects.get(name="openai-gpt-4o-mini")
    llm.success_count = 100  # a reputation multiplier of 1.1: the quote "at that moment" includes it
    llm.save(update_fields=["success_count"])
    texts = [f"{SPORTS} {i}" for i in range(3)]
    bodies = [_post(buyer_client, text, complexity=3).json() for text in texts]
    assert all(b["executed_by"] == "duke" for b in bodies)
    served = [ServedTask.objects.get(task_id=b["id"]) for b in bodies]
    first = served[0]
    assert first.llm_agent == "openai-gpt-4o-mini"
    assert first.llm_price == Decimal("0.0660")  # 0.0200 x 3 x 1.1
    assert first.price == Decimal("0.0060") == Decimal(bodies[0]["price"])  # 0.0020 x 3, a fresh Duke
    assert first.saved == Decimal("0.0600")
    prompt, completion = estimate_label_tokens(text=texts[0], labels=LABELS)
    assert first.llm_cost_estimate == token_cost(
        prompt_tokens=prompt,
        completion_tokens=completion,
        prompt_token_price=llm.prompt_token_price,
        completion_token_price=llm.completion_token_price,
    )
    # Duke's later quotes follow its own reputation; the sum is exact whatever they are.
    expected_saved = sum((s.llm_price - s.price for s in served), Decimal("0"))
    expected_avoided = sum((s.llm_cost_estimate for s in served), Decimal("0"))

    # One labeling task of the same type that the LLM did: the share is 3 of 4.
    other = submit(buyer, "a plain question", labels=LABELS, task_type=TASK_TYPE, agent="openai-gpt-4o-mini")
    task_claim(task_id=other.id)
    task_complete(task_id=other.id, outcome=Outcome(result="finance"))

    status = routing_status()
    row = status["task_types"][TASK_TYPE]
    assert row["served_by_duke"] == 3 and row["labeling_tasks"] == 4 and row["share"] == 0.75
    assert row["money_saved"] == str(expected_saved.quantize(Decimal("0.0001")))
    assert Decimal(row["money_saved"]) == expected_saved  # nothing lost to rounding: all 4-place values
    assert Decimal(row["llm_cost_avoided"]) == expected_avoided
    assert row["paid_to_duke"] == str(sum((s.price for s in served), Decimal("0")))
    assert status["totals"]["money_saved"] == row["money_saved"]
    assert row["threshold"] == 0.6 and row["expected_coverage"] == 0.9 and row["routing"] is True


def test_it_shows_routing_per_task_type_on_the_model_status(buyer_client):
    install_production()
    _post(buyer_client, SPORTS)
    response = buyer_client.get("/model/status")
    assert response.status_code == 200
    routing = response.json()["routing"]
    row = routing["task_types"][TASK_TYPE]
    assert routing["production_version"] == 1
    assert row["served_by_duke"] == 1 and row["threshold"] == 0.6
    assert isinstance(row["money_saved"], str) and Decimal(row["money_saved"]) == Decimal("0.0360")
