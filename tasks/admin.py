from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html_join

from core.admin import DASH, ReadOnlyAdmin, cost_text, money_text, percent_text
from core.exceptions import DomainError
from duke.models import ModelVersion, ServedTask, TrainingData
from ledger.models import LedgerEntry
from tasks.models import IdempotencyKey, LLMBatch, Task
from tasks.services.submission import task_resubmit


class LabelingFilter(admin.SimpleListFilter):
    title = "labeling or free-form"
    parameter_name = "kind"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("labeling", "Labeling"), ("free", "Free-form")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Task]) -> QuerySet[Task]:
        if self.value() == "labeling":
            return queryset.filter(labels__isnull=False)
        if self.value() == "free":
            return queryset.filter(labels__isnull=True)
        return queryset


class TaskLedgerInline(admin.TabularInline):
    """The money a task moved, on the task's page; read-only like every ledger row."""

    model = LedgerEntry
    fields = ("created_at", "kind", "account", "amount_display", "memo", "transaction_id")
    readonly_fields = fields
    ordering = ("-created_at", "-id")
    extra = 0
    can_delete = False
    verbose_name_plural = "ledger entries for this task"

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description="amount")
    def amount_display(self, entry: LedgerEntry) -> str:
        return money_text(entry.amount)


TASK_FIELDSETS = (
    ("Task", ("id", "buyer", "status", "task_type", "complexity", "labels", "description")),
    ("Related", ("related",)),
    ("Result", ("result", "confidence_display", "error_code", "error", "accepted", "correct_label")),
    (
        "Execution",
        ("requested_agent", "agent", "executed_by", "attempts", "latency_ms", "duration"),
    ),
    ("Money and tokens", ("price_display", "cost_display", "prompt_tokens", "completion_tokens")),
    ("Timeline", ("created_at", "started_at", "finished_at", "updated_at", "lease_until", "not_before")),
)


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = (
        "short_id",
        "created_at",
        "buyer",
        "task_type",
        "status",
        "executor",
        "price_display",
        "cost_display",
        "attempts",
        "latency_ms",
        "result_preview",
    )
    list_filter = ("status", LabelingFilter, "executed_by", "agent", "task_type", "error_code", "created_at")
    search_fields = ("id", "description", "result", "buyer__username")
    readonly_fields = [field.name for field in Task._meta.fields] + [
        "duration",
        "related",
        "confidence_display",
        "price_display",
        "cost_display",
    ]
    inlines = [TaskLedgerInline]
    actions = ["retry_failed"]
    date_hierarchy = "created_at"
    list_select_related = ("buyer", "agent", "executed_by")
    list_per_page = 50

    def get_fieldsets(self, request: HttpRequest, obj: Task | None = None) -> list:
        listed = {name for _, names in TASK_FIELDSETS for name in names} | {"confidence", "price", "cost"}
        # A field added to the model later still shows, rather than silently vanishing from the page.
        others = tuple(f.name for f in Task._meta.fields if f.name not in listed)
        fieldsets = [(title, {"fields": names}) for title, names in TASK_FIELDSETS]
        return fieldsets + ([("Other", {"fields": others})] if others else [])

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="executor", ordering="executed_by__name")
    def executor(self, task: Task) -> str:
        if task.executed_by is not None:
            return task.executed_by.name
        return f"{task.agent.name} (assigned)"

    @admin.display(description="price", ordering="price")
    def price_display(self, task: Task) -> str:
        return money_text(task.price)

    @admin.display(description="LLM cost", ordering="cost")
    def cost_display(self, task: Task) -> str:
        return cost_text(task.cost)

    @admin.display(description="confidence")
    def confidence_display(self, task: Task) -> str:
        return percent_text(task.confidence)

    @admin.display(description="links")
    def related(self, task: Task) -> str:
        """The task's ledger rows, its training sample and the Duke version that served it."""
        links = []
        entries = task.ledger_entries.count()
        ledger = reverse("admin:tasks_ledgerentry_changelist") + f"?task__id__exact={task.pk}"
        links.append((ledger, f"{entries} ledger row{'s' if entries != 1 else ''}"))
        sample = TrainingData.objects.filter(task_id=task.pk).values_list("pk", flat=True).first()
        if sample is not None:
            links.append((reverse("admin:duke_trainingdata_change", args=[sample]), "training sample"))
        served = ServedTask.objects.filter(task_id=task.pk).values_list("pk", "model_version").first()
        if served is not None:
            links.append(
                (reverse("admin:duke_servedtask_change", args=[served[0]]), "Duke's answer and audit")
            )
            version = ModelVersion.objects.filter(number=served[1]).values_list("pk", flat=True).first()
            if version is not None:
                url = reverse("admin:duke_modelversion_change", args=[version])
                links.append((url, f"served by Duke v{served[1]}"))
        if not links:
            return DASH
        return format_html_join(" · ", '<a href="{}">{}</a>', links)

    @admin.display(description="result")
    def result_preview(self, task: Task) -> str:
        # Plain text: the admin escapes it, and LLM output is untrusted.
        text = f"{task.error_code}: {task.error}" if task.status == Task.Status.FAILED else task.result
        return text if len(text) <= 80 else text[:79] + "…"

    @admin.display(description="duration")
    def duration(self, task: Task) -> str:
        if task.started_at is None or task.finished_at is None:
            return "—"
        return f"{(task.finished_at - task.started_at).total_seconds():.2f} s"

    @admin.action(description="Retry selected failed tasks (resubmits with a new quote)")
    def retry_failed(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        failed = list(queryset.filter(status=Task.Status.FAILED))
        if not failed:
            self.message_user(request, "None of the selected tasks has failed.", messages.WARNING)
            return
        retried = 0
        for task in failed:
            try:
                task_resubmit(task_id=task.pk)
                retried += 1
            except DomainError as exc:
                self.message_user(request, f"Task {task.short_id}: {exc.message}", messages.ERROR)
        if retried:
            self.message_user(request, f"Resubmitted {retried} failed task(s).", messages.SUCCESS)


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(ReadOnlyAdmin):
    list_display = ("user", "key", "task", "created_at")
    search_fields = ("key", "user__username")


# Webhook deliveries (issue 21): registered by their own module.
from tasks.webhooks.admin import WebhookDeliveryAdmin  # noqa: E402, F401


@admin.register(LLMBatch)
class LLMBatchAdmin(ReadOnlyAdmin):
    """OpenAI Batch API jobs of batch-priority tasks (issue 21 item 4)."""

    list_display = (
        "provider_batch_id",
        "agent",
        "status",
        "provider_status",
        "task_count",
        "created_at",
        "finished_at",
    )
    list_filter = ("status", "agent", "created_at")
    search_fields = ("provider_batch_id",)

    @admin.display(description="tasks")
    def task_count(self, batch: LLMBatch) -> int:
        return len(batch.task_ids)
