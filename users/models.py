"""The custom user: buyers submit tasks, operators (staff) run the business."""

import secrets

from django.contrib.auth.models import AbstractUser
from django.db import models

from core.money import MoneyField


def new_webhook_secret() -> str:
    """A fresh signing key for a buyer's webhooks: 32 random bytes, hex (prefixed so it is recognisable)."""
    return "whsec_" + secrets.token_hex(32)


class User(AbstractUser):
    class Role(models.TextChoices):
        BUYER = "buyer", "Buyer"
        OPERATOR = "operator", "Operator"

    # Overrides AICP_DAILY_SPEND_CAP for this buyer; empty means the global cap applies.
    daily_spend_cap = MoneyField(
        max_digits=19, decimal_places=4, null=True, blank=True, help_text="Empty: use AICP_DAILY_SPEND_CAP."
    )

    webhook_secret = models.CharField(
        max_length=80, default=new_webhook_secret, help_text="Signs this buyer's webhooks (HMAC-SHA256)."
    )

    @property
    def role(self) -> str:
        return self.Role.OPERATOR if self.is_staff else self.Role.BUYER

    @property
    def is_operator(self) -> bool:
        return bool(self.is_staff)


class ThrottleCounter(models.Model):
    """One client's requests in its current window for one throttle scope (users/throttles.py).

    The window opens at the client's first request and lasts the scope's period; the count only ever
    moves by a conditional UPDATE, so concurrent requests cannot pass the limit together.
    """

    scope = models.CharField(max_length=32)
    client = models.CharField(max_length=128)
    hits = models.PositiveIntegerField()
    window_started_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["scope", "client"], name="throttle_one_counter")]
        indexes = [models.Index(fields=["scope", "window_started_at"], name="throttle_window")]

    def __str__(self) -> str:
        return f"{self.scope} {self.client}: {self.hits}"
