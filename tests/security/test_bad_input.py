"""Hostile bodies and query strings get a 4xx in the API's error shape, never a 5xx, on every route."""

from __future__ import annotations

import pytest
from django.conf import settings

from tasks.models import Task
from tests.factories import submit
from tests.security.routes import all_routes

pytestmark = pytest.mark.django_db

WRITE_ROUTES = [route for route in all_routes() if route.is_api and "post" in route.methods()]
READ_ROUTES = [route for route in all_routes() if route.is_api and "get" in route.methods()]

_JSON = "application/json"
BAD_BODIES = {
    "oversized": (b'{"description": "' + b"x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1) + b'"}', _JSON),
    "deep-array": (b"[" * 100_000 + b"]" * 100_000, _JSON),
    "deep-object": (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, _JSON),
    "not-utf8": (b'{"description": "caf\xe9", "complexity": 1}', _JSON),
    "bom-garbage": (b"\xff\xfe\x00{}", _JSON),
    "utf16-claimed": (b'{"complexity": 1}', "application/json; charset=utf-16"),
    "truncated": (b'{"description": "x", "complexity": ', _JSON),
    "nan": (b'{"description": "x", "complexity": NaN}', _JSON),
    "huge-number": (b'{"description": "x", "complexity": 1e999999}', _JSON),
    "huge-int": (b'{"description": "x", "complexity": ' + b"9" * 5000 + b"}", _JSON),
    "null": (b"null", _JSON),
    "list": (b"[1, 2, 3]", _JSON),
    "string": (b'"just a string"', _JSON),
    "nul-char": (b'{"description": "a\\u0000b", "complexity": 1, "refresh": "a\\u0000b"}', _JSON),
    "lone-surrogate": (b'{"description": "\\ud800", "complexity": 1, "refresh": "\\ud800"}', _JSON),
    "wrong-types": (
        b'{"description": 5, "complexity": "1", "labels": {"a": 1}, "accepted": "yes", "refresh": 7}',
        _JSON,
    ),
    "text-plain": (b"description=x&complexity=1", "text/plain"),
    "form": (b"description=x&complexity=1", "application/x-www-form-urlencoded"),
    "multipart": (
        b"--b\r\nContent-Disposition: form-data; name=x\r\n\r\n1\r\n--b--",
        "multipart/form-data; boundary=b",
    ),
    "xml": (b"<task><complexity>1</complexity></task>", "application/xml"),
    "no-content-type": (b'{"description": "x", "complexity": 1}', ""),
}


def _assert_clean_client_error(response) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json"), response.content[:300]
    error = response.json()["error"]
    assert error["code"] and error["message"]


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
@pytest.mark.parametrize("route", WRITE_ROUTES, ids=[route.name for route in WRITE_ROUTES])
def test_it_answers_bad_bodies_with_a_client_error(buyer, buyer_client, route, name):
    body, content_type = BAD_BODIES[name]
    task = submit(buyer, "An existing task")
    tasks_before = Task.objects.count()

    response = buyer_client.generic("POST", route.path(task_id=str(task.id)), body, content_type=content_type)

    _assert_clean_client_error(response)
    assert Task.objects.count() == tasks_before


def test_it_says_why_an_oversized_body_is_refused(buyer_client):
    body, content_type = BAD_BODIES["oversized"]
    response = buyer_client.generic("POST", "/tasks", body, content_type=content_type)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize(
    "query",
    [
        "?status=%00",
        "?status=" + "x" * 5000,
        "?status=pending&status=running",
        "?page=0",
        "?page=-1",
        "?page=99999999999999999999999",
        "?page=%F0%9F%92%A9",
        "?page=1e3",
        "?%ff%fe=%ff",
    ],
)
@pytest.mark.parametrize("route", READ_ROUTES, ids=[route.name for route in READ_ROUTES])
def test_it_answers_bad_query_strings_without_a_server_error(buyer, buyer_client, route, query):
    task = submit(buyer, "An existing task")
    response = buyer_client.get(route.path(task_id=str(task.id)) + query)
    assert response.status_code < 500, (response.status_code, response.content[:300])
    if response.status_code >= 400:
        _assert_clean_client_error(response)


@pytest.mark.parametrize(
    "path",
    ["/tasks/not-a-uuid", "/tasks/" + "9" * 300, "/tasks/%00", "/agents/..%2f..%2fetc", "/no/such/route"],
)
def test_it_answers_unknown_objects_and_routes_in_json(buyer_client, path):
    response = buyer_client.get(path)
    assert response.status_code == 404
    _assert_clean_client_error(response)
