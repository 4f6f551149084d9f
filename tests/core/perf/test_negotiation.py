"""The API's content negotiation remembers DRF's answers and gives exactly them."""

from __future__ import annotations

import pytest
from django.http import Http404
from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from core.perf import negotiation
from core.perf.negotiation import RememberingContentNegotiation

ACCEPTS = [
    None,
    "*/*",
    "application/json",
    "application/json; indent=4",
    "text/html, application/json;q=0.9",
    "text/html",
    "application/*",
    "image/png",
]


def _request(accept: str | None, query: str = "") -> Request:
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}
    return Request(APIRequestFactory().get(f"/tasks{query}", **headers))


def _answer(negotiator, request: Request, renderers) -> tuple[type, str] | str:
    try:
        renderer, media_type = negotiator.select_renderer(request, renderers)
    except NotAcceptable:
        return "406"
    except Http404:  # DRF's answer to a ?format= no renderer has
        return "404"
    return type(renderer), media_type


@pytest.fixture(autouse=True)
def _forget():
    negotiation._answers.clear()
    yield
    negotiation._answers.clear()


@pytest.mark.parametrize("renderer_classes", [[JSONRenderer], [JSONRenderer, BrowsableAPIRenderer]])
@pytest.mark.parametrize("query", ["", "?format=json", "?format=api", "?format=xml"])
def test_it_answers_as_drf_does_the_first_time_and_every_time_after(renderer_classes, query):
    for accept in ACCEPTS:
        expected = _answer(
            DefaultContentNegotiation(), _request(accept, query), [r() for r in renderer_classes]
        )
        for _ in range(3):
            renderers = [r() for r in renderer_classes]
            got = _answer(RememberingContentNegotiation(), _request(accept, query), renderers)
            assert got == expected, (accept, query)


def test_the_renderer_returned_is_one_of_this_requests_instances():
    RememberingContentNegotiation().select_renderer(_request(None), [JSONRenderer()])
    renderers = [JSONRenderer()]
    renderer, _ = RememberingContentNegotiation().select_renderer(_request(None), renderers)
    assert renderer is renderers[0]


def test_refusals_are_not_remembered_and_memory_is_bounded(monkeypatch):
    assert _answer(RememberingContentNegotiation(), _request("image/png"), [JSONRenderer()]) == "406"
    assert _answer(RememberingContentNegotiation(), _request(None, "?format=xml"), [JSONRenderer()]) == "404"
    assert negotiation._answers == {}
    monkeypatch.setattr(negotiation, "MAX_REMEMBERED", 3)
    for n in range(10):
        RememberingContentNegotiation().select_renderer(_request(f"application/json;v={n}"), [JSONRenderer()])
        assert len(negotiation._answers) <= 3


@pytest.mark.django_db
def test_the_api_refuses_what_it_cannot_render(client):
    assert client.get("/health", HTTP_ACCEPT="application/json").status_code in (200, 503)
    assert client.get("/tasks", HTTP_ACCEPT="image/png").status_code == 406
