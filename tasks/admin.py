from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from core.exceptions import DomainError
from tasks.models import Account, IdempotencyKey, LedgerEntry, Task
from tasks.services import MAX_CREDIT, buyer_credit, task_resubmit


class ReadOnlyAdmin(admin.ModelAdmin):
    """Money rows are append-only: the admin shows them and never edits or deletes them."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class LabelingFilter(admin.SimpleListFilter):
    title = "kind"
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
    fields = ("created_at", "kind", "account", "amount", "memo", "transaction_id")
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = "ledger entries for this task"

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


TASK_FIELDSETS = (
    ("Task", ("id", "buyer", "status", "task_type", "complexity", "labels", "description")),
    ("Result", ("result", "confidence", "error_code", "error", "accepted", "correct_label")),
    (
        "Execution",
        ("requested_agent", "agent", "executed_by", "attempts", "latency_ms", "duration"),
    ),
    ("Money and tokens", ("price", "cost", "prompt_tokens", "completion_tokens")),
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
        "price",
        "cost",
        "attempts",
        "latency_ms",
        "result_preview",
    )
    list_filter = ("status", LabelingFilter, "executed_by", "agent", "task_type", "error_code", "created_at")
    search_fields = ("id", "description", "result", "buyer__username")
    readonly_fields = [field.name for field in Task._meta.fields] + ["duration"]
    inlines = [TaskLedgerInline]
    actions = ["retry_failed"]
    date_hierarchy = "created_at"
    list_select_related = ("buyer", "agent", "executed_by")
    list_per_page = 50

    def get_fieldsets(self, request: HttpRequest, obj: Task | None = None) -> list:
        listed = {name for _, names in TASK_FIELDSETS for name in names}
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


class CreditForm(forms.Form):
    amount = forms.DecimalField(
        max_digits=19, decimal_places=4, min_value=Decimal("0.0001"), max_value=MAX_CREDIT
    )
    memo = forms.CharField(max_length=150, required=False, initial="operator credit")


@admin.register(Account)
class AccountAdmin(ReadOnlyAdmin):
    """Read-only balances; the credit action is the one way to add to a buyer's, through the ledger."""

    list_display = ("id", "kind", "user", "agent", "balance")
    list_filter = ("kind",)
    search_fields = ("user__username", "agent__name")
    actions = ["credit_buyers"]

    def has_credit_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_active and request.user.is_staff)

    @admin.action(description="Credit the selected buyers", permissions=["credit"])
    def credit_buyers(self, request: HttpRequest, queryset: QuerySet[Account]) -> TemplateResponse | None:
        accounts = list(queryset.filter(kind=Account.Kind.BUYER, user__isnull=False).select_related("user"))
        if not accounts:
            self.message_user(request, "Select buyers' available-balance accounts to credit.", messages.ERROR)
            return None
        form = CreditForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            amount = form.cleaned_data["amount"]
            memo = f"{form.cleaned_data['memo'] or 'operator credit'} (admin, by {request.user.username})"
            try:
                with transaction.atomic():
                    for account in accounts:
                        buyer_credit(user_id=account.user_id, amount=amount, memo=memo)
            except DomainError as exc:
                self.message_user(request, exc.message, messages.ERROR)
                return None
            names = ", ".join(account.user.username for account in accounts)
            self.message_user(request, f"Credited {amount} to {names}.", messages.SUCCESS)
            return None
        return TemplateResponse(
            request,
            "admin/tasks/account/credit_buyers.html",
            {
                **self.admin_site.each_context(request),
                "title": "Credit buyers",
                "opts": self.model._meta,
                "accounts": accounts,
                "form": form,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            },
        )


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "transaction_id", "kind", "account", "amount", "task")
    list_filter = ("kind", "account__kind")
    search_fields = ("transaction_id", "task__id", "account__user__username", "account__agent__name", "memo")
    list_select_related = ("account", "account__user", "account__agent")


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(ReadOnlyAdmin):
    list_display = ("user", "key", "task", "created_at")
    search_fields = ("key", "user__username")
