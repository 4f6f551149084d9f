from django.apps import AppConfig
from django.conf import settings


class DukeConfig(AppConfig):
    name = "duke"
    verbose_name = "Duke"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        from duke import serving, workers

        post_spawn.connect(workers.lower_learning_priority, dispatch_uid="duke.lower_learning_priority")
        if settings.DUKE_PRELOAD:
            # Set for the web server's processes only (run_system): the queue never routes.
            serving.preloading_start(poll_s=settings.DUKE_PRELOAD_POLL_S)
