from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse

from core.admin import ReadOnlyAdmin, admin_link, money_text, titled_filter
from core.exceptions import DomainError
from core.money import plain
from ledger.models import Account, LedgerEntry
from ledger.services import MAX_CREDIT, buyer_credit


class CreditForm(forms.Form):
    amount = forms.DecimalField(
        max_digits=19, decimal_places=4, min_value=Decimal("0.0001"), max_value=MAX_CREDIT
    )
    memo = forms.CharField(max_length=150, required=False, initial="operator credit")


@admin.register(Account)
class AccountAdmin(ReadOnlyAdmin):
    """Read-only balances; the credit action is the one way to add to a buyer's, through the ledger."""

    list_display = ("id", "kind", "user", "agent", "balance_display", "entries_link")
    list_filter = (("kind", titled_filter("account kind")),)
    ordering = ("kind", "id")
    search_fields = ("user__username", "agent__name")
    actions = ["credit_buyers"]

    @admin.display(description="balance", ordering="balance")
    def balance_display(self, account: Account) -> str:
        return money_text(account.balance)

    @admin.display(description="entries")
    def entries_link(self, account: Account) -> str:
        url = reverse("admin:tasks_ledgerentry_changelist") + f"?account__id__exact={account.pk}"
        return admin_link(url, "ledger rows")

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
            self.message_user(request, f"Credited {plain(amount, 4)} to {names}.", messages.SUCCESS)
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
    """Newest first; an entry links to its task and to the other legs of its transaction."""

    list_display = (
        "created_at",
        "short_transaction",
        "kind",
        "account",
        "amount_display",
        "task_link",
    )
    # Two fields are both called "kind": each filter says which one it is (one used to show "By kind" twice).
    list_filter = (
        ("kind", titled_filter("entry kind")),
        ("account__kind", titled_filter("account kind")),
        "created_at",
    )
    ordering = ("-created_at", "-id")
    date_hierarchy = "created_at"
    list_per_page = 100
    search_fields = ("transaction_id", "task__id", "account__user__username", "account__agent__name", "memo")
    list_select_related = ("account", "account__user", "account__agent")

    @admin.display(description="amount", ordering="amount")
    def amount_display(self, entry: LedgerEntry) -> str:
        return money_text(entry.amount)

    @admin.display(description="transaction", ordering="transaction_id")
    def short_transaction(self, entry: LedgerEntry) -> str:
        url = reverse("admin:tasks_ledgerentry_changelist") + f"?transaction_id={entry.transaction_id}"
        return admin_link(url, str(entry.transaction_id)[:8])

    @admin.display(description="task", ordering="task")
    def task_link(self, entry: LedgerEntry) -> str:
        if entry.task_id is None:
            return "—"
        return admin_link(reverse("admin:tasks_task_change", args=[entry.task_id]), str(entry.task_id)[:8])
