from django.contrib import admin

from agents.models import Agent
from agents.pricing import reputation_multiplier


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "backend",
        "model",
        "price_per_unit",
        "success_count",
        "failure_count",
        "success_rate_display",
        "reputation",
        "earnings",
        "is_active",
    )
    list_filter = ("backend", "is_active")
    search_fields = ("name", "model")
    readonly_fields = ("success_count", "failure_count", "earnings", "created_at")

    @admin.display(description="success rate")
    def success_rate_display(self, agent: Agent) -> str:
        rate = agent.success_rate
        return "—" if rate is None else f"{rate:.1%}"

    @admin.display(description="reputation ×")
    def reputation(self, agent: Agent) -> str:
        return str(reputation_multiplier(agent.success_count, agent.failure_count))
