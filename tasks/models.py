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

    class Priority(models.TextChoices):
        NORMAL = "normal", "Normal"
        BATCH = "batch", "Batch (OpenAI Batch API, cheaper, within 24 h)"

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
    callback_url = models.URLField(
        max_length=2000, blank=True, default="", help_text="Signed webhook on completion or failure."
    )
    priority = models.CharField(max_length=8, choices=Priority.choices, default=Priority.NORMAL)
    correct_label = models.CharField(max_length=200, blank=True, default="")
    # A labeling task's exact-repeat key (tasks.services.repeat): sha256 of its task type, label set and
    # normalised text; empty for free-form tasks, which are never answered from the repeat store.
    repeat_key = models.CharField(max_length=64, blank=True, default="", editable=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["buyer", "-created_at"]),
            models.Index(fields=["status", "lease_until"]),
            # The repeat store's lookup: the newest answer to an identical labeling task (partial: free-form
            # tasks, the majority by size, carry no key and cost the index nothing).
            models.Index(
                fields=["repeat_key", "-finished_at"],
                name="task_repeat_lookup",
                condition=~models.Q(repeat_key=""),
            ),
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


class WebhookDelivery(models.Model):
    """One event (task.completed / task.failed) to send to a task's callback_url, with its attempts.

    Written by the delivery job, never by the task's completing transaction: the hot path only enqueues.
    """

    class Event(models.TextChoices):
        COMPLETED = "task.completed", "task.completed"
        FAILED = "task.failed", "task.failed"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"  # not delivered yet; next_attempt_at says when it is tried again
        DELIVERED = "delivered", "Delivered"
        GAVE_UP = "gave_up", "Gave up"

    id = models.UUIDField(primary_key=True, default=time_ordered_uuid, editable=False)
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="webhook_deliveries")
    event = models.CharField(max_length=32, choices=Event.choices)
    url = models.URLField(max_length=2000)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # Retries stop AICP_WEBHOOK_RETRY_WINDOW_S after this (the first attempt, or an operator's re-send).
    window_started_at = models.DateTimeField()
    # A worker sending an attempt holds this lease, so a re-send and a scheduled retry cannot send together.
    lease_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(fields=["task", "event"], name="webhook_one_delivery_per_event")
        ]
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"{self.event} for task {short_id(self.task_id)} ({self.status})"


class WebhookAttempt(models.Model):
    """One POST of a delivery: the receiver's status (None: no answer), how long it took, what went wrong."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField()
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["delivery", "number"]
        constraints = [
            models.UniqueConstraint(fields=["delivery", "number"], name="webhook_attempt_number_once")
        ]

    def __str__(self) -> str:
        return f"attempt {self.number}: {self.status_code or self.error[:40]}"


class LLMBatch(models.Model):
    """One OpenAI Batch API job: the batch-priority tasks of one agent sent together (issue 21 item 4)."""

    class Status(models.TextChoices):
        IN_PROGRESS = "in_progress", "In progress"
        COMPLETED = "completed", "Completed"
        FELL_BACK = "fell_back", "Fell back to normal execution"

    id = models.UUIDField(primary_key=True, default=time_ordered_uuid, editable=False)
    agent = models.ForeignKey("agents.Agent", on_delete=models.PROTECT, related_name="llm_batches")
    provider_batch_id = models.CharField(max_length=128, unique=True)
    task_ids = models.JSONField(default=list, help_text="The tasks in the batch (their ids as strings).")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.IN_PROGRESS)
    provider_status = models.CharField(max_length=16, blank=True, default="")
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        verbose_name = "LLM batch"
        verbose_name_plural = "LLM batches"

    def __str__(self) -> str:
        return f"{self.provider_batch_id} ({len(self.task_ids)} tasks, {self.status})"
