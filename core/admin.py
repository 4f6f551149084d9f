"""Admin pieces every app's admin shares."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html


class ReadOnlyAdmin(admin.ModelAdmin):
    """Money rows are append-only: the admin shows them and never edits or deletes them."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


# --- figures for people (issue 22): no 16-digit floats, no exponent, money as plain decimals ----------------

DASH = "—"


def money_text(value: Decimal | float | int | None, places: int = 4) -> str:
    """`1,234.5678`: the ledger's places, thousands grouped, never `0E-8`."""
    if value is None:
        return DASH
    amount = Decimal(str(value)).quantize(Decimal(1).scaleb(-places))
    return f"{amount:,.{places}f}"


def cost_text(value: Decimal | float | None) -> str:
    """Provider token costs (8 places), shown with the zeros past the 4th place trimmed: `0.00001234`."""
    if value is None:
        return DASH
    text = money_text(value, 8)
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction[:4]}{fraction[4:].rstrip('0')}"


def percent_text(value: float | None, digits: int = 1) -> str:
    return DASH if value is None else f"{value:.{digits}%}"


def seconds_text(value: float | None) -> str:
    return DASH if value is None else f"{value:,.1f} s"


def admin_link(url: str, text: str) -> str:
    return format_html('<a href="{}">{}</a>', url, text)


def titled_filter(title: str, base: type = admin.ChoicesFieldListFilter) -> type:
    """A field's list filter under another title (two fields both called `kind` read as one filter twice)."""

    class TitledFilter(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.title = title

    TitledFilter.__name__ = f"TitledFilter_{title.replace(' ', '_')}"
    return TitledFilter


def displayed_fields(model: type, overrides: dict[str, str]) -> list[str]:
    """The model's fields in order (no `id`), each replaced by its display method where one is given."""
    return [overrides.get(f.name, f.name) for f in model._meta.fields if f.name != "id"]  # type: ignore[attr-defined]


def readable_float(value: float) -> str:
    """A float for people: 4 decimals at most, no exponent (`< 0.0001` for tinier, such as p-values)."""
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    if value != 0 and abs(value) < 0.0001:
        return "< 0.0001" if value > 0 else "> -0.0001"
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def readable_json(value: Any, indent: int = 0) -> str:
    """JSON laid out for reading, its floats through `readable_float` (no 16 digits, no exponent)."""
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{pad}  {json.dumps(str(k))}: {readable_json(v, indent + 2)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list | tuple):
        if all(not isinstance(item, dict | list | tuple) for item in value):
            return "[" + ", ".join(readable_json(item) for item in value) + "]"
        return "[\n" + ",\n".join(f"{pad}  {readable_json(v, indent + 2)}" for v in value) + f"\n{pad}]"
    if isinstance(value, float):
        return readable_float(value)
    return json.dumps(value, ensure_ascii=False)


def json_block(value: Any) -> str:
    return format_html('<pre class="aicp-json">{}</pre>', readable_json(value))
