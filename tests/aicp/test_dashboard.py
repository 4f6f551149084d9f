"""The operator dashboard: who may see it, what it shows, and that untrusted text stays text."""

from __future__ import annotations

import re
import uuid
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from aicp.dashboard import accuracy_chart, dashboard_snapshot
from duke.models import ModelVersion, ServedTask
from duke.services import sample_record
from tasks.models import Task
from tasks.services.lifecycle import Outcome, task_complete, task_fail
from tests.factories import make_buyer, submit

pytestmark = pytest.mark.django_db

XSS = "<script>alert(1)</script>"


@pytest.fixture
def operator_session(operator) -> Client:
    client = Client()
    client.force_login(operator)
    return client


@pytest.fixture
def buyer_session(buyer) -> Client:
    client = Client()
    client.force_login(buyer)
    return client


def complete(task: Task, result: str, *, latency_ms: int = 120) -> None:
    task_complete(task_id=task.id, outcome=Outcome(result=result, latency_ms=latency_ms))


def make_version(number: int, status: str, accuracy: float | None, macro_f1: float | None, **extra):
    return ModelVersion.objects.create(
        number=number,
        status=status,
        accuracy=accuracy,
        macro_f1=macro_f1,
        train_samples=80 * number,
        validation_samples=20 * number,
        training_seconds=1.5,
        **extra,
    )


# --- access ---------------------------------------------------------------------------------------------


def test_it_redirects_an_anonymous_visitor_to_the_admin_login(client):
    response = client.get("/dashboard")

    assert response.status_code == 302
    assert response["Location"] == "/admin/login/?next=/dashboard"


def test_it_redirects_a_buyer_to_the_admin_login(buyer_session):
    response = buyer_session.get("/dashboard")

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/?next=")


def test_it_refuses_the_data_to_anyone_but_an_operator(client, buyer_session):
    anonymous = client.get("/dashboard/data.json")
    as_buyer = buyer_session.get("/dashboard/data.json")

    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "not_authenticated"
    assert as_buyer.status_code == 403
    assert as_buyer.json()["error"]["code"] == "permission_denied"


def test_it_does_not_let_a_bearer_token_stand_in_for_a_session(buyer_client, operator_client):
    # The dashboard is a browser page: a JWT (even an operator's) is not a session login.
    assert operator_client.get("/dashboard").status_code == 302
    assert buyer_client.get("/dashboard/data.json").status_code == 401


def test_it_refuses_a_deactivated_operator(operator, client):
    client.force_login(operator)
    operator.is_active = False
    operator.save()

    assert client.get("/dashboard").status_code == 302


def test_it_shows_the_dashboard_to_an_operator_and_is_never_cached(operator_session):
    response = operator_session.get("/dashboard")

    assert response.status_code == 200
    assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]
    body = response.content.decode()
    for heading in ("System", "Tasks", "Duke", "Accuracy by version", "Routing", "Agents", "Recent tasks"):
        assert f">{heading}" in body


# --- security headers and markup ------------------------------------------------------------------------


def test_it_sends_a_content_security_policy_that_forbids_inline_script(operator_session):
    response = operator_session.get("/dashboard")

    policy = response["Content-Security-Policy"]
    assert "default-src 'self'" in policy
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert response["X-Frame-Options"] == "DENY"


def test_it_uses_no_inline_script_style_or_event_handler(operator_session):
    body = operator_session.get("/dashboard").content.decode()

    scripts = re.findall(r"<script\b[^>]*>", body)
    assert scripts, "the page loads its poller"
    assert all('src="/static/' in tag for tag in scripts)
    assert not re.search(r"<script\b[^>]*>\s*[^<\s]", body)
    assert " style=" not in body and "<style" not in body
    assert not re.search(r"\son[a-z]+=", body)
    assert not re.search(r'(src|href)="(https?:)?//', body), "everything is served by this site"


def test_it_serves_its_script_stylesheet_and_icon_itself(settings):
    # Through whitenoise, as `make run` does: a fresh client builds the middleware with these settings.
    settings.WHITENOISE_USE_FINDERS = True
    client = Client()
    for path, kind in (
        ("/static/aicp/dashboard.js", "javascript"),
        ("/static/aicp/dashboard.css", "css"),
        ("/static/aicp/favicon.svg", "svg"),
    ):
        response = client.get(path)
        assert response.status_code == 200, path
        assert kind in response["Content-Type"]


