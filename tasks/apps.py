from django.apps import AppConfig


class TasksConfig(AppConfig):
    name = "tasks"
    verbose_name = "Tasks and money"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        post_spawn.connect(_warm_up_worker, dispatch_uid="tasks.warm_up_worker")


def _warm_up_worker(**kwargs: object) -> None:
    """A queue worker has just started: load the LLM client now, not on its first call.

    Only workers run drainers, so only they carry the openai package (web processes and the cluster's
    supervisor processes never do); loading it in the first drainer would hold up its first calls.
    """
    from tasks.execution import flights  # after setup: the app registry must be loaded first

    flights.warm_up()
