"""Accounts and the append-only double-entry ledger.

The models live here, in the ledger's code, but keep the app label ``tasks`` they were born with: their
tables (tasks_account, tasks_ledgerentry), migrations (tasks/migrations), admin URLs
(/admin/tasks/account/) and operators' permissions stay exactly as they were, so existing databases and
bookmarks need nothing. Moving the label too is one SeparateDatabaseAndState migration away when wanted.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models

from core.money import MoneyField

MONEY = {"max_digits": 19, "decimal_places": 4}
ZERO = Decimal("0.0000")


class Account(models.Model):
    """A ledger account. `balance` caches the sum of its entries, updated in the entry's transaction."""

    class Kind(models.TextChoices):
        BUYER = "buyer", "Buyer (available)"
        ESCROW = "escrow", "Buyer escrow (held for tasks)"
        AGENT = "agent", "Agent earnings"
        PLATFORM_REVENUE = "platform_revenue", "Platform fees"
        FUNDING = "funding", "Funding (money entering the system)"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT)
    agent = models.ForeignKey("agents.Agent", null=True, blank=True, on_delete=models.PROTECT)
    balance = MoneyField(**MONEY, default=ZERO)

    class Meta:
        app_label = "tasks"  # see the module docstring
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "user"],
                condition=models.Q(user__isnull=False),
                name="account_one_per_user_kind",
            ),
            models.UniqueConstraint(
                fields=["kind", "agent"],
                condition=models.Q(agent__isnull=False),
                name="account_one_per_agent",
            ),
            models.UniqueConstraint(
                fields=["kind"],
                condition=models.Q(user__isnull=True, agent__isnull=True),
                name="account_one_platform_per_kind",
            ),
            # Only the funding account is the source of money, so only it may go below zero.
            models.CheckConstraint(
                condition=models.Q(balance__gte=0) | models.Q(kind="funding"),
                name="account_balance_non_negative",
            ),
        ]

    def __str__(self) -> str:
        owner = self.user or self.agent or "platform"
        return f"{self.get_kind_display()}: {owner}"


class LedgerEntry(models.Model):
    """Append-only. Every `transaction_id` groups entries that sum to zero."""

    class Kind(models.TextChoices):
        CREDIT = "credit", "Credit"
        HOLD = "hold", "Hold"
        PAYOUT = "payout", "Payout"
        FEE = "fee", "Platform fee"
        RELEASE = "release", "Release"

    transaction_id = models.UUIDField(db_index=True)
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="entries")
    amount = MoneyField(**MONEY)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # By name, not by import: the ledger refers to a task by its id and never imports tasks.
    task = models.ForeignKey(
        "tasks.Task", null=True, blank=True, on_delete=models.PROTECT, related_name="ledger_entries"
    )
    memo = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        app_label = "tasks"  # see the module docstring
        ordering = ["created_at", "id"]
        verbose_name_plural = "ledger entries"
        constraints = [
            # One hold per task, and one settlement out of escrow (a payout or a release, never both,
            # never twice), whatever retries or crashes happen.
            models.UniqueConstraint(
                fields=["task"],
                condition=models.Q(kind="hold", amount__lt=0),
                name="ledger_one_hold_per_task",
            ),
            models.UniqueConstraint(
                fields=["task"],
                condition=models.Q(kind__in=["payout", "release"], amount__lt=0),
                name="ledger_one_settlement_per_task",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount} ({self.account})"