# --- figures --------------------------------------------------------------------------------------------


def test_it_counts_tasks_success_rate_and_the_last_hour(operator_session, buyer, llm_settings):
    done = [submit(buyer, f"text {i}", labels=["a", "b"]) for i in range(3)]
    for task in done:
        complete(task, "a")
    task_fail(task_id=submit(buyer, "will fail").id, error="boom", error_code="server_error")
    old = submit(buyer, "an old one")
    Task.objects.filter(pk=old.pk).update(created_at=timezone.now() - timezone.timedelta(hours=2))

    data = operator_session.get("/dashboard/data.json").json()

    assert data["tasks"] == {
        "total": 5,
        "completed": 3,
        "failed": 1,
        "pending": 1,
        "running": 0,
        "last_hour": 4,
        "success_rate": 0.75,
    }
    assert data["figures"]["success_rate"] == "75.0%"
    assert data["figures"]["tasks_in_flight"] == "1"


def test_it_reports_the_system_and_the_llm_backend(operator_session, settings):
    settings.AICP_LLM_SIMULATED = True
    data = operator_session.get("/dashboard/data.json").json()

    assert data["system"]["database"]["ok"] is True
    assert data["system"]["queue"]["ok"] is True
    assert data["system"]["queue"]["backlog"] == 0
    assert data["system"]["queue"]["scheduled_jobs"] >= 1  # the lease reaper
    assert data["system"]["llm"]["simulated"] is True
    assert data["figures"]["llm"] == "simulator"


def test_it_shows_the_simulator_banner_only_when_simulated(operator_session, settings):
    settings.AICP_LLM_SIMULATED = True
    assert "sim-banner" in operator_session.get("/dashboard").content.decode()

    settings.AICP_LLM_SIMULATED = False
    body = operator_session.get("/dashboard").content.decode()
    assert "sim-banner" not in body
    assert "real API" in body


def test_it_lists_agents_with_their_track_record(operator_session, buyer, llm_settings):
    complete(submit(buyer, "one", labels=["a", "b"]), "a")

    data = operator_session.get("/dashboard/data.json").json()

    agents = {agent["name"]: agent for agent in data["agents"]}
    default = agents["openai-gpt-4o-mini"]
    assert default["tasks_done"] == 1
    assert default["success_rate"] == 1.0
    assert Decimal(default["earnings"]) > 0
    assert Decimal(default["reputation"]) >= 1
    assert "duke" in agents
    row = next(r for r in data["tables"]["agents"] if r["cells"][0]["text"] == "openai-gpt-4o-mini")
    assert [cell["text"] for cell in row["cells"]][3:5] == ["1", "100.0%"]


def test_it_shows_recent_tasks_with_executor_price_latency_and_result(operator_session, buyer, llm_settings):
    task = submit(buyer, "classify me", labels=["spam", "ham"], task_type="mail")
    complete(task, "ham", latency_ms=812)

    data = operator_session.get("/dashboard/data.json").json()

    row = data["tables"]["recent_tasks"][0]
    texts = [cell["text"] for cell in row["cells"]]
    assert texts[1:] == ["mail", "completed", "openai-gpt-4o-mini", f"{task.price:,.4f}", "812 ms", "ham"]
    assert row["cells"][0]["title"] == str(task.id)
    assert data["recent_tasks"][0]["id"] == str(task.id)


def test_it_shows_a_failed_task_with_its_error(operator_session, buyer, llm_settings):
    task = submit(buyer, "doomed")
    task_fail(task_id=task.id, error="invalid API key", error_code="auth")

    row = operator_session.get("/dashboard/data.json").json()["tables"]["recent_tasks"][0]

    assert row["cls"] == "status-failed"
    assert row["cells"][-1]["text"] == "auth: invalid API key"
    assert "error" in row["cells"][-1]["cls"]


def test_it_truncates_long_results_but_keeps_them_in_the_tooltip(operator_session, buyer, llm_settings):
    complete(submit(buyer, "write a lot"), "word " * 400)

    cell = operator_session.get("/dashboard/data.json").json()["tables"]["recent_tasks"][0]["cells"][-1]

    assert len(cell["text"]) == 160 and cell["text"].endswith("…")
    assert len(cell["title"]) == 1000


