"""Headless Chromium (Debian's, never a downloaded one) driven by Playwright, against `live_server`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent.parent.parent / "test-artifacts"
OPERATOR_PASSWORD = "operator-pass-123"  # the `operator` fixture's


@pytest.fixture
def browser(transactional_db) -> Iterator[object]:
    """Chromium for one test, started after the database is set up and stopped before it is flushed.

    Playwright's sync API runs an event loop in this thread while it is open. Django then refuses ORM
    calls unless told they are safe (they are: plain synchronous calls the loop never runs), and keeps a
    separate connection for that context, so the database set-up and flush must happen outside it.
    """
    if not CHROMIUM.exists():
        pytest.skip("no headless Chromium at /usr/bin/chromium (install it: apt-get install -y chromium)")
    from django.db import connections
    from playwright.sync_api import sync_playwright

    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
            connections.close_all()  # the ones opened while Playwright's loop was running


@pytest.fixture
def page(browser):
    """A fresh browser context per test; JavaScript errors and CSP violations are collected."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(f"pageerror: {error}"))
    page.on(
        "console",
        lambda message: (
            page.errors.append(f"console {message.type}: {message.text}") if message.type == "error" else None
        ),
    )
    page.on(
        "response",
        lambda response: (
            page.errors.append(f"HTTP {response.status} {response.url}") if response.status >= 400 else None
        ),
    )
    yield page
    context.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def log_in(page, base_url: str, username: str, password: str, *, next_path: str = "/dashboard") -> None:
    """Through the admin login form, as an operator would."""
    page.goto(f"{base_url}{next_path}")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_load_state()
