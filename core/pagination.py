"""Pagination for the API's list endpoints."""

from __future__ import annotations

from typing import Any

from rest_framework import pagination, serializers
from rest_framework.request import Request


class PageNumberPagination(pagination.PageNumberPagination):
    """DRF's page numbers, but `page` is what the schema says: a positive integer.

    DRF reads `?page=` as page 1 and also takes `last`; a typo then silently shows the wrong page.
    A malformed page is a 400, a page past the end stays DRF's 404.
    """

    last_page_strings = ()

    def get_page_number(self, request: Request, paginator: Any) -> int:
        raw = request.query_params.get(self.page_query_param)
        if raw is None:
            return 1
        if not (raw.isascii() and raw.isdigit() and int(raw) >= 1):
            raise serializers.ValidationError({self.page_query_param: ["Must be a positive integer."]})
        return int(raw)

    def get_schema_operation_parameters(self, view: Any) -> list[dict]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_query_param:
                parameter["schema"]["minimum"] = 1
        return parameters