# --- escaping -------------------------------------------------------------------------------------------


def test_it_escapes_a_hostile_result_error_and_task_type(operator_session, buyer, llm_settings):
    complete(submit(buyer, "free text"), XSS)
    task_fail(task_id=submit(buyer, "fails").id, error='<img src=x onerror="alert(2)">', error_code="x")
    hostile_label = '"><svg onload=alert(3)>'
    complete(submit(buyer, "label me", labels=[hostile_label, "b"]), hostile_label)

    body = operator_session.get("/dashboard").content.decode()

    assert XSS not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "<img src=x" not in body and "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in body
    assert "<svg onload" not in body and "&quot;&gt;&lt;svg onload=alert(3)&gt;" in body


def test_it_returns_hostile_text_as_plain_json_strings(operator_session, buyer, llm_settings):
    complete(submit(buyer, "free text"), XSS)

    response = operator_session.get("/dashboard/data.json")

    assert response["Content-Type"] == "application/json"
    assert response.json()["tables"]["recent_tasks"][0]["cells"][-1]["text"] == XSS


# --- Duke -----------------------------------------------------------------------------------------------


def test_it_shows_empty_states_before_any_task_or_version(operator_session):
    body = operator_session.get("/dashboard").content.decode()
    data = operator_session.get("/dashboard/data.json").json()

    assert "No tasks yet." in body
    assert "No version yet: Duke trains after every 100 labeling samples." in body
    assert "No trained version yet." in body
    assert data["figures"]["production_version"] == "none yet"
    assert data["duke"]["production"] is None
    assert data["chart"]["empty"] is True
    assert data["tables"]["routing"] == []


def test_it_shows_progress_towards_the_next_training(operator_session, settings):
    settings.DUKE_TRAIN_EVERY = 10
    settings.DUKE_ENCODE_ON_RECORD = False
    for _ in range(3):
        sample_record(
            task_id=uuid.uuid4(), text="t", task_type="news", complexity=1, labels=["a", "b"], output="a"
        )
    sample_record(task_id=uuid.uuid4(), text="free", task_type="", complexity=1, labels=None, output="x")

    data = operator_session.get("/dashboard/data.json").json()

    samples = data["duke"]["samples"]
    assert samples["total"] == 3  # free-form samples do not count towards labeling
    assert samples["train"] + samples["validation"] == 3
    assert samples["until_next_training"] == 7
    assert data["bars"]["samples"] == {"value": 3, "max": 10}
    assert data["figures"]["samples_progress"] == "3 / 10"
    body = operator_session.get("/dashboard").content.decode()
    assert '<progress class="bar" data-bar="samples" value="3" max="10">' in body


def test_it_shows_the_production_version_every_version_and_a_chart(operator_session):
    make_version(1, "retired", 0.81, 0.7)
    make_version(2, "production", 0.9, 0.85, promoted_at=timezone.now())
    make_version(3, "candidate", 0.89, 0.86)
    make_version(4, "failed", None, None, error="out of memory")

    data = operator_session.get("/dashboard/data.json").json()
    body = operator_session.get("/dashboard").content.decode()

    assert data["figures"]["production_version"] == "v2"
    assert data["figures"]["production_accuracy"] == "90.0%"
    assert data["figures"]["production_macro_f1"] == "85.0%"
    assert [row["cells"][0]["text"] for row in data["tables"]["versions"]] == ["v4", "v3", "v2", "v1"]
    assert data["tables"]["versions"][0]["cells"][1]["title"] == "out of memory"
    accuracy = data["chart"]["series"][0]
    assert [dot["title"] for dot in accuracy["dots"]] == [
        "v1 (retired): accuracy 81.0%",
        "v2 (production): accuracy 90.0%",
        "v3 (candidate): accuracy 89.0%",
    ]
    assert body.count('<circle class="dot series-accuracy') == 3
    assert "dot-production" in body
    assert f'points="{accuracy["points"]}"' in body


def test_it_shows_a_training_in_progress_with_its_epoch(operator_session):
    body = operator_session.get("/dashboard").content.decode()
    assert re.search(r'class="training" data-show="training"\s+hidden', body)

    make_version(1, "training", None, None, epoch=7, epochs=30)
    data = operator_session.get("/dashboard/data.json").json()
    body = operator_session.get("/dashboard").content.decode()

    assert data["flags"]["training"] is True
    assert data["figures"]["training_epoch"] == "7 / 30"
    assert data["bars"]["training"] == {"value": 7, "max": 30}
    assert not re.search(r'class="training" data-show="training"\s+hidden', body)


