"""The admin site: every list answers a page for any filter or search an operator can type.

Django's admin turns a filter it cannot build into a redirect to the unfiltered list (`?e=1`), but a
filter that builds and then fails in the database — a JSONField `contains` on SQLite, a broken regular
expression, a NUL byte PostgreSQL refuses — escaped as a 500 (`?labels__contains=x` on the task list).
Here the list's queries run where such a failure is caught and treated like an unbuildable filter, and
the unfiltered list says why. The site applies this to every ModelAdmin registered on it, the project's
and the libraries' alike (AicpAdminConfig makes it the default site), so no admin class can miss it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ERROR_FLAG, ChangeList
from django.db import DatabaseError, connections, transaction
from django.http import HttpRequest, HttpResponse

logger = logging.getLogger(__name__)

INVALID_FILTER_MESSAGE = (
    "That filter, search or ordering is not valid for this list; showing the list without it."
)


@contextlib.contextmanager
def _undoable(using: str) -> Iterator[None]:
    """Inside a transaction a failed statement must be rolled back to a savepoint (PostgreSQL aborts the
    whole transaction otherwise); outside one there is nothing to undo, and on SQLite opening a
    transaction would take the write lock for a page that only reads."""
    if connections[using].in_atomic_block:
        with transaction.atomic(using=using):
            yield
    else:
        yield


class ForgivingChangeList(ChangeList):
    def get_results(self, request: HttpRequest) -> None:
        try:
            with _undoable(self.root_queryset.db):
                super().get_results(request)
                # Run the page's query now, where its failure can still become "invalid filter".
                len(self.result_list)
        # TypeError: a value the field cannot take at all (text for a BinaryField) fails when compiled;
        # OverflowError: an amount beyond what a money column holds (`?balance__gt=1e999`, core/money.py).
        except (DatabaseError, ValueError, TypeError, OverflowError) as exc:
            logger.warning("Admin list %s refused %s: %r", request.path, request.GET.urlencode(), exc)
            raise IncorrectLookupParameters(exc) from exc


@functools.cache
def forgiving_changelist(changelist_class: type[ChangeList]) -> type[ChangeList]:
    if issubclass(changelist_class, ForgivingChangeList):
        return changelist_class
    if changelist_class is ChangeList:
        return ForgivingChangeList
    return type(f"Forgiving{changelist_class.__name__}", (ForgivingChangeList, changelist_class), {})


class ForgivingChangeListMixin:
    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return forgiving_changelist(super().get_changelist(request, **kwargs))

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        if ERROR_FLAG in request.GET:  # where the admin sends a filter it could not apply
            messages.warning(request, INVALID_FILTER_MESSAGE)
        return super().changelist_view(request, extra_context)


@functools.cache
def forgiving_admin(admin_class: type[admin.ModelAdmin]) -> type[admin.ModelAdmin]:
    if issubclass(admin_class, ForgivingChangeListMixin):
        return admin_class
    return type(
        admin_class.__name__,
        (ForgivingChangeListMixin, admin_class),
        {"__module__": admin_class.__module__, "__doc__": admin_class.__doc__},
    )


class AicpAdminSite(admin.AdminSite):
    def register(
        self, model_or_iterable: Any, admin_class: type[admin.ModelAdmin] | None = None, **options: Any
    ) -> None:
        super().register(model_or_iterable, forgiving_admin(admin_class or admin.ModelAdmin), **options)
