"""Request parsers for the API."""

from __future__ import annotations

from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, except that JSON nested past Python's recursion limit is a 400, not a 500.

    `[[[[…]]]]` a hundred thousand deep is a few hundred kilobytes, well under the body size limit, and
    `json.load` answers it with RecursionError, which DRF does not treat as a parse error.
    """

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        try:
            return super().parse(stream, media_type=media_type, parser_context=parser_context)
        except RecursionError as exc:
            raise ParseError("JSON parse error - nested too deeply") from exc
