"""Tasks, their idempotency keys and drain slots (the money they move is in ledger.models)."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models

from core.ids import short_id, time_ordered_uuid
from core.money import MoneyField
from ledger.models import MONEY


class Task(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"

    FINAL_STATUSES = (Status.COMPLETED, Status.FAILED)

    id = models.UUIDField(primary_key=True, default=time_ordered_uuid, editable=False)
    # Not indexed alone: the (buyer, -created_at) index below leads with it.
    buyer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="tasks", db_index=False
    )
    description = models.TextField(max_length=8000)
    complexity = models.PositiveSmallIntegerField()
    task_type = models.SlugField(max_length=64, blank=True, default="")
    labels = models.JSONField(null=True, blank=True, help_text="Present: a labeling task.")
    requested_agent = models.CharField(max_length=64, default="auto")
    agent = models.ForeignKey(
        "agents.Agent", on_delete=models.PROTECT, related_name="assigned_tasks", help_text="Assigned agent."
    )
    executed_by = models.ForeignKey(
        "agents.Agent", on_delete=models.PROTECT, null=True, blank=True, related_name="executed_tasks"
    )
    # Not indexed alone: the (status, lease_until) index below leads with it.
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    result = models.TextField(blank=True, default="")
    confidence = models.FloatField(null=True, blank=True, help_text="Duke's calibrated confidence.")
    price = MoneyField(**MONEY, help_text="Quoted at submission; what the buyer pays on success.")
    cost = MoneyField(
        max_digits=19,
        decimal_places=8,
        default=Decimal("0"),
        help_text="Provider token cost of the LLM calls.",
    )
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    error_code = models.CharField(max_length=32, blank=True, default="")
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    not_before = models.DateTimeField(null=True, blank=True, help_text="Retry backoff: not claimed before.")
    accepted = models.BooleanField(null=True, blank=True, help_text="Buyer feedback.")
    correct_label = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["buyer", "-created_at"]),
            models.Index(fields=["status", "lease_until"]),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(complexity__gte=1, complexity__lte=10), name="task_complexity"
            ),
            models.CheckConstraint(condition=models.Q(price__gte=0), name="task_price_non_negative"),
        ]

    def __str__(self) -> str:
        return f"Task {self.short_id} ({self.status})"

    @property
    def short_id(self) -> str:
        return short_id(self.id)

    @property
    def is_labeling(self) -> bool:
        return bool(self.labels)

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL_STATUSES


class IdempotencyKey(models.Model):
    """A POST /tasks replay guard, per user, kept AICP_IDEMPOTENCY_TTL_H hours."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64, help_text="sha256 of the canonical JSON of the input.")
    task = models.ForeignKey(Task, on_delete=models.CASCADE)
    # The first response exactly as sent, so a replay is byte-for-byte the same answer even after the task
    # has moved on (a replay is "what did my first request get?", not "what is the task now?").
    response_status = models.PositiveSmallIntegerField(default=201)
    response_body = models.JSONField(default=dict, encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotency_key_per_user")]


class DrainSlot(models.Model):
    """One of AICP_DRAINERS places for a batch-executor job; a queued or running drainer leases it.

    Submissions enqueue a drainer only while a slot is free, so a burst of thousands of tasks costs a few
    jobs, not one job each; a dead drainer's lease runs out and frees its slot.
    """

    class State(models.TextChoices):
        IDLE = "idle", "Idle"
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"

    number = models.PositiveSmallIntegerField(primary_key=True)
    token = models.UUIDField(null=True, blank=True)
    state = models.CharField(max_length=8, choices=State.choices, default=State.IDLE)
    lease_until = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"drain slot {self.number}: {self.state}"
