from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from aicp.exceptions import DomainError
from tasks.models import Account, IdempotencyKey, LedgerEntry, Task
from tasks.services import task_resubmit


class ReadOnlyAdmin(admin.ModelAdmin):
    """Money rows are append-only: the admin shows them and never edits or deletes them."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = (
        "short_id",
        "buyer",
        "task_type",
        "status",
        "agent",
        "executed_by",
        "price",
        "attempts",
        "latency_ms",
        "created_at",
    )
    list_filter = ("status", "agent", "executed_by", "task_type")
    search_fields = ("id", "description", "result", "buyer__username")
    readonly_fields = [field.name for field in Task._meta.fields]
    actions = ["retry_failed"]
    date_hierarchy = "created_at"
    list_select_related = ("buyer", "agent", "executed_by")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Retry selected failed tasks (resubmits with a new quote)")
    def retry_failed(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        retried = 0
        for task in queryset.filter(status=Task.Status.FAILED):
            try:
                task_resubmit(task_id=task.pk)
                retried += 1
            except DomainError as exc:
                self.message_user(request, f"Task {task.short_id}: {exc.message}", messages.ERROR)
        self.message_user(request, f"Resubmitted {retried} failed task(s).", messages.SUCCESS)


@admin.register(Account)
class AccountAdmin(ReadOnlyAdmin):
    list_display = ("id", "kind", "user", "agent", "balance")
    list_filter = ("kind",)
    search_fields = ("user__username", "agent__name")


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
