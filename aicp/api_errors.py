"""The API answers errors as JSON in every mode: no Django debug page, no HTML error page.

With DEBUG on, Django answers an unknown path with its debug page listing every URL pattern (handler404
is not consulted) and an exception with a traceback page; with DEBUG off, with its small HTML pages.
This middleware sits outside every other one and turns any such error answer on an API path into the
API's error shape, `{"error": {"code", "message"}}`, keeping the status and headers (Allow,
Retry-After). Answers the API's views shaped themselves (DRF responses, JSON) pass untouched; the
pages people browse (admin, dashboard, API docs) keep Django's pages. The exception itself is still
logged by Django (`django.request`) before its answer gets here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from http import HTTPStatus

from django.http import HttpRequest, HttpResponse, HttpResponseNotFound
from django.utils.html import escape

# The pages people browse; everything else is the JSON API.
PAGE_PREFIXES = ("/admin/", "/dashboard", "/api/docs", "/static/")

# A sentence of django/views/templates/technical_404.html, the page that lists the URLconf's patterns.
TECHNICAL_404_MARKER = b"Using the URLconf defined in"

SERVER_ERROR_MESSAGE = "The server hit an unexpected error; it has been logged."

_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    500: "server_error",
}


def is_page_path(path: str) -> bool:
    return path.startswith(PAGE_PREFIXES)


def error_body(status: int, path: str) -> dict:
    if status == 404:
        message = f"No resource at {path}."
    elif status >= 500:
        message = SERVER_ERROR_MESSAGE
    else:
        try:
            message = HTTPStatus(status).phrase + "."
        except ValueError:
            message = "Request refused."
    code = _CODES.get(status, "server_error" if status >= 500 else "error")
    return {"error": {"code": code, "message": message}}


def _lists_the_url_patterns(response: HttpResponse) -> bool:
    """Django's debug 404 page (DEBUG on), which names every URL pattern; never a page a view shaped."""
    return not response.streaming and TECHNICAL_404_MARKER in response.content


def _shaped_by_the_api(response: HttpResponse) -> bool:
    if hasattr(response, "accepted_renderer"):  # a DRF Response: the exception handler shaped it
        return True
    media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
    return media_type == "application/json" or media_type.endswith("+json")


class JsonApiErrorsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code == 404 and is_page_path(request.path) and _lists_the_url_patterns(response):
            # A page path keeps an HTML page, but not Django's debug 404: it lists every URL pattern.
            return HttpResponseNotFound(
                "<!doctype html><title>Not found</title><h1>Not found</h1>"
                f"<p>No page at {escape(request.path)}.</p>"
            )
        if (
            response.status_code < 400
            or response.streaming
            or is_page_path(request.path)
            or _shaped_by_the_api(response)
        ):
            return response
        response.content = json.dumps(error_body(response.status_code, request.path)).encode()
        response.headers["Content-Type"] = "application/json"
        if "Content-Length" in response.headers:
            response.headers["Content-Length"] = str(len(response.content))
        return response
