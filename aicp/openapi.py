"""OpenAPI post-processing: every operation documents the errors it can answer, in the one error shape.

drf-spectacular documents the success response and whatever a view lists by hand. The API also answers
400/401/403/404/413/415/429 from the framework (validation, authentication, permissions, parsers,
throttles) through `core.exceptions.api_exception_handler`; a client generated from the schema, and
schemathesis, must know those exist and what their body looks like.
"""

from __future__ import annotations

from typing import Any

from django.core.validators import RegexValidator
from drf_spectacular import openapi
from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from rest_framework import serializers
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.views import APIView

ERROR_COMPONENT = "Error"
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Every API error: a stable `code`, a human `message`, and per-field messages when useful.",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "example": "invalid"},
                "message": {"type": "string"},
                "fields": {
                    "type": "object",
                    "additionalProperties": {"type": "array", "items": {"type": "string"}},
                },
            },
            "required": ["code", "message"],
        }
    },
    "required": ["error"],
}


class RecentJWTScheme(SimpleJWTScheme):
    """Our JWT authentication (users.authentication) is simplejwt's on the wire: the same bearer scheme."""

    target_class = "users.authentication.JWTAuthentication"


_HTTP_METHODS = {"get", "put", "patch", "post", "delete", "head", "options", "trace"}
_PLAIN_PERMISSIONS = {AllowAny, IsAuthenticated}


# DRF's CharField refuses NUL, and with trim_whitespace a whitespace-only value is blank. The whitespace is
# spelled out (what Python's str.strip() removes, \x1c-\x1f included) because `\s` differs between regex
# engines. Lone surrogates (also refused) are left out: Rust-based validators cannot compile them.
WHITESPACE = r"\x09-\x0d\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_ALLOWED_CHAR = r"[^\x00]"
_NON_SPACE_CHAR = f"[^\\x00{WHITESPACE}]"
ANY_TEXT_PATTERN = f"^{_ALLOWED_CHAR}*$"
NON_BLANK_TEXT_PATTERN = f"^{_ALLOWED_CHAR}*{_NON_SPACE_CHAR}{_ALLOWED_CHAR}*$"
# List fields whose items must be distinct (DESIGN §3: a task's labels are 2–100 distinct strings).
UNIQUE_LIST_FIELDS = {"labels"}


class AutoSchema(openapi.AutoSchema):
    """The schema says what the serializers really accept, so generated clients and fuzzers agree with it.

    - A view's nested serializer is named after its view (`RegisterApi.InputSerializer` → `RegisterInput`):
      views keep their serializers nested (the house style), and under one name they would overwrite
      each other in the schema.
    - Free-text request fields carry a pattern for what DRF's CharField refuses (NUL, lone surrogates,
      whitespace-only when it trims), and `labels` says its items are distinct.
    """

    def get_serializer_name(self, serializer: serializers.Serializer, direction: str) -> str:
        cls = serializer.__class__
        outer, _, inner = cls.__qualname__.rpartition(".")
        if not outer or "<locals>" in outer:
            return super().get_serializer_name(serializer, direction)
        view = outer.split(".")[-1].removesuffix("Api").removesuffix("View")
        return view + inner

    def _map_basic_serializer(self, serializer: serializers.Serializer, direction: str) -> dict:
        schema = super()._map_basic_serializer(serializer, direction)
        if direction == "request":
            return schema
        for name, prop in schema.get("properties", {}).items():
            field = serializer.fields.get(name)
            pattern = prop.get("pattern", "") if isinstance(prop, dict) else ""
            may_be_blank = getattr(field, "allow_blank", False) or getattr(field, "read_only", False)
            if may_be_blank and pattern.startswith("^") and pattern.endswith("$"):
                # A blank slug (`task_type` = "") is a valid value the pattern must not deny. Read-only
                # fields lose `allow_blank` in DRF, so they are taken as possibly blank.
                prop["pattern"] = f"^(?:{pattern[1:-1]})?$"
        return schema

    def _map_serializer_field(self, field: Any, direction: str, bypass_extensions: bool = False) -> dict:
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if direction != "request" or not isinstance(schema, dict):
            return schema
        plain_text = schema.get("type") == "string" and not {"pattern", "format", "enum"} & set(schema)
        regexes = [v.regex.pattern for v in field.validators if isinstance(v, RegexValidator)]
        if isinstance(field, serializers.CharField) and plain_text and len(regexes) == 1:
            # A slug or regex field: its own pattern (Python's `\Z` is JSON Schema's `$`).
            schema["pattern"] = regexes[0].replace("\\Z", "$")
        elif isinstance(field, serializers.CharField) and plain_text:
            blank_refused = field.trim_whitespace and not field.allow_blank
            schema["pattern"] = NON_BLANK_TEXT_PATTERN if blank_refused else ANY_TEXT_PATTERN
        if isinstance(field, serializers.ListField) and field.field_name in UNIQUE_LIST_FIELDS:
            schema["uniqueItems"] = True
        return schema


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}}},
    }


