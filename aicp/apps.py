from django.apps import AppConfig

from aicp import checks  # noqa: F401 — registers the bind-address system check


class AicpConfig(AppConfig):
    name = "aicp"
    verbose_name = "AICP"
