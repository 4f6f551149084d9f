from django.apps import AppConfig


class AicpConfig(AppConfig):
    name = "aicp"
    verbose_name = "AICP"
