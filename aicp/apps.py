from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps

from aicp import checks  # noqa: F401 — registers the bind-address system check


class AicpConfig(AppConfig):
    name = "aicp"
    verbose_name = "AICP"


class AicpAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin with aicp.admin_site's site as `admin.site` (INSTALLED_APPS names it)."""

    default = False  # not the default for the `aicp` entry, which is AicpConfig
    default_site = "aicp.admin_site.AicpAdminSite"
