"""Swagger UI and ReDoc render in a browser that can reach nothing but this server."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

LOOPBACK_HOSTS = {"127.0.0.1", "localhost"}
RENDER_TIMEOUT_MS = 20_000  # both bundles parse a few MB of JavaScript on a loaded 2-core machine
# ReDoc always draws Redocly's logo from their CDN; the page's CSP stops it in the browser (the image hides
# itself), and Chromium reports that refusal. Any other error still fails the tests.
REDOC_LOGO_REFUSED = "Loading the image 'https://cdn.redoc.ly/redoc/logo-mini.svg' violates"


def errors_besides_redocs_logo(errors: list[str]) -> list[str]:
    return [error for error in errors if REDOC_LOGO_REFUSED not in error]


@pytest.fixture
def offline_page(page):
    """The page with every request that would leave loopback aborted and recorded."""
    page.left_loopback = []

    def only_loopback(route) -> None:
        if urlsplit(route.request.url).hostname in LOOPBACK_HOSTS:
            route.continue_()
        else:
            page.left_loopback.append(route.request.url)
            route.abort()

    page.context.route("**/*", only_loopback)
    return page


def test_it_renders_swagger_ui_with_no_network(offline_page, live_server, artifacts) -> None:
    page = offline_page
    page.goto(f"{live_server.url}/api/docs/")

    create_task = page.locator(".opblock-summary-path", has_text="/tasks").first
    expect(create_task).to_be_visible(timeout=RENDER_TIMEOUT_MS)
    expect(page.locator(".opblock").first).to_be_visible()
    assert page.locator(".opblock").count() > 10
    page.screenshot(path=str(artifacts / "api-docs-swagger.png"), full_page=False)
    assert page.left_loopback == []
    assert page.errors == []


def test_it_renders_redoc_with_no_network(offline_page, live_server, artifacts) -> None:
    page = offline_page
    page.goto(f"{live_server.url}/api/redoc/")

    # ReDoc draws each operation as a section whose request panel is a button naming method and path.
    expect(page.get_by_text("AICP coordinator API").first).to_be_visible(timeout=RENDER_TIMEOUT_MS)
    expect(page.locator("[data-section-id='tag/tasks/operation/tasks_create']")).to_be_attached()
    expect(page.get_by_role("button", name="post /tasks/", exact=True)).to_be_attached()
    page.screenshot(path=str(artifacts / "api-docs-redoc.png"), full_page=False)
    assert page.left_loopback == []
    assert errors_besides_redocs_logo(page.errors) == []


def test_it_shows_the_landing_page_with_working_links(offline_page, live_server, artifacts) -> None:
    page = offline_page
    page.goto(f"{live_server.url}/")

    expect(page.get_by_role("heading", name="AI Coordination Platform")).to_be_visible()
    for link in ("dashboard", "swagger", "redoc", "admin", "health"):
        expect(page.locator(f"[data-link={link}]")).to_be_visible()
    page.screenshot(path=str(artifacts / "landing.png"), full_page=True)
    page.click("[data-link=redoc]")
    expect(page.get_by_text("AICP coordinator API").first).to_be_visible(timeout=RENDER_TIMEOUT_MS)
    assert page.left_loopback == []
    assert errors_besides_redocs_logo(page.errors) == []
