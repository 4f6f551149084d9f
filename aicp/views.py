"""Site-level views: health."""

from __future__ import annotations

import time

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from django.views.defaults import page_not_found
from rest_framework.exceptions import AuthenticationFailed

from aicp.api_errors import error_body, is_page_path
from users.authentication import JWTAuthentication


def check_database() -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return {"ok": True, "engine": connection.vendor}
    except Exception as exc:  # noqa: BLE001 — health reports, it does not raise
        return {"ok": False, "engine": connection.vendor, "error": str(exc)}


def check_queue() -> dict:
    from django_q.brokers import get_broker
    from django_q.models import Success
    from django_q.status import Stat

    try:
        broker = get_broker()
        backlog = broker.queue_size()
        clusters = Stat.get_all(broker=broker)
        last_success = Success.objects.order_by("-stopped").values_list("stopped", flat=True).first()
        return {
            "ok": True,
            "broker": "redis" if settings.AICP_REDIS_URL else "orm",
            "backlog": backlog,
            "clusters": len(clusters),
            "last_job_finished": last_success.isoformat() if last_success else None,
        }
    except Exception as exc:  # noqa: BLE001
        return {"ok": False, "error": str(exc)}


def llm_backend_status() -> dict:
    return {
        "simulated": settings.AICP_LLM_SIMULATED,
        "base_url": settings.OPENAI_BASE_URL or "https://api.openai.com/v1",
        "api_key_set": bool(settings.OPENAI_API_KEY),
    }


def llm_health() -> dict:
    """Which LLM answers tasks, for operators: the bundled simulator or the OpenAI API."""
    base_url = settings.OPENAI_BASE_URL or "https://api.openai.com/v1"
    if settings.AICP_LLM_SIMULATED:
        # run_system hands the simulator a placeholder key: "a key is set" would read as a real backend.
        return {"backend": "simulator", "base_url": base_url}
    return {"backend": "openai", "base_url": base_url, "api_key_set": bool(settings.OPENAI_API_KEY)}


def _is_operator(request: HttpRequest) -> bool:
    """Staff by session (the dashboard's login) or by a bearer token; a bad token is just anonymous."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return bool(user.is_staff)
    try:
        authenticated = JWTAuthentication().authenticate(request)
    except AuthenticationFailed:
        return False
    return authenticated is not None and bool(authenticated[0].is_staff)


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """Anyone learns whether the service is up; only operators see what is behind it."""
    started = time.perf_counter()
    database = check_database()
    queue = check_queue()
    up = database["ok"] and queue["ok"]
    body: dict = {"status": "up" if up else "down"}
    if _is_operator(request):
        body |= {
            "database": database,
            "queue": queue,
            "llm": llm_health(),
            "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
        }
    response = JsonResponse(body, status=200 if up else 503)
    response["Cache-Control"] = "no-store"
    return response


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler404: a path no route matches answers in the API's error shape, not an HTML page."""
    if is_page_path(request.path):
        return page_not_found(request, exception)
    return JsonResponse(error_body(404, request.path), status=404)
