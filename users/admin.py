from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import Count, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from core.admin import money_text
from users.models import User


def _related_model(accessor: str) -> type:
    # users never imports tasks: the balances and task counts are reached through the reverse relations.
    return User._meta.get_field(accessor).related_model


def _balance(kind: str) -> Coalesce:
    account = _related_model("account")
    accounts = account.objects.filter(user=OuterRef("pk"), kind=kind).values("balance")[:1]
    # Read back by the balance's own field: the column holds integer minor units (core.money).
    money = account._meta.get_field("balance")
    return Coalesce(Subquery(accounts, output_field=money), Value(0, output_field=money))


class RoleFilter(admin.SimpleListFilter):
    title = "role"
    parameter_name = "role"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return list(User.Role.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet[User]) -> QuerySet[User]:
        if self.value() == User.Role.OPERATOR:
            return queryset.filter(is_staff=True)
        if self.value() == User.Role.BUYER:
            return queryset.filter(is_staff=False)
        return queryset


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = (
        "username",
        "role",
        "available",
        "held",
        "task_count",
        "daily_spend_cap",
        "is_active",
        "last_login",
        "date_joined",
    )
    list_filter = (RoleFilter, "is_active", "is_superuser")
    search_fields = ("username", "email")
    readonly_fields = ("available", "held", "task_count", "accounts", "last_login", "date_joined")
    fieldsets = (
        *DjangoUserAdmin.fieldsets,
        ("Spending", {"fields": ("daily_spend_cap", "available", "held", "task_count", "accounts")}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: User | None = None) -> tuple[str, ...]:
        fields = tuple(super().get_readonly_fields(request, obj))
        if request.user.is_superuser:
            return fields
        # Operators run the business; handing out powers stays with superusers.
        return (*fields, "is_superuser", "groups", "user_permissions")

    def has_change_permission(self, request: HttpRequest, obj: User | None = None) -> bool:
        # An operator who could reset a superuser's password could become one.
        if obj is not None and obj.is_superuser and not request.user.is_superuser:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: User | None = None) -> bool:
        if obj is not None and obj.is_superuser and not request.user.is_superuser:
            return False
        return super().has_delete_permission(request, obj)

    def get_queryset(self, request: HttpRequest) -> QuerySet[User]:
        tasks = (
            _related_model("tasks")
            .objects.filter(buyer=OuterRef("pk"))
            .order_by()
            .values("buyer")
            .annotate(n=Count("pk"))
            .values("n")
        )
        return (
            super()
            .get_queryset(request)
            .annotate(
                _available=_balance("buyer"),
                _held=_balance("escrow"),
                _task_count=Coalesce(Subquery(tasks), Value(0)),
            )
        )

    @admin.display(description="available", ordering="_available")
    def available(self, user: User) -> str:
        return money_text(user._available)

    @admin.display(description="held in escrow", ordering="_held")
    def held(self, user: User) -> str:
        return money_text(user._held)

    @admin.display(description="tasks", ordering="_task_count")
    def task_count(self, user: User) -> int:
        return user._task_count

    @admin.display(description="ledger")
    def accounts(self, user: User) -> str:
        try:
            entries = reverse("admin:tasks_ledgerentry_changelist")
            accounts = reverse("admin:tasks_account_changelist")
        except NoReverseMatch:
            return "—"
        return format_html(
            '<a href="{}?user__id__exact={}">accounts</a> · <a href="{}?{}">ledger entries</a>',
            accounts,
            user.pk,
            entries,
            urlencode({"q": user.get_username()}),
        )
