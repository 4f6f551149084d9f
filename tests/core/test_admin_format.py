"""core.admin's formatting for people: money, costs, percentages, floats and JSON without exponents."""

from __future__ import annotations

from decimal import Decimal

from core.admin import cost_text, money_text, percent_text, readable_float, readable_json, seconds_text


def test_it_formats_money_and_costs_as_plain_decimals() -> None:
    assert money_text(Decimal("1234.5")) == "1,234.5000"
    assert money_text(Decimal("0E-8")) == "0.0000"
    assert money_text(None) == "—"
    assert cost_text(Decimal("0E-8")) == "0.0000"
    assert cost_text(Decimal("0.00001230")) == "0.0000123"
    assert cost_text(Decimal("1.5")) == "1.5000"


def test_it_formats_scores_and_seconds() -> None:
    assert percent_text(0.9312345678901234) == "93.1%"
    assert percent_text(None) == "—"
    assert seconds_text(2.345678) == "2.3 s"


def test_it_writes_floats_and_json_without_noise_or_exponents() -> None:
    assert readable_float(0.9312345678901234) == "0.9312"
    assert readable_float(1.234e-12) == "< 0.0001"
    assert readable_float(0.0) == "0"
    assert readable_float(3.0) == "3"
    text = readable_json({"a": {"p": 3.3e-07, "xs": [0.5, 1, "b"]}, "n": 200})
    assert text == '{\n  "a": {\n    "p": < 0.0001,\n    "xs": [0.5, 1, "b"]\n  },\n  "n": 200\n}'
    assert "e-" not in text.lower()
