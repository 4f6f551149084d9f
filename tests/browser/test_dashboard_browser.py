"""The dashboard in a real browser: login, live figures, refusal, and untrusted text that stays text."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from duke.models import ModelVersion
from tests.browser.conftest import OPERATOR_PASSWORD, log_in
from tests.factories import DEFAULT_PASSWORD, make_buyer, submit

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

XSS = "<script>alert(1)</script>"
POLL_TIMEOUT_MS = 15_000  # a few poll periods


@pytest.fixture
def shopper():
    return make_buyer("shopper")


def test_it_lets_an_operator_watch_the_figures_change(
    page, live_server, operator, shopper, llm_settings, artifacts
):
    log_in(page, live_server.url, "operator", OPERATOR_PASSWORD)

    assert page.url == f"{live_server.url}/dashboard"
    expect(page.locator("[data-figure=tasks_total]")).to_have_text("0")
    expect(page.locator("[data-live]")).to_have_class("live live-on", timeout=POLL_TIMEOUT_MS)
    expect(page.get_by_text("No tasks yet.")).to_be_visible()
    page.evaluate("window.sameDocument = true")

    # Submitted while the page is open; the sync queue runs them against the simulator on commit.
    for i in range(3):
        submit(shopper, f"Is message {i} spam?", labels=["spam", "ham"], task_type="mail")
    submit(shopper, "Say something free-form.")

    expect(page.locator("[data-figure=tasks_total]")).to_have_text("4", timeout=POLL_TIMEOUT_MS)
    expect(page.locator("[data-figure=tasks_completed]")).to_have_text("4")
    expect(page.locator("[data-figure=success_rate]")).to_have_text("100.0%")
    expect(page.locator("[data-table=recent_tasks] tr")).to_have_count(4)
    expect(page.locator("[data-table=recent_tasks] .badge-completed")).to_have_count(4)
    expect(page.locator("[data-figure=samples_total]")).to_have_text("3")
    agents = page.locator("[data-table=agents] tr", has_text="openai-gpt-4o-mini")
    expect(agents.locator("td").nth(3)).to_have_text("4")
    assert page.evaluate("window.sameDocument === true")  # no reload: the poller redrew the figures
    page.screenshot(path=str(artifacts / "dashboard.png"), full_page=True)
    assert page.errors == []


def test_it_redraws_the_duke_panels_as_versions_train(page, live_server, operator):
    log_in(page, live_server.url, "operator", OPERATOR_PASSWORD)
    expect(page.locator(".training")).to_be_hidden()
    expect(page.locator("[data-chart] .chart-empty")).to_have_count(1)

    training = ModelVersion.objects.create(number=1, status="training", epoch=3, epochs=20)
    expect(page.locator(".training")).to_be_visible(timeout=POLL_TIMEOUT_MS)
    expect(page.locator("[data-figure=training_epoch]")).to_have_text("3 / 20")
    assert page.locator("progress[data-bar=training]").evaluate("bar => [bar.value, bar.max]") == [3, 20]

    training.status, training.accuracy, training.macro_f1 = "production", 0.91, 0.88
    training.save()
    ModelVersion.objects.create(number=2, status="candidate", accuracy=0.93, macro_f1=0.9)
    expect(page.locator("[data-figure=production_version]")).to_have_text("v1", timeout=POLL_TIMEOUT_MS)
    expect(page.locator(".training")).to_be_hidden()
    expect(page.locator("[data-chart] circle")).to_have_count(4)
    expect(page.locator("[data-chart] .dot-production")).to_have_count(2)
    expect(page.locator("[data-chart] .chart-empty")).to_have_count(0)
    expect(page.locator("[data-table=versions] tr")).to_have_count(2)
    assert page.errors == []


def test_it_refuses_a_buyer(page, live_server, shopper, client):
    log_in(page, live_server.url, "shopper", DEFAULT_PASSWORD)

    # The admin login only accepts staff: the buyer stays on it, told why.
    assert "/admin/login/" in page.url
    expect(page.locator(".errornote")).to_contain_text("staff account")

    # Even with a valid session cookie, the dashboard and its data stay closed to a buyer.
    client.force_login(shopper)
    cookie = client.cookies["sessionid"]
    page.context.add_cookies([{"name": "sessionid", "value": cookie.value, "url": live_server.url}])
    page.goto(f"{live_server.url}/dashboard")
    assert page.url.startswith(f"{live_server.url}/admin/login/?next=/dashboard")
    expect(page.locator("body")).to_contain_text("not authorized")
    response = page.request.get(f"{live_server.url}/dashboard/data.json")
    assert response.status == 403


def test_it_renders_a_hostile_llm_answer_as_text(page, live_server, operator, shopper, llm_settings):
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    llm_settings.set_answer("Before the page opened", XSS)
    llm_settings.set_answer("While the page is open", XSS + " <img src=x onerror=alert(2)>")
    submit(shopper, "Before the page opened")

    log_in(page, live_server.url, "operator", OPERATOR_PASSWORD)
    expect(page.locator("td.result", has_text=XSS)).to_have_count(1)
    submit(shopper, "While the page is open")  # drawn by the poller this time, not the server

    rendered = page.locator("td.result", has_text="onerror=alert(2)")
    expect(rendered).to_have_text(XSS + " <img src=x onerror=alert(2)>", timeout=POLL_TIMEOUT_MS)
    expect(page.locator("td.result", has_text=XSS)).to_have_count(2)
    assert page.locator("main script").count() == 0
    assert page.locator("main img").count() == 0
    page.wait_for_timeout(500)
    assert dialogs == []
    assert page.errors == []


def test_it_works_without_javascript(browser, live_server, operator, shopper, llm_settings):
    submit(shopper, "A task before the visit", labels=["a", "b"])
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        log_in(page, live_server.url, "operator", OPERATOR_PASSWORD)

        expect(page.locator("[data-figure=tasks_total]")).to_have_text("1")
        expect(page.locator("[data-table=recent_tasks] tr")).to_have_count(1)
        expect(page.locator("[data-live-text]")).to_contain_text("reload")
    finally:
        context.close()
