"""Webhook deliveries in the admin: each with its attempts, and a re-send action."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest

from core.admin import ReadOnlyAdmin
from core.exceptions import DomainError
from tasks.models import WebhookAttempt, WebhookDelivery
from tasks.services.webhooks import webhook_resend


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    fields = ("number", "started_at", "status_code", "duration_ms", "error")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = (
        "task",
        "event",
        "url",
        "status",
        "attempts",
        "next_attempt_at",
        "delivered_at",
        "created_at",
    )
    list_filter = ("status", "event", "created_at")
    search_fields = ("task__id", "url", "task__buyer__username")
    list_select_related = ("task",)
    inlines = [WebhookAttemptInline]
    actions = ["resend"]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    @admin.action(description="Re-send selected webhooks now (a fresh 24 h of retries)")
    def resend(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        sent = 0
        for delivery in queryset:
            try:
                webhook_resend(delivery_id=delivery.pk)
                sent += 1
            except DomainError as exc:
                self.message_user(request, f"{delivery}: {exc.message}", messages.WARNING)
        if sent:
            self.message_user(request, f"Re-sending {sent} webhook(s).", messages.SUCCESS)
