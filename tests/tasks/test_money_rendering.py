"""No amount reaches a user in exponent form (``0E-8``, ``1E-8``): API responses, admin and dashboard.

The data has the amounts whose ``str()`` is an exponent: zero and one-unit 8-place costs, zero prices,
zero balances, tiny Duke savings. Every response is scanned for a number written with an exponent.
"""

from __future__ import annotations

import json
import re
import uuid
from decimal import Decimal

import pytest

from agents.models import Agent
from duke.models import ServedTask
from ledger.models import Account, LedgerEntry
from tasks.models import Task
from tasks.services.lifecycle import Outcome, task_claim, task_complete
from tests.factories import submit

pytestmark = pytest.mark.django_db

# A number with an exponent, not part of a longer token (a UUID's hex, a hashed file name, a colour).
EXPONENT = re.compile(r"(?<![\w.#-])-?\d+(?:\.\d+)?[eE][+-]?\d+(?![\w.-])")
TINY = Decimal("0.00000001")


def _exponents(text: str) -> list[str]:
    return EXPONENT.findall(text)


def test_it_finds_an_exponent_where_there_is_one():
    assert _exponents('{"cost": "0E-8", "x": 1e-05, "y": "1.5E+3"}') == ["0E-8", "1e-05", "1.5E+3"]
    assert _exponents(f'{{"id": "{uuid.UUID("0123e456-1e52-4a3e-8e9f-12345e678901")}"}}') == []
    assert str(TINY) == "1E-8" and str(Decimal("0E-8")) == "0E-8"  # what a plain str() would show


@pytest.fixture
def tiny_money(settings, buyer):
    """Tasks with zero and one-unit costs and prices, a zero-priced agent, Duke rows with tiny savings."""
    settings.AICP_DAILY_SPEND_CAP = None
    free = Agent.objects.create(
        name="free-agent", model="m", price_per_unit=Decimal("0"), prompt_token_price=Decimal("0")
    )
    tasks = []
    for cost, agent in [(Decimal("0"), "auto"), (TINY, "auto"), (Decimal("0"), free.name)]:
        task = submit(buyer, complexity=1, agent=agent)
        task_claim(task_id=task.id)
        task_complete(task_id=task.id, outcome=Outcome(result="r", cost=cost))
        tasks.append(task)
    for task_type, audit_cost, estimate in [
        ("tiny", Decimal("0"), TINY),
        ("zero", Decimal("0"), Decimal("0")),
    ]:
        ServedTask.objects.create(
            task_id=uuid.uuid4(),
            task_type=task_type,
            model_version=1,
            label="a",
            confidence=0.99,
            price=Decimal("0"),
            llm_price=Decimal("0.0001"),
            llm_cost_estimate=estimate,
            audit_cost=audit_cost,
            llm_agent="x",
        )
    assert (
        Task.objects.get(pk=tasks[1].pk).cost == TINY and str(Task.objects.get(pk=tasks[0].pk).cost) == "0E-8"
    )
    return tasks


def test_api_responses_show_no_exponent(tiny_money, buyer_client, operator_client):
    task_id = tiny_money[1].id
    responses = {
        path: client.get(path)
        for client, paths in [
            (
                buyer_client,
                ["/auth/me", "/tasks", f"/tasks/{task_id}", "/agents", "/agents/free-agent", "/model/status"],
            ),
            (operator_client, ["/tasks", "/health", "/model/versions", "/auth/me"]),
        ]
        for path in paths
    }
    for path, response in responses.items():
        assert response.status_code == 200, path
        assert _exponents(response.content.decode()) == [], path
    detail = responses[f"/tasks/{task_id}"].json()
    assert detail["cost"] == "0.00000001"
    assert responses["/agents/free-agent"].json()["price_per_unit"] == "0.0000"
    routing = responses["/model/status"].json()["routing"]
    text = json.dumps(routing)
    assert '"0.00000001"' in text and '"0.00000000"' in text  # the tiny savings, plain


def test_admin_and_dashboard_show_no_exponent(tiny_money, client, operator):
    client.force_login(operator)
    task = tiny_money[1]
    agent = Agent.objects.get(name="free-agent")
    served = ServedTask.objects.first()
    paths = [
        "/admin/tasks/task/",
        f"/admin/tasks/task/{task.pk}/change/",
        "/admin/tasks/ledgerentry/",
        f"/admin/tasks/ledgerentry/{LedgerEntry.objects.first().pk}/change/",
        "/admin/tasks/account/",
        f"/admin/tasks/account/{Account.objects.first().pk}/change/",
        "/admin/agents/agent/",
        f"/admin/agents/agent/{agent.pk}/change/",
        "/admin/users/user/",
        f"/admin/users/user/{task.buyer_id}/change/",
        "/admin/duke/servedtask/",
        f"/admin/duke/servedtask/{served.pk}/change/",
        "/dashboard",
        "/dashboard/data.json",
    ]
    for path in paths:
        response = client.get(path)
        assert response.status_code == 200, path
        assert _exponents(response.content.decode()) == [], path