def _is_throttled(view: type | None) -> bool:
    if view is None:
        return False
    overrides_throttles = getattr(view, "get_throttles", APIView.get_throttles) is not APIView.get_throttles
    return bool(getattr(view, "throttle_classes", None)) or overrides_throttles


def _checks_permissions(view: type | None) -> bool:
    permissions = set(getattr(view, "permission_classes", None) or [])
    return bool(permissions - _PLAIN_PERMISSIONS)


def possible_errors(operation: dict[str, Any], view: type | None) -> dict[str, str]:
    """Status code → description of the errors this operation can answer besides its own."""
    parameters = operation.get("parameters") or []
    has_body = "requestBody" in operation
    errors: dict[str, str] = {}
    if has_body or any(p.get("in") in ("query", "header") for p in parameters):
        errors["400"] = "Invalid input; `fields` names each offending field, unknown keys included."
    if operation.get("security") != [{}]:
        errors["401"] = "Missing, invalid or expired credentials."
    if _checks_permissions(view):
        errors["403"] = "Authenticated, but not allowed to do this."
    if any(p.get("in") == "path" or p.get("name") == "page" for p in parameters):
        errors["404"] = "No such object (or page), or one that belongs to someone else."
    if has_body:
        errors["413"] = "The request body is too large."
        errors["415"] = "The request body is not JSON."
    if _is_throttled(view):
        errors["429"] = "Too many requests; Retry-After says how many seconds to wait."
    return errors


def add_error_responses(result: dict, generator: Any, request: Any, public: bool, **kwargs: Any) -> dict:
    views = {
        (path, method.lower()): getattr(callback, "cls", None)
        for path, _regex, method, callback in (generator.endpoints or [])
    }
    result.setdefault("components", {}).setdefault("schemas", {})[ERROR_COMPONENT] = ERROR_SCHEMA
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in _HTTP_METHODS:
                continue
            responses = operation.setdefault("responses", {})
            for code, description in possible_errors(operation, views.get((path, method))).items():
                responses.setdefault(code, _error_response(description))
            for code, response in responses.items():
                # An error a view documented by hand (`OpenApiResponse(description=…)`) has the same body.
                if code.isdigit() and int(code) >= 400 and "content" not in response:
                    response["content"] = _error_response("")["content"]
            _close_request_bodies(operation, result["components"]["schemas"])
    return result


def _close_request_bodies(operation: dict[str, Any], schemas: dict[str, Any]) -> None:
    # Every write's input serializer refuses keys it does not know (core.serializers.RejectUnknownKeysMixin):
    # the schema says so, or clients and schemathesis would take extra keys for allowed.
    for media in (operation.get("requestBody") or {}).get("content", {}).values():
        reference = media.get("schema", {}).get("$ref", "")
        name = reference.rsplit("/", 1)[-1]
        if name in schemas and schemas[name].get("type") == "object":
            schemas[name]["additionalProperties"] = False
