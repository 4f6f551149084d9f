from django.apps import AppConfig


class DukeConfig(AppConfig):
    name = "duke"
    verbose_name = "Duke"
