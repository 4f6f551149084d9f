"""Template context shared by every page."""

from django.conf import settings
from django.http import HttpRequest


def llm_backend(request: HttpRequest) -> dict:
    return {"llm_simulated": settings.AICP_LLM_SIMULATED}
