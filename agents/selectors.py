"""Reads on agents."""

from django.conf import settings
from django.db.models import QuerySet

from agents.models import Agent
from aicp.exceptions import NotFound


def agent_list(*, include_inactive: bool = False) -> QuerySet[Agent]:
    agents = Agent.objects.all()
    return agents if include_inactive else agents.filter(is_active=True)


def agent_get(*, name: str) -> Agent:
    try:
        return Agent.objects.get(name=name)
    except Agent.DoesNotExist as exc:
        raise NotFound(f"No agent named {name!r}.", code="agent_not_found") from exc


def agent_default_llm() -> Agent:
    """The agent `auto` means when Duke does not take the task."""
    return agent_get(name=settings.AICP_DEFAULT_AGENT)


def agent_duke() -> Agent | None:
    return Agent.objects.filter(backend=Agent.Backend.DUKE, is_active=True).first()
