from decimal import Decimal

import pytest

from agents.pricing import quote, reputation_multiplier, smoothed_success_rate, token_cost


def test_it_neither_punishes_nor_rewards_a_new_agent():
    assert reputation_multiplier(0, 0) == Decimal("1.0000")


def test_it_quotes_price_times_complexity_for_a_new_agent():
    assert quote(price_per_unit=Decimal("0.02"), complexity=7, success_count=0, failure_count=0) == Decimal(
        "0.1400"
    )


def test_it_raises_the_quote_for_a_reliable_agent_and_lowers_it_for_a_failing_one():
    reliable = quote(price_per_unit=Decimal("1"), complexity=1, success_count=500, failure_count=0)
    failing = quote(price_per_unit=Decimal("1"), complexity=1, success_count=10, failure_count=90)
    assert reliable > Decimal("1") > failing
    assert reliable <= Decimal("1.1") and failing >= Decimal("0.5")


def test_it_smooths_the_success_rate_towards_the_prior():
    assert smoothed_success_rate(1, 0) < Decimal("1")
    assert smoothed_success_rate(0, 1) > Decimal("0")


def test_it_keeps_quotes_decimal_with_four_places():
    price = quote(price_per_unit=Decimal("0.0333"), complexity=3, success_count=3, failure_count=1)
    assert isinstance(price, Decimal)
    assert price == price.quantize(Decimal("0.0001"))


@pytest.mark.parametrize("complexity", [0, 11])
def test_it_refuses_complexity_out_of_range(complexity):
    with pytest.raises(ValueError):
        quote(price_per_unit=Decimal("1"), complexity=complexity, success_count=0, failure_count=0)


def test_it_computes_token_cost_per_million_tokens():
    cost = token_cost(
        prompt_tokens=1000,
        completion_tokens=10,
        prompt_token_price=Decimal("0.15"),
        completion_token_price=Decimal("0.60"),
    )
    assert cost == Decimal("0.00015600")
