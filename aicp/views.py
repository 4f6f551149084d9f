"""Site-level views: health."""

from __future__ import annotations

import time

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from django.views.defaults import page_not_found


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


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    started = time.perf_counter()
    database = check_database()
    queue = check_queue()
    body = {
        "status": "ok" if database["ok"] and queue["ok"] else "degraded",
        "database": database,
        "queue": queue,
        "llm": llm_backend_status(),
        "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
    }
    return JsonResponse(body, status=200 if body["status"] == "ok" else 503)


# The pages people browse; everything else is the JSON API.
_HTML_PREFIXES = ("/admin/", "/dashboard", "/api/docs", "/static/")


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler404: a path no route matches answers in the API's error shape, not an HTML page."""
    if request.path.startswith(_HTML_PREFIXES):
        return page_not_found(request, exception)
    body = {"error": {"code": "not_found", "message": f"No resource at {request.path}."}}
    return JsonResponse(body, status=404)
