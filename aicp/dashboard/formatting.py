"""The strings the dashboard shows (the JSON carries them beside the raw values), and JSON-safe values."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from django.utils import timezone

from core.admin import DASH, money_text, percent_text
from core.money import plain

# The dashboard writes money and shares as the admin does: one formatter each (core.admin).
percent = percent_text
money = money_text


def number(value: int | None) -> str:
    return DASH if value is None else f"{value:,}"


def clock(moment: datetime | None) -> str:
    if moment is None:
        return DASH
    local = timezone.localtime(moment)
    if timezone.localtime().date() == local.date():
        return local.strftime("%H:%M:%S")
    return local.strftime("%b %d %H:%M")


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def cell(text: object, *, cls: str = "", badge: str = "", title: str = "") -> dict[str, str]:
    return {"text": str(text), "cls": cls, "badge": badge, "title": title}


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    return _json_value(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return plain(value)  # never 0E-8
    if isinstance(value, datetime):
        return value.isoformat()
    return value
