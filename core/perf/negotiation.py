"""Content negotiation that remembers its answers.

Switch: AICP_PERF_NEGOTIATION (off: DRF's DefaultContentNegotiation). Measured: part of commit 0213b59
(with the plainly-valid shortcut, since removed); see docs/ARCHITECTURE.md for its own A/B.

DRF parses the Accept header and every renderer's media type again on each request. Its answer
depends only on the header, the format asked for (``?format=``, a URL suffix) and the view's renderer
classes, and clients send the same few headers, so the answer is kept per such key. Refusals (406)
are not kept: they raise, and DRF's own code decides each.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.settings import api_settings

MAX_REMEMBERED = 1024

_NegotiationKey = tuple[str, str | None, tuple[type[BaseRenderer], ...]]
_answers: dict[_NegotiationKey, tuple[int, str]] = {}
_answers_guard = threading.Lock()


class RememberingContentNegotiation(DefaultContentNegotiation):
    def select_renderer(
        self, request: Request, renderers: Sequence[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        requested_format = format_suffix or request.query_params.get(api_settings.URL_FORMAT_OVERRIDE)
        key = (
            request.META.get("HTTP_ACCEPT", "*/*"),
            requested_format,
            tuple(type(renderer) for renderer in renderers),
        )
        answer = _answers.get(key)
        if answer is not None:
            index, media_type = answer
            return renderers[index], media_type
        renderer, media_type = super().select_renderer(request, renderers, format_suffix)
        with _answers_guard:
            if len(_answers) >= MAX_REMEMBERED:
                _answers.clear()  # bounded: a client sending ever-new headers costs DRF's parse, no memory
            _answers[key] = (list(renderers).index(renderer), media_type)
        return renderer, media_type
