"""One JSON error shape for the whole API: {"error": {"code", "message", "fields"?}}."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler


class DomainError(Exception):
    """A business rule said no; the API maps it to a status code and a stable error code."""

    status_code = status.HTTP_400_BAD_REQUEST
    code = "invalid"

    def __init__(self, message: str, *, code: str | None = None, fields: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.fields = fields


class NotFound(DomainError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"


class Conflict(DomainError):
    status_code = status.HTTP_409_CONFLICT
    code = "conflict"


class Unprocessable(DomainError):
    status_code = 422
    code = "unprocessable"


class InsufficientFunds(DomainError):
    status_code = status.HTTP_402_PAYMENT_REQUIRED
    code = "insufficient_funds"


class RetryLater(DomainError):
    """429 with Retry-After: the request is fine, but not now."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SpendCapExceeded(RetryLater):
    code = "spend_cap_exceeded"


class SubmitRateExceeded(RetryLater):
    code = "throttled"  # the code DRF's throttles answer with, for every rate limit alike


def _messages(value: Any) -> list[str]:
    """Plain messages; a list item or nested field says where (`3: This field may not be blank.`)."""
    if isinstance(value, dict):
        return [f"{key}: {message}" for key, inner in value.items() for message in _messages(inner)]
    if isinstance(value, list):
        return [message for item in value for message in _messages(item)]
    return [str(value)]


def _flatten_fields(detail: Any) -> dict[str, list[str]]:
    if isinstance(detail, dict):
        return {str(key): _messages(value) for key, value in detail.items()}
    return {}


def _first_message(detail: Any) -> str:
    if isinstance(detail, dict):
        for key, value in detail.items():
            inner = _first_message(value)
            return inner if key == "non_field_errors" else f"{key}: {inner}"
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail)


def error_response(status_code: int, code: str, message: str, fields: dict | None = None) -> Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    return Response({"error": body}, status=status_code)


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, DomainError):
        response = error_response(exc.status_code, exc.code, exc.message, exc.fields)
        if isinstance(exc, RetryLater):
            response["Retry-After"] = str(exc.retry_after_s)
        return response
    if isinstance(exc, RequestDataTooBig):
        # Django would answer an HTML 400; the API owes a JSON error that says what is wrong.
        return error_response(
            status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            "payload_too_large",
            f"The request body is larger than the {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes allowed.",
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        fields = _flatten_fields(exc.detail)
        response.data = {
            "error": {"code": "invalid", "message": _first_message(exc.detail), "fields": fields or None}
        }
        if not fields:
            response.data["error"].pop("fields")
        return response
    code = getattr(exc, "default_code", "error")
    if isinstance(exc, exceptions.APIException):
        detail = exc.detail
        code = exc.get_codes() if isinstance(exc.get_codes(), str) else code
        message = _first_message(detail)
    else:
        message = str(exc)
    response.data = {"error": {"code": code, "message": message}}
    return response
