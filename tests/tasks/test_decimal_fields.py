"""Money is never a float: every money-named field of every project model is a DecimalField, stored
exactly (core.money.MoneyField: integer minor units on every backend)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.apps import apps
from django.conf import settings
from django.db import models

from core.money import MoneyField

MONEY_NAME = re.compile(r"(^|_)(price|cost|amount|balance|earnings|cap|fee)(_|$)|price")


def _project_models() -> list[type[models.Model]]:
    base = Path(settings.BASE_DIR).resolve()
    return [
        model
        for config in apps.get_app_configs()
        if Path(config.path).resolve().is_relative_to(base) and ".venv" not in Path(config.path).parts
        for model in config.get_models()
    ]


def _money_fields() -> list[tuple[str, models.Field]]:
    return [
        (f"{model._meta.label}.{field.name}", field)
        for model in _project_models()
        for field in model._meta.concrete_fields
        if MONEY_NAME.search(field.name)
    ]


def test_it_finds_the_money_fields_it_is_meant_to_check():
    names = {name for name, _ in _money_fields()}
    assert {
        "tasks.Task.price",
        "tasks.Task.cost",
        "tasks.Account.balance",
        "tasks.LedgerEntry.amount",
        "agents.Agent.price_per_unit",
        "agents.Agent.earnings",
        "users.User.daily_spend_cap",
    } <= names


@pytest.mark.parametrize(
    ("name", "field"), _money_fields(), ids=lambda value: value if isinstance(value, str) else ""
)
def test_it_stores_every_money_field_as_a_decimal(name, field):
    assert isinstance(field, models.DecimalField), f"{name} is a {type(field).__name__}, not a DecimalField"
    assert field.decimal_places >= 4, f"{name} keeps fewer than the ledger's 4 decimal places"
    assert isinstance(field, MoneyField), f"{name} is not stored exactly (a DecimalField is a REAL on SQLite)"


@pytest.mark.parametrize(
    "label",
    ["tasks.Task.price", "tasks.Account.balance", "tasks.LedgerEntry.amount", "agents.Agent.earnings"],
)
def test_it_keeps_ledger_money_at_19_digits_and_4_places(label):
    app_label, model_name, field_name = label.split(".")
    field = apps.get_model(app_label, model_name)._meta.get_field(field_name)
    assert (field.max_digits, field.decimal_places) == (19, 4)
