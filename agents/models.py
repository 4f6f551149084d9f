"""Agents execute tasks: an LLM behind an OpenAI-compatible API, or Duke, the local labeler."""

from decimal import Decimal

from django.db import models

from core.money import MoneyField

MONEY = {"max_digits": 19, "decimal_places": 4}


class Agent(models.Model):
    class Backend(models.TextChoices):
        OPENAI = "openai", "OpenAI-compatible LLM"
        DUKE = "duke", "Duke (local model)"

    name = models.SlugField(max_length=64, unique=True)
    backend = models.CharField(max_length=16, choices=Backend.choices, default=Backend.OPENAI)
    model = models.CharField(max_length=128, help_text="Model name sent to the API (LLM agents).")
    base_url = models.URLField(
        blank=True, help_text="OpenAI-compatible endpoint; empty uses OPENAI_BASE_URL or the OpenAI API."
    )
    price_per_unit = MoneyField(**MONEY, help_text="What a buyer pays per complexity unit.")
    # What the provider charges us per million tokens: the task's `cost`, and Duke's savings estimate.
    prompt_token_price = MoneyField(**MONEY, default=Decimal("0"))
    completion_token_price = MoneyField(**MONEY, default=Decimal("0"))
    success_count = models.PositiveIntegerField(default=0)
    failure_count = models.PositiveIntegerField(default=0)
    # Cache of the agent's ledger account, written in the same transaction as each payout.
    earnings = MoneyField(**MONEY, default=Decimal("0"))
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(price_per_unit__gte=0), name="agent_price_non_negative"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def tasks_done(self) -> int:
        return self.success_count + self.failure_count

    @property
    def success_rate(self) -> float | None:
        return self.success_count / self.tasks_done if self.tasks_done else None


class RateLimitBucket(models.Model):
    """Shared client-side rate-limit state of one key (an agent): see agents.ratelimit."""

    key = models.CharField(max_length=128, unique=True)
    requests = models.FloatField(default=0.0, help_text="Request tokens left.")
    tokens = models.FloatField(default=0.0, help_text="LLM tokens left; negative while in debt.")
    updated_ts = models.FloatField(default=0.0, help_text="Epoch seconds of the last refill.")
    blocked_until_ts = models.FloatField(default=0.0, help_text="Retry-After: none before (epoch s).")

    def __str__(self) -> str:
        return f"rate limit {self.key}"


class CircuitBreakerState(models.Model):
    """Shared circuit breaker of one key (an agent): see agents.ratelimit."""

    class State(models.TextChoices):
        CLOSED = "closed", "Closed"
        OPEN = "open", "Open"
        HALF_OPEN = "half_open", "Half-open (one trial call)"

    key = models.CharField(max_length=128, unique=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.CLOSED)
    failures = models.PositiveIntegerField(default=0, help_text="Consecutive retryable failures.")
    open_until_ts = models.FloatField(default=0.0, help_text="Epoch seconds; a trial call may start after.")
    trial_until_ts = models.FloatField(default=0.0, help_text="Epoch seconds; the trial call's deadline.")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"breaker {self.key}: {self.state}"
