"""Every error on an API path is JSON, whatever DEBUG says; the admin and the dashboard keep their pages."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.aicp.error_urls import LEAKED

pytestmark = pytest.mark.django_db


@pytest.fixture(params=[True, False], ids=["debug", "production"])
def debug(request, settings) -> bool:
    settings.DEBUG = request.param
    return request.param


@pytest.fixture
def client_seeing_500s() -> Client:
    return Client(raise_request_exception=False)


def _error(response) -> dict:
    assert response["Content-Type"] == "application/json", response.content[:300]
    return response.json()["error"]


def test_it_answers_an_unknown_path_with_json_404(debug, api_client):
    response = api_client.get("/no/such/route")
    assert response.status_code == 404
    assert _error(response) == {"code": "not_found", "message": "No resource at /no/such/route."}
    assert b"URLconf" not in response.content and b"tasks/" not in response.content


@pytest.mark.parametrize("path", ["/failing/api", "/failing/plain"])
def test_it_answers_an_unhandled_exception_with_json_500(debug, client_seeing_500s, settings, path, caplog):
    settings.ROOT_URLCONF = "tests.aicp.error_urls"
    response = client_seeing_500s.get(path, HTTP_ACCEPT="text/html,*/*;q=0.8")  # a browser

    assert response.status_code == 500
    assert _error(response)["code"] == "server_error"
    assert LEAKED.encode() not in response.content and b"Traceback" not in response.content
    # Still logged for the operator, with the detail the client does not see.
    assert any(LEAKED in (record.exc_text or str(record.exc_info)) for record in caplog.records)


def test_it_keeps_the_header_of_a_refused_method(debug, api_client):
    response = api_client.post("/health")
    assert response.status_code == 405
    assert _error(response)["code"] == "method_not_allowed"
    assert response["Allow"] == "GET"


def test_it_leaves_the_api_s_own_errors_alone(debug, api_client):
    response = api_client.get("/tasks")
    assert response.status_code == 401
    assert _error(response)["code"] == "not_authenticated"


def test_it_keeps_html_pages_for_the_dashboard_and_admin(debug, client_seeing_500s, settings, admin_client):
    settings.ROOT_URLCONF = "tests.aicp.error_urls"
    failing = client_seeing_500s.get("/dashboard/failing")
    assert failing.status_code == 500 and failing["Content-Type"].startswith("text/")
    missing = admin_client.get("/admin/no-such-page/")
    assert missing.status_code == 404 and missing["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("path", ["/static/no-such.css", "/dashboard/no-such-page", "/no-such-page/"])
def test_no_404_lists_the_url_patterns_even_with_debug_on(debug, client, path):
    """The attack run (docs/SECURITY.md) found Django's debug 404 page on page paths with DEBUG on."""
    response = client.get(path)
    assert response.status_code == 404
    assert b"URLconf" not in response.content and b"admin/" not in response.content
