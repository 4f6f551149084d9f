"""The admin in a real browser: a task links to its ledger rows, the ledger reads newest first, figures
are formatted for people and no column is clipped. Screenshots: test-artifacts/admin-task.png,
admin-ledger.png."""

from __future__ import annotations

import re

import pytest

from ledger.models import LedgerEntry
from tasks.services.lifecycle import Outcome, task_complete, task_fail
from tests.browser.conftest import OPERATOR_PASSWORD, log_in
from tests.factories import make_buyer, submit

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


@pytest.fixture
def history(llm_settings):
    # Operators' admin rights come from the permission rows (users/backends.py); a transactional test
    # that ran before may have flushed them, so this test makes sure they exist.
    from django.apps import apps
    from django.contrib.auth.management import create_permissions
    from django.contrib.contenttypes.management import create_contenttypes

    for app_config in apps.get_app_configs():
        create_contenttypes(app_config, verbosity=0)
        create_permissions(app_config, verbosity=0)
    buyer = make_buyer("shopper")
    done = submit(buyer, "Is this spam?", labels=["spam", "ham"], task_type="mail")
    task_complete(task_id=done.id, outcome=Outcome(result="ham", latency_ms=42))
    failed = submit(buyer, "A task the provider refuses")
    task_fail(task_id=failed.id, error="invalid API key", error_code="auth")
    return done


def test_it_walks_from_a_task_to_its_ledger_rows(history, page, live_server, operator, artifacts):
    log_in(
        page,
        live_server.url,
        "operator",
        OPERATOR_PASSWORD,
        next_path=f"/admin/tasks/task/{history.pk}/change/",
    )
    page.screenshot(path=str(artifacts / "admin-task.png"), full_page=True)
    confidence = page.locator(".field-confidence_display .readonly").inner_text()
    assert confidence == "—"  # an LLM answer has no confidence
    assert re.fullmatch(r"\d+\.\d{4}", page.locator(".field-price_display .readonly").inner_text())

    page.click("a:has-text('ledger rows')")
    page.wait_for_load_state()
    assert "task__id__exact" in page.url
    rows = page.locator("#result_list tbody tr")
    assert rows.count() >= 2
    links = rows.locator("th.field-created_at a, td.field-created_at a").evaluate_all(
        "links => links.map((a) => a.getAttribute('href'))"
    )
    shown = [int(re.search(r"/ledgerentry/(\d+)/", href).group(1)) for href in links]
    newest_first = LedgerEntry.objects.filter(task_id=history.pk).order_by("-created_at", "-id")
    assert shown == list(newest_first.values_list("pk", flat=True))
    for amount in page.locator("#result_list td.field-amount_display").all_inner_texts():
        assert re.fullmatch(r"-?[\d,]+\.\d{4}", amount)
    filters = page.locator("#changelist-filter summary, #changelist-filter h3").all_inner_texts()
    assert len(filters) == len(set(filters)) and any("entry kind" in f for f in filters)
    # No clipped column: no header or cell whose content is wider than the box that shows it.
    clipped = page.evaluate(
        """() => Array.from(document.querySelectorAll('#result_list th, #result_list td'))
            .filter((cell) => cell.scrollWidth > cell.clientWidth + 1)
            .map((cell) => cell.className + ': ' + cell.innerText)"""
    )
    assert clipped == []
    fits = page.evaluate(
        """() => {
            const table = document.querySelector('#result_list');
            const box = table.closest('.results').getBoundingClientRect();
            return table.getBoundingClientRect().right <= box.right + 1;
        }"""
    )
    assert fits, "the ledger table is wider than the page shows"
    page.screenshot(path=str(artifacts / "admin-ledger.png"), full_page=True)
    assert page.errors == []
