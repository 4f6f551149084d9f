"""Reads on agents."""

from django.conf import settings
from django.db import connections
from django.db.models import QuerySet

from agents.models import Agent
from core.exceptions import NotFound
from core.perf.db import fetch_models


def agent_list(*, include_inactive: bool = False) -> QuerySet[Agent]:
    agents = Agent.objects.all()
    return agents if include_inactive else agents.filter(is_active=True)


def agent_get(*, name: str) -> Agent:
    # Every group of submissions reads its agent, fresh (the quote uses the current reputation counts).
    # Read like the ORM reads it, without building the statement: a fraction of .get()'s cost.
    table = connections[Agent.objects.db].ops.quote_name(Agent._meta.db_table)
    agent = next(iter(fetch_models(Agent, f"SELECT * FROM {table} WHERE name = %s", [name])), None)
    if agent is None:
        raise NotFound(f"No agent named {name!r}.", code="agent_not_found")
    return agent


def agent_default_llm() -> Agent:
    """The agent `auto` means when Duke does not take the task."""
    return agent_get(name=settings.AICP_DEFAULT_AGENT)


def agent_duke() -> Agent | None:
    return Agent.objects.filter(backend=Agent.Backend.DUKE, is_active=True).first()
