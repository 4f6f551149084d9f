"""Duke's learning yields the CPU: its jobs go to the learning cluster, whose workers run at low priority.

The second test starts a real `Q_CLUSTER_NAME=duke manage.py qcluster` (what run_system starts) on the
test database and sends jobs through the real queue: a probe reports the priority it runs at, and
Duke's own training job is executed there.
"""

from __future__ import annotations

import json
import os

import pytest
from django_q.conf import Conf
from django_q.models import OrmQ
from django_q.models import Task as QueueTask
from django_q.tasks import async_task

from duke import queue
from tests.faults.harness import cluster_env, running_cluster, wait_for

LEARNING = "duke"


@pytest.fixture
def real_queue(monkeypatch, settings):
    if "orm" not in settings.Q_CLUSTER:
        pytest.skip("reads the ORM broker's queue")
    monkeypatch.setattr(Conf, "SYNC", False)  # enqueue to the broker, not in-process


@pytest.mark.django_db
def test_it_enqueues_training_and_encoding_on_the_learning_cluster(real_queue, settings):
    settings.DUKE_LEARNING_CLUSTER = LEARNING

    queue.enqueue_training()
    queue.enqueue_encoding()

    queued = {entry.task["func"]: entry.key for entry in OrmQ.objects.all()}
    assert queued == {"duke.jobs.train": LEARNING, "duke.jobs.encode_samples": LEARNING}


@pytest.mark.django_db
def test_it_enqueues_them_on_the_main_cluster_when_no_learning_cluster_is_set(real_queue, settings):
    settings.DUKE_LEARNING_CLUSTER = ""

    queue.enqueue_training()

    assert list(OrmQ.objects.values_list("key", flat=True)) == [Conf.CLUSTER_NAME]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_it_runs_learning_jobs_in_a_cluster_whose_workers_yield_the_cpu(real_queue, settings, tmp_path):
    settings.DUKE_LEARNING_CLUSTER = LEARNING
    log_path = tmp_path / "learning-cluster.log"
    env = cluster_env(
        "http://127.0.0.1:9/v1",
        DUKE_LEARNING_CLUSTER=LEARNING,
        Q_CLUSTER_NAME=LEARNING,
        DUKE_LEARNING_NICE="19",
    )
    report = tmp_path / "priority.txt"
    with running_cluster(env, log_path):
        async_task("tests.duke.priority_probe.write_priority", str(report), cluster=LEARNING)
        queue.enqueue_training()
        wait_for(
            lambda: report.exists() and QueueTask.objects.filter(func="duke.jobs.train").exists(),
            90,
            "the probe's report and the training job's result",
            lambda: log_path.read_text(errors="replace")[-3000:],
        )
    reported = json.loads(report.read_text())
    assert reported["nice"] == 19 > os.getpriority(os.PRIO_PROCESS, 0)
    if hasattr(os, "SCHED_IDLE"):
        assert reported["policy"] == os.SCHED_IDLE != os.sched_getscheduler(0)
    training = QueueTask.objects.get(func="duke.jobs.train")
    assert training.success, training.result
    assert training.cluster == LEARNING
    assert "Duke learning worker" in log_path.read_text()
