"""Serializer building blocks shared by the apps' APIs."""

from __future__ import annotations

import difflib
import threading
from collections.abc import Mapping
from typing import Any, ClassVar

from rest_framework import serializers


class StrictJSONTypesMixin:
    # JSON types exactly as the schema says: a string field takes only a JSON string. DRF's CharField turns
    # `7` or `7.5` into `"7"`; a client that sends a number where the contract says text has a bug, and the
    # API says so (400) instead of storing a guess. Lists of strings likewise. (A comment, not a docstring:
    # drf-spectacular would show an inherited docstring as every serializer's description.)

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            errors: dict[str, list[str]] = {}
            for name, field in self.fields.items():  # type: ignore[attr-defined]
                value = data.get(name)
                if field.read_only or value is None:
                    continue
                if isinstance(field, serializers.CharField) and not isinstance(value, str):
                    errors[name] = ["Must be a string."]
                elif (
                    isinstance(field, serializers.ListField)
                    and isinstance(field.child, serializers.CharField)
                    and isinstance(value, list)
                    and not all(isinstance(item, str) for item in value)
                ):
                    errors[name] = ["Every item must be a string."]
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)  # type: ignore[misc]


class RejectUnknownKeysMixin:
    # A key the serializer does not know is refused (400 naming it), never ignored: a typo such as
    # "lables" would otherwise quietly turn a labeling task into a free-form one. For input serializers
    # only (read-only fields are not writable, so naming one is refused too).

    def unknown_key_message(self, key: str) -> str:
        suggestion = difflib.get_close_matches(key, self._writable_field_names(), n=1)
        return f"Unknown field; did you mean {suggestion[0]!r}?" if suggestion else "Unknown field."

    def _writable_field_names(self) -> list[str]:
        return [name for name, field in self.fields.items() if not field.read_only]  # type: ignore[attr-defined]

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = sorted(str(key) for key in set(data) - set(self._writable_field_names()))
            if unknown:
                raise serializers.ValidationError({key: [self.unknown_key_message(key)] for key in unknown})
        return super().to_internal_value(data)  # type: ignore[misc]


class SharedFieldsMixin:
    # DRF deep-copies every declared field for each serializer instance and binds the copies to it: for
    # POST /tasks that copying was the largest part of validating the body and rendering the answer. A
    # serializer using this mixin builds and binds its fields once per class and every instance uses that
    # one set. Only for serializers whose fields read nothing from the instance or its context (no
    # request-dependent defaults or hyperlinks): validation and rendering keep their state on the
    # serializer, never on a field, so threads can share the fields.
    _shared_fields: ClassVar[Any] = None
    _shared_fields_lock: ClassVar[threading.Lock] = threading.Lock()

    @property
    def fields(self) -> Any:
        cls = type(self)
        shared = cls.__dict__.get("_shared_fields")
        if shared is None:
            with SharedFieldsMixin._shared_fields_lock:
                shared = cls.__dict__.get("_shared_fields")
                if shared is None:
                    prototype = cls()
                    shared = super(SharedFieldsMixin, prototype).fields  # type: ignore[misc]
                    cls._shared_fields = shared
        return shared
