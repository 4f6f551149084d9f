"""The admin runs the business: every page opens, computed columns are right, actions work, queue visible."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.contrib import admin
from django.urls import reverse
from django.utils import timezone

from agents.models import Agent
from ledger.models import LedgerEntry
from tasks.models import Task
from tasks.services.lifecycle import Outcome, task_complete, task_fail
from tests.factories import submit

pytestmark = pytest.mark.django_db


@pytest.fixture
def finished_tasks(buyer, llm_settings):
    done = submit(buyer, "label me", labels=["spam", "ham"], task_type="mail")
    task_complete(task_id=done.id, outcome=Outcome(result="<b>ham</b>", latency_ms=42))
    failed = submit(buyer, "will fail")
    task_fail(task_id=failed.id, error="invalid key", error_code="auth")
    return done, failed


def test_it_opens_every_admin_list_and_detail_page(admin_client, admin_user, rf, finished_tasks):
    request = rf.get("/admin/")
    request.user = admin_user
    for model, model_admin in admin.site._registry.items():
        opts = model._meta
        changelist = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        assert admin_client.get(changelist).status_code == 200, changelist
        instance = model_admin.get_queryset(request).first()
        if instance is not None:
            change = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[instance.pk])
            assert admin_client.get(change).status_code == 200, change


def test_it_lists_tasks_with_executor_and_an_escaped_result_preview(admin_client, finished_tasks):
    body = admin_client.get(reverse("admin:tasks_task_changelist")).content.decode()

    assert "&lt;b&gt;ham&lt;/b&gt;" in body and "<b>ham</b>" not in body
    assert "auth: invalid key" in body
    assert "openai-gpt-4o-mini (assigned)" in body  # the failed task never got an executor


def test_it_filters_labeling_from_free_form_tasks(admin_client, finished_tasks):
    done, failed = finished_tasks
    labeling = admin_client.get(reverse("admin:tasks_task_changelist") + "?kind=labeling")
    free = admin_client.get(reverse("admin:tasks_task_changelist") + "?kind=free")

    assert [t.pk for t in labeling.context["cl"].result_list] == [done.pk]
    assert [t.pk for t in free.context["cl"].result_list] == [failed.pk]


def test_it_shows_a_task_with_its_ledger_entries(admin_client, finished_tasks):
    done, _ = finished_tasks
    response = admin_client.get(reverse("admin:tasks_task_change", args=[done.pk]))

    body = response.content.decode()
    assert "Ledger entries for this task" in body
    assert body.count("payout for task") >= 1 and "hold for task" in body
    assert "Money and tokens" in body


def test_it_retries_failed_tasks_and_leaves_the_others(admin_client, finished_tasks):
    done, failed = finished_tasks
    response = admin_client.post(
        reverse("admin:tasks_task_changelist"),
        {"action": "retry_failed", "_selected_action": [str(done.pk), str(failed.pk)]},
        follow=True,
    )

    assert "Resubmitted 1 failed task(s)." in response.content.decode()
    assert Task.objects.count() == 3
    retry = Task.objects.exclude(pk__in=[done.pk, failed.pk]).get()
    assert retry.description == failed.description and retry.status == "pending"


def test_it_warns_when_no_selected_task_has_failed(admin_client, finished_tasks):
    done, _ = finished_tasks
    response = admin_client.post(
        reverse("admin:tasks_task_changelist"),
        {"action": "retry_failed", "_selected_action": [str(done.pk)]},
        follow=True,
    )

    assert "None of the selected tasks has failed." in response.content.decode()
    assert Task.objects.count() == 2


def test_it_keeps_ledger_rows_read_only(admin_client, finished_tasks):
    entry = LedgerEntry.objects.first()

    page = admin_client.get(reverse("admin:tasks_ledgerentry_change", args=[entry.pk]))
    delete = admin_client.post(reverse("admin:tasks_ledgerentry_delete", args=[entry.pk]), {"post": "yes"})

    assert page.status_code == 200 and 'name="amount"' not in page.content.decode()
    assert delete.status_code == 403
    assert LedgerEntry.objects.filter(pk=entry.pk).exists()


def test_it_shows_buyers_balances_held_money_and_task_counts(admin_client, buyer, llm_settings):
    submit(buyer, "pending one")
    response = admin_client.get(reverse("admin:users_user_changelist") + "?role=buyer")

    (row,) = response.context["cl"].result_list
    assert row.username == "buyer-one"
    assert row._task_count == 1
    assert row._held == Task.objects.get().price
    assert row._available == Decimal("100.0000") - row._held


def test_it_shows_agents_with_their_track_record_and_never_deletes_them(admin_client, finished_tasks):
    agent = Agent.objects.get(name="openai-gpt-4o-mini")
    body = admin_client.get(reverse("admin:agents_agent_changelist")).content.decode()
    delete = admin_client.post(reverse("admin:agents_agent_delete", args=[agent.pk]), {"post": "yes"})

    assert "50.0%" in body  # one success, one failure
    assert delete.status_code == 403
    assert Agent.objects.filter(pk=agent.pk).exists()


def test_it_shows_queued_failed_and_scheduled_jobs(admin_client, monkeypatch):
    from django_q.conf import Conf
    from django_q.models import Task as QTask
    from django_q.tasks import async_task

    monkeypatch.setattr(Conf, "SYNC", False)
    async_task("tasks.jobs.reap_expired_leases", task_name="queued-job")
    QTask.objects.create(
        id="f" * 32,
        name="failed-job",
        func="tasks.jobs.execute_task",
        started=timezone.now(),
        stopped=timezone.now(),
        success=False,
        result="boom",
    )

    queued = admin_client.get(reverse("admin:django_q_ormq_changelist")).content.decode()
    failed = admin_client.get(reverse("admin:django_q_failure_changelist")).content.decode()
    scheduled = admin_client.get(reverse("admin:django_q_schedule_changelist")).content.decode()

    assert "queued-job" in queued
    assert "failed-job" in failed
    assert "tasks.jobs.reap_expired_leases" in scheduled  # the lease reaper's schedule


def test_it_brands_the_admin_and_links_the_dashboard_and_the_simulator(admin_client, settings):
    settings.AICP_LLM_SIMULATED = True
    body = admin_client.get(reverse("admin:index")).content.decode()

    assert "AICP operations" in body
    assert 'href="/dashboard"' in body
    assert "aicp-sim-banner" in body


# --- issue 22: figures for people, newest first, distinct filters, links between related rows ----------


def _served(task, *, version: int = 3):
    from duke.models import ModelVersion, ServedTask

    certificate = {"threshold": 0.62, "lower_bound": 0.951234567891, "p_value": 1.234e-12, "n": 200}
    ModelVersion.objects.create(
        number=version,
        status="production",
        accuracy=0.9312345678901234,
        macro_f1=0.87654321,
        training_seconds=2.345678,
        thresholds={"mail": {"threshold": 0.62, "coverage": 0.7134567, "certificate": certificate}},
        promotion={"promoted": True, "p_value": 3.3e-07, "calibration": {"mail": certificate}},
        per_task_type={"mail": {"accuracy": 0.9876543219, "n": 120}},
    )
    return ServedTask.objects.create(
        task_id=task.id,
        task_type="mail",
        model_version=version,
        label="ham",
        confidence=0.9876543210123,
        price=Decimal("0.0020"),
        llm_price=Decimal("0.0200"),
        llm_cost_estimate=Decimal("0.00000000"),
        audit_cost=Decimal("0.00001230"),
    )


def test_it_shows_percentages_and_money_for_people(admin_client, finished_tasks):
    done, _ = finished_tasks
    _served(done)
    pages = {
        name: admin_client.get(reverse(f"admin:{name}")).content.decode()
        for name in (
            "duke_modelversion_changelist",
            "duke_servedtask_changelist",
            "tasks_task_changelist",
            "tasks_ledgerentry_changelist",
            "tasks_account_changelist",
            "agents_agent_changelist",
            "users_user_changelist",
        )
    }
    from duke.models import ModelVersion, ServedTask

    version = ModelVersion.objects.get(number=3)
    pages["version"] = admin_client.get(
        reverse("admin:duke_modelversion_change", args=[version.pk])
    ).content.decode()
    served = ServedTask.objects.get()
    pages["served"] = admin_client.get(
        reverse("admin:duke_servedtask_change", args=[served.pk])
    ).content.decode()

    assert (
        "93.1%" in pages["duke_modelversion_changelist"] and "87.7%" in pages["duke_modelversion_changelist"]
    )
    assert "2.3 s" in pages["duke_modelversion_changelist"]
    assert "93.1%" in pages["version"] and "2.3 s" in pages["version"]
    assert "&quot;lower_bound&quot;: 0.9512" in pages["version"]  # JSON floats rounded, escaped as text
    assert "&quot;p_value&quot;: &lt; 0.0001" in pages["version"]
    assert "98.8%" in pages["duke_servedtask_changelist"] and "98.8%" in pages["served"]
    assert "0.0180" in pages["duke_servedtask_changelist"]  # saved: the LLM's quote minus Duke's price
    assert "0.0000123" in pages["served"] and "0.0000" in pages["served"]
    assert "100.0000" in pages["tasks_account_changelist"] or "99." in pages["tasks_account_changelist"]
    for name, body in pages.items():
        assert not re.search(r"\d\.\d{9,}", body), name  # no 16-digit floats
        assert not re.search(r"\b\d(\.\d+)?E-?\d+\b", body), name  # no exponent


def test_it_lists_the_ledger_newest_first_with_distinct_filters(admin_client, finished_tasks):
    response = admin_client.get(reverse("admin:tasks_ledgerentry_changelist"))
    rows = list(response.context["cl"].result_list)
    body = response.content.decode()

    assert [(r.created_at, r.pk) for r in rows] == sorted(((r.created_at, r.pk) for r in rows), reverse=True)
    titles = [spec.title for spec in response.context["cl"].filter_specs]
    assert len(titles) == len(set(titles))
    assert "entry kind" in titles and "account kind" in titles
    assert body.count("By kind") == 0
    task_titles = [
        s.title for s in admin_client.get(reverse("admin:tasks_task_changelist")).context["cl"].filter_specs
    ]
    assert len(task_titles) == len(set(task_titles))


def test_it_links_a_task_its_ledger_rows_its_sample_and_the_version_that_served_it(
    admin_client, finished_tasks
):
    from duke.models import ModelVersion, TrainingData

    done, _ = finished_tasks
    served = _served(done)
    sample = TrainingData.objects.filter(task_id=done.id).first() or TrainingData.objects.create(
        task_id=done.id, input_text="label me", labels=["spam", "ham"], output="ham", split="train"
    )
    version = ModelVersion.objects.get(number=3)

    task_page = admin_client.get(reverse("admin:tasks_task_change", args=[done.pk])).content.decode()
    ledger_url = reverse("admin:tasks_ledgerentry_changelist") + f"?task__id__exact={done.pk}"
    assert f'href="{ledger_url}"' in task_page
    assert f'href="{reverse("admin:duke_trainingdata_change", args=[sample.pk])}"' in task_page
    assert f'href="{reverse("admin:duke_servedtask_change", args=[served.pk])}"' in task_page
    assert f'href="{reverse("admin:duke_modelversion_change", args=[version.pk])}"' in task_page
    assert "served by Duke v3" in task_page

    ledger = admin_client.get(ledger_url)
    assert ledger.status_code == 200
    rows = list(ledger.context["cl"].result_list)
    assert rows and {r.task_id for r in rows} == {done.pk}
    task_url = reverse("admin:tasks_task_change", args=[done.pk])
    assert f'href="{task_url}"' in ledger.content.decode()

    sample_page = admin_client.get(
        reverse("admin:duke_trainingdata_change", args=[sample.pk])
    ).content.decode()
    assert f'href="{task_url}"' in sample_page
    served_list = admin_client.get(reverse("admin:duke_servedtask_changelist")).content.decode()
    assert f'href="{task_url}"' in served_list
    assert f'href="{reverse("admin:duke_modelversion_change", args=[version.pk])}"' in served_list
    version_page = admin_client.get(
        reverse("admin:duke_modelversion_change", args=[version.pk])
    ).content.decode()
    assert "?model_version=3" in version_page
    by_version = admin_client.get(reverse("admin:duke_servedtask_changelist") + "?model_version=3")
    assert [r.pk for r in by_version.context["cl"].result_list] == [served.pk]
