"""Whatever an operator types into an admin list's URL, the admin answers a page, never a 500."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.db import models
from django.test import Client
from django.urls import reverse

pytestmark = pytest.mark.django_db

# Per field: lookups that exist on some field types and not others, or fail only when the database runs
# them (JSONField `contains` on SQLite, a broken regular expression, a NUL byte PostgreSQL refuses).
FIELD_LOOKUPS = ["contains=x", "regex=(", "gt=not-a-value", "exact=%00", "gt=1e999"]
LIST_PARAMS = [
    "unknown__lookup=1",
    "q=<script>alert(1)</script>",
    "q=%00",
    "q=(",
    "o=999",
    "o=-x.abc",
    "p=999999",
    "p=abc",
    "all=1",
    "e=1",
    "_facets=True&q=(",
    "_to_field=password",
]


def _changelists() -> list[tuple[str, type[models.Model]]]:
    return [
        (reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist"), model)
        for model in admin.site._registry
    ]


def _hostile_queries(model: type[models.Model]) -> list[str]:
    names = [field.name for field in model._meta.concrete_fields]
    return LIST_PARAMS + [f"{name}__{lookup}" for name in names for lookup in FIELD_LOOKUPS]


@pytest.fixture
def rows(buyer, llm_settings) -> None:
    """A row in most admin lists: some failures only show when the database evaluates a row."""
    from django_q.models import Schedule
    from rest_framework_simplejwt.tokens import RefreshToken

    from duke.models import ModelVersion, RoutingState, TrainingTrigger
    from tasks.services.lifecycle import Outcome, task_complete, task_fail
    from tests.factories import submit

    done = submit(buyer, "label me", labels=["spam", "ham"], task_type="mail")
    task_complete(task_id=done.id, outcome=Outcome(result="ham", latency_ms=42))
    failed = submit(buyer, "will fail")
    task_fail(task_id=failed.id, error="invalid key", error_code="auth")
    RefreshToken.for_user(buyer).blacklist()
    Schedule.objects.create(func="math.floor", args="1", schedule_type=Schedule.ONCE)
    ModelVersion.objects.create(number=1, status=ModelVersion.Status.FAILED, per_task_type={"mail": {}})
    TrainingTrigger.objects.create(sample_ordinal=100)
    RoutingState.objects.create(task_type="mail", model_version=1)


@pytest.fixture
def operator_browser(admin_user) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(admin_user)
    return client


@pytest.mark.parametrize(("changelist", "model"), _changelists(), ids=lambda value: str(value))
def test_it_answers_every_hostile_filter_with_a_page(operator_browser, rows, changelist, model):
    failures = []
    for query in _hostile_queries(model):
        response = operator_browser.get(f"{changelist}?{query}")
        # A filter the admin cannot apply sends the operator to the unfiltered list (`e=1`, swept too);
        # 400 is Django's answer to a lookup across relations the admin does not allow.
        redirected_to_the_list = response.status_code == 302 and response["Location"] == f"{changelist}?e=1"
        if response.status_code not in (200, 400) and not redirected_to_the_list:
            failures.append((query, response.status_code))
    assert failures == []


def test_it_says_why_a_filter_was_dropped(operator_browser, rows):
    changelist = reverse("admin:tasks_task_changelist")
    response = operator_browser.get(f"{changelist}?labels__contains=x", follow=True)

    assert response.status_code == 200
    assert response.redirect_chain == [(f"{changelist}?e=1", 302)]
    assert "not valid for this list" in response.content.decode()
