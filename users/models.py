"""The custom user: buyers submit tasks, operators (staff) run the business."""

from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    class Role(models.TextChoices):
        BUYER = "buyer", "Buyer"
        OPERATOR = "operator", "Operator"

    # Overrides AICP_DAILY_SPEND_CAP for this buyer; empty means the global cap applies.
    daily_spend_cap = models.DecimalField(
        max_digits=19, decimal_places=4, null=True, blank=True, help_text="Empty: use AICP_DAILY_SPEND_CAP."
    )

    @property
    def role(self) -> str:
        return self.Role.OPERATOR if self.is_staff else self.Role.BUYER

    @property
    def is_operator(self) -> bool:
        return bool(self.is_staff)
