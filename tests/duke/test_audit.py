"""Live audit: a sampled share of Duke's answers goes to the LLM, unbilled; disagreement suspends routing."""

import logging
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from agents.simulator import Fault
from duke.calibration import wilson_lower_bound
from duke.certification import LTT_PROCEDURE
from duke.models import ModelVersion, RoutingState, ServedTask, TrainingData
from duke.router import route, seed_audit_sampling
from duke.selectors import live_agreement, routing_status, wilson_upper_bound
from duke.services.audit import routing_evaluate, routing_recertify
from ledger.models import Account, LedgerEntry
from tasks.models import Task
from tests.duke.routing_helpers import LABELS, TASK_TYPE, install_production

pytestmark = pytest.mark.django_db

SPORTS = [f"striker goal match league coach stadium referee season number {i}" for i in range(30)]


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _post(client, text):
    body = {"description": text, "complexity": 1, "labels": list(LABELS), "task_type": TASK_TYPE}
    response = client.post("/tasks", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def _submit_all(client, texts, capture):
    results = []
    for text in texts:
        with capture(execute=True):
            results.append(_post(client, text))
    return results


# --- sampling -------------------------------------------------------------------------------------------


def test_it_samples_audits_at_the_configured_rate(settings):
    install_production()
    settings.DUKE_AUDIT_RATE = 0.25
    seed_audit_sampling(123)
    first = [route(text=SPORTS[0], labels=LABELS, task_type=TASK_TYPE).audit for _ in range(400)]
    # Binomial(400, 0.25): mean 100, sd 8.7; this band holds with probability > 0.999.
    assert 70 <= sum(first) <= 130
    seed_audit_sampling(123)
    again = [route(text=SPORTS[0], labels=LABELS, task_type=TASK_TYPE).audit for _ in range(400)]
    assert again == first  # seeded: reproducible


@pytest.mark.parametrize(("rate", "expected"), [(0.0, 0), (1.0, 50)])
def test_it_audits_none_or_all_at_the_extreme_rates(settings, rate, expected):
    install_production()
    settings.DUKE_AUDIT_RATE = rate
    decisions = [route(text=SPORTS[1], labels=LABELS, task_type=TASK_TYPE) for _ in range(50)]
    assert sum(d.audit for d in decisions) == expected


# --- the audit itself -----------------------------------------------------------------------------------


def test_it_audits_in_the_background_unbilled_and_keeps_the_llm_label(
    settings, buyer, buyer_client, llm_settings, django_capture_on_commit_callbacks
):
    install_production()
    settings.DUKE_AUDIT_RATE = 1.0
    llm_settings.set_answer(SPORTS[0], "sports")
    body = _submit_all(buyer_client, SPORTS[:1], django_capture_on_commit_callbacks)[0]
    assert body["executed_by"] == "duke" and body["status"] == "completed"
    assert llm_settings.request_count == 1  # the audit call
    served = ServedTask.objects.get(task_id=body["id"])
    assert served.audit == ServedTask.Audit.AGREED and served.audit_label == "sports"
    assert served.audit_cost > 0  # ours: provider tokens of the audit
    sample = TrainingData.objects.get(task_id=body["id"])
    assert sample.output == "sports" and sample.source == TrainingData.Source.LLM
    # The buyer paid Duke's price and nothing else; the task's own cost stays zero.
    task = Task.objects.get(pk=body["id"])
    assert task.cost == 0 and task.price == Decimal("0.0020")
    assert Account.objects.get(user=buyer, kind=Account.Kind.BUYER).balance == Decimal("99.9980")
    assert set(LedgerEntry.objects.filter(task=task).values_list("kind", flat=True)) == {"hold", "payout"}


def test_it_suspends_routing_when_the_llm_keeps_disagreeing(
    settings, buyer_client, llm_settings, django_capture_on_commit_callbacks
):
    version = install_production()
    settings.DUKE_AUDIT_RATE = 1.0
    for text in SPORTS:
        llm_settings.set_answer(text, "finance")  # a teacher that now says otherwise
    logged = _Collect()
    logging.getLogger("duke").addHandler(logged)
    try:
        bodies = _submit_all(buyer_client, SPORTS[:25], django_capture_on_commit_callbacks)
    finally:
        logging.getLogger("duke").removeHandler(logged)
    served = [b for b in bodies if b["executed_by"] == "duke"]
    # 20 observations at 0/20: the Wilson upper bound (0.16) is far below 0.95, so the 21st goes to the LLM.
    assert len(served) == 20
    for body in bodies[20:]:
        task = Task.objects.select_related("executed_by").get(pk=body["id"])
        assert task.executed_by.name == "openai-gpt-4o-mini" and task.result == "finance"
    state = RoutingState.objects.get(model_version=version.number, task_type=TASK_TYPE)
    assert state.suspended and state.suspended_at is not None and "0/20" in state.reason
    assert any("SUSPENDED" in message for message in logged.messages)
    status = routing_status()["task_types"][TASK_TYPE]
    assert status["suspended"] is True and status["routing"] is False
    assert status["live"]["audits"] == 20 and status["live"]["agreed"] == 0
    # The audits taught Duke the LLM's labels.
    assert TrainingData.objects.filter(output="finance").count() == 25


def test_it_keeps_routing_while_the_llm_agrees(
    settings, buyer_client, llm_settings, django_capture_on_commit_callbacks
):
    version = install_production()
    settings.DUKE_AUDIT_RATE = 1.0
    for text in SPORTS:
        llm_settings.set_answer(text, "sports")
    bodies = _submit_all(buyer_client, SPORTS[:22], django_capture_on_commit_callbacks)
    assert all(b["executed_by"] == "duke" for b in bodies)
    live = live_agreement(task_type=TASK_TYPE, model_version=version.number)
    assert live.observations == live.agreed == 22
    assert not RoutingState.objects.filter(suspended=True).exists()


def test_it_suspends_on_a_noisy_teacher_only_once_the_evidence_is_clear(
    settings, buyer_client, make_llm_simulator, django_capture_on_commit_callbacks, tmp_path
):
    """A simulator that flips every label (noise=1) replaces the LLM: disagreement from the first audit."""
    dataset = tmp_path / "gold.jsonl"
    dataset.write_text("".join(f'{{"text": "{t}", "label": "sports"}}\n' for t in SPORTS))
    simulator = make_llm_simulator(dataset=dataset, noise=1.0)
    settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = simulator.base_url, "test-key"
    settings.DUKE_AUDIT_RATE = 1.0
    version = install_production()
    _submit_all(buyer_client, SPORTS[:19], django_capture_on_commit_callbacks)
    live = live_agreement(task_type=TASK_TYPE, model_version=version.number)
    assert live.observations == 19 and live.agreed == 0
    assert not RoutingState.objects.filter(suspended=True).exists()  # 19 < 20 observations: not yet
    _submit_all(buyer_client, SPORTS[19:20], django_capture_on_commit_callbacks)
    assert RoutingState.objects.get(model_version=version.number, task_type=TASK_TYPE).suspended


def test_it_lets_a_new_version_re_earn_routing(
    settings, buyer_client, llm_settings, django_capture_on_commit_callbacks
):
    first = install_production()
    RoutingState.objects.create(model_version=first.number, task_type=TASK_TYPE, suspended=True)
    assert _post(buyer_client, SPORTS[0])["agent"] == "openai-gpt-4o-mini"
    second = install_production()
    body = _post(buyer_client, SPORTS[1])
    assert body["executed_by"] == "duke"
    assert ServedTask.objects.get(task_id=body["id"]).model_version == second.number
    assert routing_status()["task_types"][TASK_TYPE]["suspended"] is False


def test_it_leaves_a_failed_audit_unchecked_and_unbilled(
    settings, buyer, buyer_client, llm_settings, django_capture_on_commit_callbacks
):
    install_production()
    settings.DUKE_AUDIT_RATE = 1.0
    llm_settings.script(Fault(401, code="invalid_api_key", message="bad key"))
    body = _submit_all(buyer_client, SPORTS[:1], django_capture_on_commit_callbacks)[0]
    served = ServedTask.objects.get(task_id=body["id"])
    assert served.audit == ServedTask.Audit.FAILED and served.audit_label == ""
    assert not TrainingData.objects.filter(task_id=body["id"]).exists()
    assert Task.objects.get(pk=body["id"]).status == Task.Status.COMPLETED
    assert Account.objects.get(user=buyer, kind=Account.Kind.BUYER).balance == Decimal("99.9980")


def test_it_counts_buyer_rejections_of_duke_against_live_agreement(settings, buyer_client):
    version = install_production()
    bodies = [_post(buyer_client, text) for text in SPORTS[:20]]
    assert all(b["executed_by"] == "duke" for b in bodies)
    for body in bodies:
        response = buyer_client.post(
            f"/tasks/{body['id']}/feedback", {"accepted": False, "correct_label": "cooking"}, format="json"
        )
        assert response.status_code == 200
    assert RoutingState.objects.get(model_version=version.number, task_type=TASK_TYPE).suspended
    assert _post(buyer_client, SPORTS[25])["agent"] == "openai-gpt-4o-mini"


# --- the suspension rule on known counts ----------------------------------------------------------------


def _observed(version_number, *, agreed, disagreed, task_type=TASK_TYPE):
    rows = [ServedTask.Audit.AGREED] * agreed + [ServedTask.Audit.DISAGREED] * disagreed
    for i, audit in enumerate(rows):
        ServedTask.objects.create(
            task_id=f"00000000-0000-4000-8000-{version_number:04d}{i:08d}",
            task_type=task_type,
            model_version=version_number,
            label="sports",
            confidence=0.9,
            price=Decimal("0.0020"),
            llm_agent="openai-gpt-4o-mini",
            llm_price=Decimal("0.0200"),
            llm_cost_estimate=Decimal("0.00001"),
            audit=audit,
        )


@pytest.mark.parametrize(
    ("agreed", "disagreed", "suspended"),
    [
        (17, 3, True),  # 85%: upper bound 0.948 < 0.95
        (18, 2, False),  # 90%: upper bound 0.972, not enough evidence yet
        (90, 10, True),  # 90% over 100: upper bound 0.945
        (19, 0, False),  # under 20 observations nothing is decided
        (0, 19, False),
        (20, 0, False),
    ],
)
def test_it_suspends_exactly_when_the_wilson_upper_bound_is_below_target(agreed, disagreed, suspended):
    _observed(7, agreed=agreed, disagreed=disagreed)
    assert routing_evaluate(task_type=TASK_TYPE, model_version=7) is suspended
    assert RoutingState.objects.filter(model_version=7, suspended=True).exists() is suspended


def test_it_mirrors_the_wilson_lower_bound_for_the_upper_one():
    assert wilson_upper_bound(20, 20) == pytest.approx(1.0)
    assert wilson_upper_bound(0, 20) == pytest.approx(0.1611, abs=1e-4)
    assert wilson_upper_bound(17, 20) == pytest.approx(0.9476, abs=1e-4)
    for k, n in [(3, 10), (50, 100), (99, 100)]:
        assert wilson_lower_bound(k, n) < k / n < wilson_upper_bound(k, n)
        assert wilson_upper_bound(k, n) == pytest.approx(1 - wilson_lower_bound(n - k, n))


def test_it_runs_an_audit_once_even_if_the_job_repeats(
    settings, buyer_client, llm_settings, django_capture_on_commit_callbacks
):
    from tasks.execution.single import run_duke_audit

    install_production()
    settings.DUKE_AUDIT_RATE = 1.0
    llm_settings.set_answer(SPORTS[0], "sports")
    body = _submit_all(buyer_client, SPORTS[:1], django_capture_on_commit_callbacks)[0]
    assert llm_settings.request_count == 1
    run_duke_audit(Task.objects.get(pk=body["id"]).id)
    assert llm_settings.request_count == 1  # nothing pending: no second (paid) LLM call
    assert TrainingData.objects.filter(task_id=body["id"]).count() == 1


# --- live re-certification of the threshold -------------------------------------------------------------


def _audited(version_number, confidence, *, agreed, disagreed, start=0):
    rows = [ServedTask.Audit.AGREED] * agreed + [ServedTask.Audit.DISAGREED] * disagreed
    for i, audit in enumerate(rows, start=start):
        ServedTask.objects.create(
            task_id=uuid.UUID(int=version_number << 64 | i),
            task_type=TASK_TYPE,
            model_version=version_number,
            label="sports",
            confidence=confidence,
            price=Decimal("0.0020"),
            llm_agent="openai-gpt-4o-mini",
            llm_price=Decimal("0.0200"),
            llm_cost_estimate=Decimal("0.00001"),
            audit=audit,
        )


def test_it_raises_the_threshold_at_once_when_live_audits_reject_it():
    version = install_production(thresholds={TASK_TYPE: {"threshold": 0.6, "coverage": 0.9}})
    # 278 of 300 (92.7%): the exact binomial test rejects ">= 95%" at 5%, while the Wilson rule on all
    # observations (upper bound 0.951) would not suspend yet. The confident part alone holds.
    _audited(version.number, 0.70, agreed=78, disagreed=22)
    _audited(version.number, 0.99, agreed=200, disagreed=0, start=100)
    assert routing_evaluate(task_type=TASK_TYPE, model_version=version.number) is False
    version.refresh_from_db()
    entry = version.thresholds[TASK_TYPE]
    assert 0.7 < entry["threshold"] <= 0.99 and entry["previous_threshold"] == 0.6
    assert entry["source"] == "live" and entry["certificate"]["procedure"] == LTT_PROCEDURE
    assert entry["certificate"]["served"] == 200 and entry["certificate"]["lower_bound"] >= 0.95
    shown = routing_status()["task_types"][TASK_TYPE]
    assert shown["threshold"] == entry["threshold"] and shown["threshold_source"] == "live"
    assert shown["certificate"] == entry["certificate"]
    assert not RoutingState.objects.filter(suspended=True).exists()
    assert route(text=SPORTS[0], labels=LABELS, task_type=TASK_TYPE) is None or (
        route(text=SPORTS[0], labels=LABELS, task_type=TASK_TYPE).threshold == entry["threshold"]
    )


def test_it_suspends_when_live_audits_reject_the_threshold_and_certify_no_higher_one():
    version = install_production(thresholds={TASK_TYPE: {"threshold": 0.6, "coverage": 0.9}})
    _audited(version.number, 0.99, agreed=278, disagreed=22)
    assert routing_evaluate(task_type=TASK_TYPE, model_version=version.number) is True
    state = RoutingState.objects.get(model_version=version.number, task_type=TASK_TYPE)
    assert state.suspended and "278/300" in state.reason


def test_it_lowers_the_threshold_when_unserved_live_tasks_certify_a_lower_one():
    version = install_production(thresholds={TASK_TYPE: {"threshold": 0.9, "coverage": 0.5}})
    now = timezone.now()
    ModelVersion.objects.filter(pk=version.pk).update(promoted_at=now - timedelta(hours=1))
    _audited(version.number, 0.95, agreed=150, disagreed=0)
    below = [(0.8, True, uuid.uuid4(), now) for _ in range(300)]
    stale = [(0.8, False, uuid.uuid4(), now - timedelta(days=1)) for _ in range(300)]  # before promotion
    decision = routing_recertify(model_version=version.number, task_type=TASK_TYPE, below=below + stale)
    assert decision is not None and decision.action == "lower"
    version.refresh_from_db()
    entry = version.thresholds[TASK_TYPE]
    assert entry["threshold"] <= 0.8 and entry["previous_threshold"] == 0.9 and entry["source"] == "live"
    # The same evidence with the unserved tasks disagreeing keeps the threshold where it is.
    other = install_production(thresholds={TASK_TYPE: {"threshold": 0.9, "coverage": 0.5}})
    _audited(other.number, 0.95, agreed=150, disagreed=0)
    wrong = [(0.8, False, uuid.uuid4(), timezone.now()) for _ in range(300)]
    assert routing_recertify(model_version=other.number, task_type=TASK_TYPE, below=wrong).action == "keep"
