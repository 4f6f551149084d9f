"""Duke's data: training samples, model versions, and the watermark that triggers retraining."""

from __future__ import annotations

from decimal import Decimal

from django.db import models

from core.money import MoneyField


class TrainingData(models.Model):
    class Split(models.TextChoices):
        TRAIN = "train", "Train"
        VALIDATION = "validation", "Validation"

    class Source(models.TextChoices):
        LLM = "llm", "LLM answer"
        BUYER = "buyer", "Buyer correction"

    task_id = models.UUIDField(unique=True, help_text="The task this sample came from (one sample per task).")
    input_text = models.TextField()
    task_type = models.CharField(max_length=64, blank=True, default="", db_index=True)
    complexity = models.PositiveSmallIntegerField(default=1)
    labels = models.JSONField(null=True, blank=True, help_text="The label set; empty for free-form tasks.")
    output = models.TextField(help_text="The LLM's label (labeling) or text (free-form).")
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.LLM)
    correct_label = models.CharField(
        max_length=200, blank=True, default="", help_text="A buyer's correction; overrides the LLM's label."
    )
    split = models.CharField(max_length=16, choices=Split.choices, db_index=True)
    embedding = models.BinaryField(null=True, blank=True, editable=False, help_text="MiniLM, float32 x 384.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "training data"
        indexes = [models.Index(fields=["split", "created_at"])]

    def __str__(self) -> str:
        return f"{self.task_type or 'untyped'}: {self.label!r}"

    @property
    def is_labeling(self) -> bool:
        return bool(self.labels)

    @property
    def label(self) -> str:
        """The training target: a buyer's correction wins over the LLM's answer."""
        return self.correct_label or self.output


class SampleCounter(models.Model):
    """A single row; an atomic increment hands every labeling sample a unique ordinal."""

    samples = models.PositiveIntegerField(default=0)


class TrainingTrigger(models.Model):
    """The watermark: one row per DUKE_TRAIN_EVERY samples, unique, so exactly one training is enqueued."""

    sample_ordinal = models.PositiveIntegerField(unique=True)
    reason = models.CharField(max_length=16, default="samples")
    created_at = models.DateTimeField(auto_now_add=True)
    # The version whose training covered this trigger. A trigger whose job found another training
    # running stays unclaimed, and that training enqueues one more when it finishes: none is lost.
    version = models.PositiveIntegerField(null=True, blank=True, db_index=True)

    def __str__(self) -> str:
        return f"training at sample {self.sample_ordinal}"


class ModelVersion(models.Model):
    class Status(models.TextChoices):
        TRAINING = "training", "Training"
        CANDIDATE = "candidate", "Candidate"
        PRODUCTION = "production", "Production"
        RETIRED = "retired", "Retired"
        FAILED = "failed", "Failed"

    number = models.PositiveIntegerField(unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.TRAINING, db_index=True)
    train_samples = models.PositiveIntegerField(default=0)
    validation_samples = models.PositiveIntegerField(default=0)
    accuracy = models.FloatField(
        null=True, blank=True, help_text="Out-of-fold, on the samples it trained on."
    )
    macro_f1 = models.FloatField(null=True, blank=True)
    per_task_type = models.JSONField(default=dict, blank=True)
    thresholds = models.JSONField(
        default=dict, blank=True, help_text="Per task type: confidence threshold and expected coverage."
    )
    promotion = models.JSONField(default=dict, blank=True, help_text="The promotion gate's verdict.")
    epoch = models.PositiveIntegerField(default=0)
    epochs = models.PositiveIntegerField(default=0)
    training_seconds = models.FloatField(null=True, blank=True)
    trained_up_to = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="The newest sample (pk) it trained on: later samples are out-of-sample for it.",
    )
    artifact_path = models.CharField(max_length=500, blank=True, default="")
    artifact_sha256 = models.CharField(max_length=64, blank=True, default="")
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    promoted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-number"]
        constraints = [
            models.UniqueConstraint(
                fields=["status"], condition=models.Q(status="production"), name="one_production_version"
            ),
            models.UniqueConstraint(
                fields=["status"], condition=models.Q(status="training"), name="one_training_at_a_time"
            ),
        ]

    def __str__(self) -> str:
        return f"Duke v{self.number} ({self.status})"


class ServedTask(models.Model):
    """One row per task Duke answered itself: its answer, what the LLM would have cost, the live check."""

    class Audit(models.TextChoices):
        NONE = "", "Not sampled"
        PENDING = "pending", "Sent to the LLM"
        AGREED = "agreed", "LLM agreed"
        DISAGREED = "disagreed", "LLM disagreed"
        FAILED = "failed", "LLM call failed"

    class Verdict(models.TextChoices):
        NONE = "", "No feedback"
        ACCEPTED = "accepted", "Buyer accepted"
        REJECTED = "rejected", "Buyer rejected or corrected"

    task_id = models.UUIDField(unique=True)
    task_type = models.CharField(max_length=64, blank=True, default="", db_index=True)
    model_version = models.PositiveIntegerField(help_text="The production version that answered.")
    label = models.CharField(max_length=200)
    confidence = models.FloatField()
    price = MoneyField(max_digits=19, decimal_places=4, help_text="What the buyer paid Duke.")
    llm_agent = models.CharField(max_length=64, help_text="The LLM agent `auto` would have used.")
    llm_price = MoneyField(
        max_digits=19, decimal_places=4, help_text="That agent's quote at the moment Duke served the task."
    )
    llm_cost_estimate = MoneyField(
        max_digits=19, decimal_places=8, help_text="Estimated provider token cost of the avoided LLM call."
    )
    audit = models.CharField(max_length=16, choices=Audit.choices, blank=True, default=Audit.NONE)
    audit_label = models.CharField(max_length=200, blank=True, default="")
    audit_cost = MoneyField(
        max_digits=19, decimal_places=8, default=0, help_text="Provider cost of the audit call (ours)."
    )
    verdict = models.CharField(max_length=16, choices=Verdict.choices, blank=True, default=Verdict.NONE)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["model_version", "task_type"])]

    def __str__(self) -> str:
        return f"Duke v{self.model_version} served {self.task_type or 'untyped'}: {self.label!r}"

    @property
    def saved(self) -> Decimal:
        """What the buyer saved against the LLM's quote."""
        return self.llm_price - self.price


class RoutingState(models.Model):
    """Routing switch for one task type on one production version; a new version starts with none."""

    task_type = models.CharField(max_length=64, blank=True, default="")
    model_version = models.PositiveIntegerField()
    suspended = models.BooleanField(default=False)
    suspended_at = models.DateTimeField(null=True, blank=True)
    reason = models.CharField(max_length=300, blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["model_version", "task_type"], name="routing_state_per_version_type"
            )
        ]

    def __str__(self) -> str:
        state = "suspended" if self.suspended else "routing"
        return f"v{self.model_version} {self.task_type or 'untyped'}: {state}"