def test_it_shows_routing_coverage_and_money_saved_per_task_type(operator_session, buyer, llm_settings):
    make_version(
        1,
        "production",
        0.95,
        0.9,
        thresholds={"news": {"threshold": 0.82, "coverage": 0.7, "validation_samples": 60}},
    )
    duke_task = submit(buyer, "served", labels=["a", "b"], task_type="news")
    ServedTask.objects.create(
        task_id=duke_task.id,
        task_type="news",
        model_version=1,
        label="a",
        confidence=0.97,
        price=Decimal("0.0020"),
        llm_agent="openai-gpt-4o-mini",
        llm_price=Decimal("0.0200"),
        llm_cost_estimate=Decimal("0.00001"),
    )
    complete(submit(buyer, "by the LLM", labels=["a", "b"], task_type="news"), "b")
    complete(submit(buyer, "other type", labels=["x", "y"], task_type="reviews"), "x")

    data = operator_session.get("/dashboard/data.json").json()

    rows = {row["task_type"]: row for row in data["routing"]["task_types"]}
    assert rows["news"]["threshold"] == 0.82
    assert rows["news"]["served_by_duke"] == 1
    assert rows["news"]["money_saved"] == "0.0180"
    assert rows["reviews"]["threshold"] is None  # listed although the router has nothing for it yet
    table = {row["cells"][0]["text"]: [c["text"] for c in row["cells"]] for row in data["tables"]["routing"]}
    assert table["news"][1:7] == ["routing", "2", "1", "50.0%", "0.820", "70.0%"]
    assert table["news"][8] == "0.0180"
    assert table["reviews"][1] == "LLM only"
    assert data["figures"]["duke_served"] == "1"
    assert data["figures"]["money_saved"] == "0.0180"


# --- the chart ------------------------------------------------------------------------------------------


def _versions(accuracies):
    return [
        {"number": i + 1, "status": "candidate", "accuracy": acc, "macro_f1": acc - 0.05}
        for i, acc in enumerate(accuracies)
    ]


def test_it_draws_every_point_inside_the_plot_and_higher_accuracy_higher():
    chart = accuracy_chart(_versions([0.7, 0.85, 0.93]))

    plot = chart["plot"]
    dots = chart["series"][0]["dots"]
    for dot in dots + chart["series"][1]["dots"]:
        assert plot["left"] <= dot["x"] <= plot["right"]
        assert plot["top"] <= dot["y"] <= plot["bottom"]
    assert dots[0]["y"] > dots[1]["y"] > dots[2]["y"]  # SVG y grows downwards
    assert [line["label"] for line in chart["grid"]][-1] == "100%"


def test_it_thins_version_labels_when_there_are_many():
    chart = accuracy_chart(_versions([0.8 + i * 0.003 for i in range(40)]))

    labels = [label["text"] for label in chart["x_labels"]]
    assert len(labels) <= 13
    assert labels[0] == "v1" and labels[-1] == "v40"


def test_it_centres_a_single_version():
    chart = accuracy_chart(_versions([0.9]))

    (dot,) = chart["series"][0]["dots"]
    assert dot["x"] == (chart["plot"]["left"] + chart["plot"]["right"]) / 2


def test_it_builds_the_same_snapshot_for_the_page_and_the_poll(operator_session, buyer, llm_settings):
    make_buyer("someone-else")
    complete(submit(buyer, "x", labels=["a", "b"]), "a")

    snapshot = dashboard_snapshot()
    polled = operator_session.get("/dashboard/data.json").json()

    assert polled["figures"] | {"generated_at": ""} == snapshot["figures"] | {"generated_at": ""}
    assert polled["tables"] == snapshot["tables"]


def test_it_keeps_at_least_four_grid_steps_when_every_version_is_perfect():
    chart = accuracy_chart(_versions([1.0, 1.0]))

    assert [line["label"] for line in chart["grid"]] == ["80%", "85%", "90%", "95%", "100%"]
    assert {dot["y"] for dot in chart["series"][0]["dots"]} == {chart["plot"]["top"]}
