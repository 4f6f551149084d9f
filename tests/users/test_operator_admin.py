"""An operator (staff, not superuser) runs the business in the admin, but cannot hand out powers."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.test import Client
from django.urls import reverse

from users.backends import OPERATOR_APPS
from users.models import User

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator_browser(operator) -> Client:
    client = Client()
    client.force_login(operator)
    return client


def test_it_opens_every_business_page_of_the_admin_for_an_operator(operator_browser, operator):
    assert not operator.is_superuser
    business_models = [m for m in admin.site._registry if m._meta.app_label in OPERATOR_APPS]
    assert {m._meta.app_label for m in business_models} >= {"agents", "tasks", "duke", "users", "django_q"}
    for model in business_models:
        opts = model._meta
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        assert operator_browser.get(url).status_code == 200, url
    index = operator_browser.get(reverse("admin:index")).content.decode()
    assert "Tasks" in index and "Ledger entries" in index and "Model versions" in index


def test_it_keeps_groups_and_permissions_with_superusers(operator_browser):
    assert operator_browser.get(reverse("admin:auth_group_changelist")).status_code == 403


def test_it_refuses_an_operator_who_edits_a_superuser(operator_browser):
    boss = User.objects.create_superuser(username="boss", password="boss-pass-123")
    change_url = reverse("admin:users_user_change", args=[boss.pk])
    page = operator_browser.get(change_url)
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()  # view only
    response = operator_browser.post(change_url, {"username": "boss", "is_active": "on"})
    assert response.status_code == 403
    password_url = reverse("admin:auth_user_password_change", args=[boss.pk])
    response = operator_browser.post(
        password_url, {"password1": "x-Pass-9876543", "password2": "x-Pass-9876543"}
    )
    assert response.status_code == 403
    boss.refresh_from_db()
    assert boss.check_password("boss-pass-123")


def test_it_ignores_an_operator_who_tries_to_make_someone_a_superuser(operator_browser, buyer):
    url = reverse("admin:users_user_change", args=[buyer.pk])
    page = operator_browser.get(url)
    assert page.status_code == 200
    response = operator_browser.post(
        url,
        {
            "username": buyer.username,
            "is_active": "on",
            "is_superuser": "on",
            "groups": [],
            "user_permissions": [],
            "daily_spend_cap": "5.0000",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    buyer.refresh_from_db()
    assert buyer.daily_spend_cap == 5 and not buyer.is_superuser


def test_it_grants_nothing_to_an_inactive_or_non_staff_user(buyer, operator):
    assert not buyer.has_perm("tasks.view_task")
    assert operator.has_perm("tasks.view_task") and operator.has_module_perms("duke")
    assert not operator.has_perm("auth.change_group")
    operator.is_active = False
    operator.save()
    assert not User.objects.get(pk=operator.pk).has_perm("tasks.view_task")
