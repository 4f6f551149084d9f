"""django-q2 jobs for Duke: thin, they call one service."""

from django_q.tasks import async_task


def enqueue_training() -> None:
    async_task("duke.jobs.train", group="duke-training")


def train() -> None:
    from duke.services import model_train

    model_train()
