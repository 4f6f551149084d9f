"""Operators (staff) run the business in the admin without per-user permission bookkeeping.

Django's admin shows a staff user nothing until permissions are granted one by one; an operator made by
ticking "staff status" would log in to an empty page. This backend grants every active staff user all the
permissions of the apps that make up the business, and nothing on `auth` (groups and raw permissions stay
with superusers, so an operator cannot hand out powers). The admin classes still decide what is read-only:
ledger rows, for example, cannot be changed or deleted by anyone.
"""

from __future__ import annotations

from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Permission

OPERATOR_APPS = ("agents", "tasks", "duke", "users", "django_q")

_CACHE_ATTR = "_operator_perm_cache"


def operator_permissions() -> set[str]:
    return {
        f"{app_label}.{codename}"
        for app_label, codename in Permission.objects.filter(
            content_type__app_label__in=OPERATOR_APPS
        ).values_list("content_type__app_label", "codename")
    }


class OperatorBackend(ModelBackend):
    """Authenticates like ModelBackend; adds the operator permissions for active staff."""

    def get_all_permissions(self, user_obj: object, obj: object = None) -> set[str]:
        permissions = super().get_all_permissions(user_obj, obj)
        if (
            obj is not None
            or not getattr(user_obj, "is_active", False)
            or not getattr(user_obj, "is_staff", False)
        ):
            return permissions
        if not hasattr(user_obj, _CACHE_ATTR):
            setattr(user_obj, _CACHE_ATTR, operator_permissions())
        return permissions | getattr(user_obj, _CACHE_ATTR)
