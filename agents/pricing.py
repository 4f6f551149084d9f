"""Quotes and reputation. Decimal throughout: a quote is what the buyer is charged, to the ten-thousandth."""

from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal

FOUR_PLACES = Decimal("0.0001")
# A new agent is assumed to be as good as the prior, so its multiplier is exactly 1.
PRIOR_SUCCESS_RATE = Decimal("0.9")
PRIOR_WEIGHT = Decimal("10")
MIN_MULTIPLIER = Decimal("0.5")
MAX_MULTIPLIER = Decimal("1.1")
TOKENS_PER_MILLION = Decimal("1000000")
# Token costs are fractions of a cent per call, so they keep eight places; ledger amounts keep four.
COST_PLACES = Decimal("0.00000001")


def quantize_money(amount: Decimal) -> Decimal:
    return amount.quantize(FOUR_PLACES, rounding=ROUND_HALF_UP)


def smoothed_success_rate(success_count: int, failure_count: int) -> Decimal:
    total = Decimal(success_count + failure_count)
    return (Decimal(success_count) + PRIOR_WEIGHT * PRIOR_SUCCESS_RATE) / (total + PRIOR_WEIGHT)


def reputation_multiplier(success_count: int, failure_count: int) -> Decimal:
    rate = smoothed_success_rate(success_count, failure_count)
    multiplier = rate / PRIOR_SUCCESS_RATE
    return quantize_money(min(MAX_MULTIPLIER, max(MIN_MULTIPLIER, multiplier)))


def quote(*, price_per_unit: Decimal, complexity: int, success_count: int, failure_count: int) -> Decimal:
    if not 1 <= complexity <= 10:
        raise ValueError(f"complexity must be 1..10, got {complexity}")
    multiplier = reputation_multiplier(success_count, failure_count)
    return quantize_money(price_per_unit * Decimal(complexity) * multiplier)


def token_cost(
    *,
    prompt_tokens: int,
    completion_tokens: int,
    prompt_token_price: Decimal,
    completion_token_price: Decimal,
) -> Decimal:
    """Provider cost of one call; prices are per million tokens."""
    raw = (
        Decimal(prompt_tokens) * prompt_token_price + Decimal(completion_tokens) * completion_token_price
    ) / (TOKENS_PER_MILLION)
    return raw.quantize(COST_PLACES, rounding=ROUND_HALF_UP)


# OpenAI's Batch API bills tokens at half the synchronous price.
BATCH_API_TOKEN_PRICE_FACTOR = Decimal("0.5")


def batch_quote(*, quote: Decimal, llm_cost_estimate: Decimal, discount: Decimal) -> Decimal:
    """A batch-priority task's price: the quote less ``discount`` (a fraction, e.g. 0.5) of its estimated LLM
    token cost (never more than the quote), rounded down to the ten-thousandth: in the buyer's favour."""
    if not Decimal(0) <= discount <= Decimal(1):
        raise ValueError(f"discount must be within [0, 1], got {discount}")
    reduced = quote - discount * min(quote, max(Decimal(0), llm_cost_estimate))
    return reduced.quantize(FOUR_PLACES, rounding=ROUND_DOWN) if reduced != quote else quote
