"""Every route the URL resolver knows, with a concrete path to call it by.

The security tests walk this list instead of a hand-written one, so a route added later is covered
without anyone remembering to add it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.urls import URLPattern, URLResolver, get_resolver, resolve

_GROUP = re.compile(r"\(\?P<(?P<name>\w+)>(?P<regex>[^()]*)\)")
# Sample values for path parameters, tried in order; the first one the parameter's regex accepts is used.
_SAMPLES = (str(uuid.UUID(int=1)), "1", "sample-name")
_METHODS = ("get", "post", "put", "patch", "delete")


@dataclass(frozen=True)
class Route:
    name: str
    regex: str
    callback: Any
    parameters: tuple[str, ...]

    @property
    def view_class(self) -> type | None:
        return getattr(self.callback, "view_class", None) or getattr(self.callback, "cls", None)

    @property
    def is_api(self) -> bool:
        from rest_framework.views import APIView

        return self.view_class is not None and issubclass(self.view_class, APIView)

    def methods(self) -> list[str]:
        """The methods the view implements (DRF), or GET and POST for a plain function view."""
        if self.view_class is None:
            return ["get", "post"]
        return [method for method in _METHODS if hasattr(self.view_class, method)]

    def path(self, **values: str) -> str:
        """A concrete URL; named groups take `values[name]` or a sample their regex accepts."""

        def fill(match: re.Match) -> str:
            name, group = match["name"], match["regex"]
            if name in values:
                return values[name]
            return next(s for s in _SAMPLES if re.fullmatch(group, s))

        body = _GROUP.sub(fill, self.regex)
        body = body.removeprefix("^").removesuffix("$").removesuffix(r"\Z")
        body = body.replace("/?", "/").replace("\\.", ".")
        url = "/" + body
        assert resolve(url).func is self.callback, f"{url} does not resolve back to route {self.name}"
        return url


def _walk(resolver: URLResolver, prefix: str = "") -> Iterator[Route]:
    for entry in resolver.url_patterns:
        regex = entry.pattern.regex.pattern.removeprefix("^")
        if isinstance(entry, URLResolver):
            if entry.app_name == "admin":
                continue  # Django's admin has its own login; tested on its own
            yield from _walk(entry, prefix + regex)
        elif isinstance(entry, URLPattern):
            full = prefix + regex
            names = tuple(re.compile(full).groupindex)
            yield Route(name=entry.name or full, regex="^" + full, callback=entry.callback, parameters=names)


def all_routes() -> list[Route]:
    return list(_walk(get_resolver()))
