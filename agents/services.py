"""Writes on agents. Called by tasks with plain values, inside the caller's transaction."""

from decimal import Decimal

from django.db import transaction
from django.db.models import F

from agents.models import Agent
from core.money import money_add


@transaction.atomic
def agent_record_outcome(
    *, agent_id: int, success: bool, earned: Decimal = Decimal("0"), count: int = 1
) -> None:
    """Counts ``count`` final tasks for the agent's reputation; `earned` mirrors their ledger payouts.

    ``earnings`` moves by an integer addition of minor units (core.money), exact on every backend.
    """
    counter = "success_count" if success else "failure_count"
    Agent.objects.filter(pk=agent_id).update(
        **{counter: F(counter) + count, "earnings": money_add(Agent, "earnings", earned)}
    )


@transaction.atomic
def agent_record_correction(*, agent_id: int) -> None:
    """A buyer's correction turns one of the agent's successes into a failure."""
    Agent.objects.filter(pk=agent_id, success_count__gt=0).update(
        success_count=F("success_count") - 1, failure_count=F("failure_count") + 1
    )
