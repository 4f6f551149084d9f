from typing import Any

from django.contrib import admin
from django.db import models
from django.http import HttpRequest

from agents.models import Agent
from agents.pricing import quote, reputation_multiplier
from core.admin import money_text


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "backend",
        "model",
        "price_display",
        "quote_unit",
        "tasks_done_display",
        "success_rate_display",
        "reputation",
        "earnings_display",
        "is_active",
    )
    list_filter = ("backend", "is_active")
    search_fields = ("name", "model", "base_url")
    readonly_fields = (
        "success_count",
        "failure_count",
        "tasks_done_display",
        "success_rate_display",
        "reputation",
        "quote_unit",
        "earnings_display",
        "created_at",
    )
    fieldsets = (
        (None, {"fields": ("name", "backend", "model", "base_url", "is_active")}),
        ("Pricing", {"fields": ("price_per_unit", "prompt_token_price", "completion_token_price")}),
        (
            "Track record",
            {
                "fields": (
                    "success_count",
                    "failure_count",
                    "tasks_done_display",
                    "success_rate_display",
                    "reputation",
                    "quote_unit",
                    "earnings_display",
                    "created_at",
                )
            },
        ),
    )

    def formfield_for_dbfield(self, db_field: models.Field, request: HttpRequest, **kwargs: Any) -> Any:
        if isinstance(db_field, models.URLField):
            kwargs["assume_scheme"] = "https"  # an endpoint typed without a scheme is an https one
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def has_delete_permission(self, request: HttpRequest, obj: Agent | None = None) -> bool:
        # Tasks and ledger rows point at agents forever; retire one by deactivating it.
        return False

    @admin.display(description="price / unit", ordering="price_per_unit")
    def price_display(self, agent: Agent) -> str:
        return money_text(agent.price_per_unit)

    @admin.display(description="earnings", ordering="earnings")
    def earnings_display(self, agent: Agent) -> str:
        return money_text(agent.earnings)

    @admin.display(description="tasks done")
    def tasks_done_display(self, agent: Agent) -> int:
        return agent.tasks_done

    @admin.display(description="success rate")
    def success_rate_display(self, agent: Agent) -> str:
        rate = agent.success_rate
        return "—" if rate is None else f"{rate:.1%}"

    @admin.display(description="reputation ×")
    def reputation(self, agent: Agent) -> str:
        return str(reputation_multiplier(agent.success_count, agent.failure_count))

    @admin.display(description="quote, complexity 1")
    def quote_unit(self, agent: Agent) -> str:
        return money_text(
            quote(
                price_per_unit=agent.price_per_unit,
                complexity=1,
                success_count=agent.success_count,
                failure_count=agent.failure_count,
            )
        )
