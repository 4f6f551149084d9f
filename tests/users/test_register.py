"""Registering a buyer (POST /auth/register): the sign-up credit enters through the ledger."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ledger.models import LedgerEntry

pytestmark = pytest.mark.django_db


def test_it_registers_a_buyer_with_the_signup_credit_in_the_ledger(api_client, settings):
    settings.AICP_SIGNUP_CREDIT = Decimal("12.5")
    response = api_client.post(
        "/auth/register", {"username": "newbie", "password": "a-Strong-pass-42"}, format="json"
    )
    assert response.status_code == 201
    assert response.json()["balance"] == "12.5000"
    entry = LedgerEntry.objects.get(account__user__username="newbie")
    assert entry.kind == "credit" and entry.amount == Decimal("12.5000") and entry.memo == "signup credit"


def test_it_registers_without_credit_when_the_signup_credit_is_zero(api_client, settings):
    settings.AICP_SIGNUP_CREDIT = Decimal("0")
    response = api_client.post(
        "/auth/register", {"username": "broke", "password": "a-Strong-pass-42"}, format="json"
    )
    assert response.json()["balance"] == "0.0000"
    assert not LedgerEntry.objects.filter(account__user__username="broke").exists()
