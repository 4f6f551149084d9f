"""The dashboard over time, in headless Chromium, after a real (shortened) run of `manage.py demo`.

The demo acts as a buyer through the HTTP API of a live server whose LLM agents ask the simulator; the
sync queue runs the tasks, Duke trains on their samples, promotes a version and starts serving. The
page is then photographed: test-artifacts/dashboard-timeline-hour.png (and -day.png after the window
switch, -readiness.png for the panel). Settings are sized for a short run, as in test_dashboard_full:
Duke trains on n-grams alone (no sentence encoder: a minute of CPU the dashboard does not need).
"""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core.management import call_command
from playwright.sync_api import expect

from duke import registry
from duke.models import ModelVersion, SampleCounter, ServedTask
from ledger.selectors_totals import money_totals
from tasks.models import Task
from tests.browser.conftest import OPERATOR_PASSWORD, log_in
from tests.duke.learning_helpers import use_fast_training, write_dataset

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

TRAIN_EVERY = 80
DEMO_TASKS = 240


@pytest.fixture
def demo_run(settings, tmp_path, make_llm_simulator, live_server, monkeypatch) -> str:
    settings.DUKE_TRAIN_EVERY = TRAIN_EVERY
    settings.DUKE_VALIDATION_FRACTION = 0.35
    settings.DUKE_MIN_VALIDATION = 15
    settings.DUKE_TARGET_AGREEMENT = 0.85
    settings.DUKE_AUDIT_RATE = 0.25
    settings.DUKE_ENCODE_ON_RECORD = False
    settings.DATA_DIR = tmp_path / "data"
    use_fast_training(settings)
    monkeypatch.setattr("duke.services.samples.encoder_available", lambda: False)
    dataset = tmp_path / "topics.train.jsonl"
    write_dataset(dataset, DEMO_TASKS, seed=3)
    simulator = make_llm_simulator(dataset=dataset)
    settings.OPENAI_BASE_URL = simulator.base_url
    settings.OPENAI_API_KEY = "test-key"
    registry.clear_cache()
    out = StringIO()
    call_command(
        "demo",
        "--dataset",
        str(dataset),
        "--base-url",
        live_server.url,
        "--rate",
        "0",
        "--tasks",
        str(DEMO_TASKS),
        "--wait",
        "300",
        stdout=out,
    )
    yield out.getvalue()
    registry.clear_cache()


def _number(text: str) -> float:
    return float(text.replace(",", "").rstrip("%"))


def test_it_charts_a_demo_run_over_time(demo_run, page, live_server, operator, artifacts):
    print(demo_run)
    versions = list(ModelVersion.objects.order_by("number"))
    assert versions and ServedTask.objects.exists(), demo_run  # Duke trained, was promoted, served
    assert "demo finished" in demo_run.lower()
    assert re.search(r"\d+\.\d tasks/s · \d+ (s|min \d\d s) elapsed", demo_run)  # rate and time

    log_in(page, live_server.url, "operator", OPERATOR_PASSWORD)
    expect(page.locator("[data-live-text]")).to_contain_text("updated", timeout=15_000)

    def figure(name: str) -> str:
        return page.locator(f"[data-figure={name}]").first.inner_text()

    # The hour window (the default) holds the whole run: every chart has points.
    expect(page.locator(".window-link.active")).to_have_text("hour")
    total = Task.objects.count()
    assert _number(figure("window_tasks")) == total
    for name in ("share", "cost", "savings", "throughput"):
        chart = page.locator(f"[data-timechart={name}]")
        assert chart.locator("circle.dot").count() > 0, name
        assert int(chart.get_attribute("data-points")) > 0
    assert page.locator("[data-timechart=throughput] .series-tasks circle").count() == 60
    # Training events on the same axis: one marker per version trained, one per promotion, on each chart.
    trained = page.locator("[data-timechart=share] .event-trained")
    assert trained.count() == sum(1 for v in versions if v.status not in ("training", "failed"))
    promoted = sum(1 for v in versions if v.promoted_at)
    assert page.locator("[data-timechart=share] .event-promoted").count() == promoted >= 1
    served = ServedTask.objects.count()
    if served:
        assert figure("window_share") != "0.0%"
        assert _number(figure("saved_to_date")) > 0

    # Money totals equal the ledger's, as plain decimal strings.
    totals = money_totals()
    assert figure("revenue") == f"{totals['revenue']:,.4f}"
    assert figure("held_in_escrow") == f"{totals['held_in_escrow']:,.4f}"
    assert figure("buyer_balances") == f"{totals['buyer_balances']:,.4f}"
    for name in ("revenue", "payouts", "held_in_escrow", "refunds", "buyer_balances"):
        assert re.fullmatch(r"[\d,]+\.\d{4}", figure(name)), name

    # The readiness panel: the demo's task type, its samples, and what happens next.
    row = page.locator("[data-table=readiness] tr", has_text="topics")
    cells = row.locator("td")
    samples = SampleCounter.objects.get().samples
    assert cells.nth(2).inner_text().startswith(f"{samples:,} ·")
    next_watermark = (samples // TRAIN_EVERY + 1) * TRAIN_EVERY
    last = max(v.number for v in versions)
    assert figure("ready_next") == f"training v{last + 1} at {next_watermark:,} samples"
    assert cells.nth(1).inner_text() in ("serving", "not certified", "suspended")
    page.screenshot(path=str(artifacts / "dashboard-timeline-hour.png"), full_page=True)
    page.locator("#h-ready").scroll_into_view_if_needed()
    page.locator("#h-ready").locator("xpath=..").screenshot(path=str(artifacts / "dashboard-readiness.png"))

    # The window switch: a day by hour; the run sits in one or two buckets.
    page.click("[data-window-link=day]")
    page.wait_for_load_state()
    assert page.url.endswith("?window=day")
    expect(page.locator(".window-link.active")).to_have_text("day")
    expect(page.locator("[data-figure=window_label]")).to_have_text("last 24 hours, by hour")
    assert page.locator("[data-timechart=throughput] .series-tasks circle").count() == 24
    assert _number(figure("window_tasks")) == total
    expect(page.locator("[data-live-text]")).to_contain_text("updated", timeout=15_000)  # the poll keeps it
    assert page.locator("[data-timechart=throughput] .series-tasks circle").count() == 24
    page.screenshot(path=str(artifacts / "dashboard-timeline-day.png"), full_page=True)
    assert page.errors == []
