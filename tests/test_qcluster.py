"""A real `manage.py qcluster` process, on a file SQLite database, executes tasks submitted here."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from tasks.models import Task
from tests.factories import submit
from tests.faults.harness import cluster_env

# serialized_rollback: an earlier transactional test's flush would otherwise have removed the seeded agents.
pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

REPO = Path(__file__).resolve().parent.parent


def start_cluster(simulator_url: str, log_path: Path) -> subprocess.Popen:
    log = log_path.open("ab")
    return subprocess.Popen(
        [sys.executable, str(REPO / "manage.py"), "qcluster"],
        cwd=REPO,
        env=cluster_env(simulator_url),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def wait_until_final(task_ids: list, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if Task.objects.filter(pk__in=task_ids).exclude(status__in=Task.FINAL_STATUSES).count() == 0:
            return
        time.sleep(0.2)


def test_it_executes_tasks_in_a_real_cluster(buyer, llm_settings, monkeypatch, tmp_path):
    from django_q.conf import Conf

    assert connection.vendor != "sqlite" or Path(settings.DATABASES["default"]["NAME"]).exists()
    monkeypatch.setattr(Conf, "SYNC", False)  # enqueue to the broker the cluster reads, not in-process
    log_path = tmp_path / "qcluster.log"
    cluster = start_cluster(llm_settings.base_url, log_path)
    try:
        tasks = [submit(buyer, f"Text number {i}", labels=["alpha", "beta"]) for i in range(12)]
        tasks.append(submit(buyer, "Write a free-form sentence."))
        wait_until_final([task.id for task in tasks], timeout_s=60)
    finally:
        cluster.terminate()
        cluster.wait(timeout=20)
    statuses = dict(Task.objects.filter(pk__in=[t.id for t in tasks]).values_list("id", "status"))
    assert set(statuses.values()) == {"completed"}, log_path.read_text()[-3000:]
    labeled = Task.objects.filter(pk__in=[t.id for t in tasks], labels__isnull=False)
    assert set(labeled.values_list("result", flat=True)) <= {"alpha", "beta"}
