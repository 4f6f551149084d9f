"""The dashboard after a few hundred simulated tasks: every panel filled with real figures.

The state is built through the real path (services → sync queue → openai client → simulator → samples →
training jobs → promotion → routing), then the page is photographed as `test-artifacts/dashboard-full.png`.
"""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from agents.simulator import Fault
from aicp.dashboard import RECENT_TASKS
from duke import registry
from duke.models import ModelVersion, ServedTask
from tasks.models import Task
from tests.browser.conftest import OPERATOR_PASSWORD, log_in
from tests.duke.learning_helpers import LABELS, write_dataset
from tests.factories import make_buyer, submit

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

LLM_AGENT = "openai-gpt-4o-mini"
TRAIN_EVERY = 70
TRAINING_TASKS = 3 * TRAIN_EVERY  # three trainings
ROUTED_TASKS = 40


@pytest.fixture
def busy_system(settings, tmp_path, make_llm_simulator):
    """A few hundred tasks' worth of history: versions, a production model, routing, failures."""
    settings.DUKE_TRAIN_EVERY = TRAIN_EVERY
    settings.DUKE_MIN_VALIDATION = 15
    settings.DUKE_MAX_EPOCHS = 4
    # With ~40 validation samples a type, a 0.95 target is out of reach of the conservative bound.
    settings.DUKE_TARGET_AGREEMENT = 0.9
    settings.DUKE_AUDIT_RATE = 0.25
    rows = write_dataset(tmp_path / "topics.jsonl", TRAINING_TASKS + ROUTED_TASKS, seed=3)
    simulator = make_llm_simulator(dataset=tmp_path / "topics.jsonl", latency_ms=5)
    settings.OPENAI_BASE_URL = simulator.base_url
    settings.OPENAI_API_KEY = "test-key"
    registry.clear_cache()
    buyers = [make_buyer(f"buyer-{n}") for n in range(3)]

    started = time.perf_counter()
    for i, (text, _) in enumerate(rows[:TRAINING_TASKS]):
        submit(buyers[i % 3], text, labels=LABELS, task_type="topic", agent=LLM_AGENT)
    for i in range(12):
        submit(
            buyers[i % 3],
            f"Ticket {i}: my parcel never arrived",
            labels=["refund", "resend"],
            task_type="support",
        )
    for i in range(4):
        submit(buyers[i % 3], f"Write a one-line summary of report {i}.", complexity=3)
    simulator.script(*[Fault(401, code="invalid_api_key", message="Incorrect API key provided")] * 2)
    submit(buyers[0], "A task the provider refuses")
    submit(buyers[1], "Another refused task", labels=LABELS, task_type="topic", agent=LLM_AGENT)
    for i, (text, _) in enumerate(rows[TRAINING_TASKS:]):
        submit(buyers[i % 3], text, labels=LABELS, task_type="topic")  # `auto`: Duke when confident
    print(f"built the dashboard's history in {time.perf_counter() - started:.1f} s")
    yield
    registry.clear_cache()


def test_it_fills_every_panel_after_a_few_hundred_tasks(busy_system, page, live_server, operator, artifacts):
    versions = list(ModelVersion.objects.order_by("number"))
    assert len(versions) == 3 and any(v.status == "production" for v in versions)
    assert ServedTask.objects.exists(), "Duke served none of the routed tasks"
    assert Task.objects.filter(status="failed").count() == 2

    log_in(page, live_server.url, "operator", OPERATOR_PASSWORD)
    expect(page.locator("[data-live]")).to_have_class("live live-on", timeout=10_000)

    def figure(name: str) -> str:
        return page.locator(f"[data-figure={name}]").inner_text()

    assert int(figure("tasks_total").replace(",", "")) == Task.objects.count()
    assert figure("success_rate") not in ("—", "100.0%")  # failures count
    assert figure("production_version").startswith("v")
    assert figure("production_accuracy").endswith("%")
    assert figure("production_macro_f1").endswith("%")
    assert int(figure("samples_total").replace(",", "")) >= TRAINING_TASKS
    assert page.locator("[data-table=versions] tr").count() == 3
    assert page.locator("[data-chart] circle").count() == 6  # accuracy and macro-F1 per version
    assert int(figure("duke_served")) == ServedTask.objects.count() > 0
    assert float(figure("money_saved")) > 0
    routing = {
        row.locator("td").nth(0).inner_text(): row.locator("td").nth(1).inner_text()
        for row in page.locator("[data-table=routing] tr").all()
    }
    assert routing["topic"] == "routing" and routing["support"] == "LLM only"
    duke_row = page.locator("[data-table=agents] tr", has_text="duke").first
    assert duke_row.locator("td").nth(3).inner_text() != "0"
    assert page.locator("[data-table=recent_tasks] tr").count() == RECENT_TASKS
    assert page.locator("tr.empty").count() == 0  # no empty state anywhere
    page.screenshot(path=str(artifacts / "dashboard-full.png"), full_page=True)
    assert page.errors == []
