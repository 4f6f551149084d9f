"""Fixtures for fault tests against a real cluster."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.harness import Cluster, cluster_env


@pytest.fixture
def broker_enqueue(monkeypatch) -> None:
    """Jobs go to the broker a real cluster reads (not run inline), and the broker starts empty."""
    from django_q.brokers import get_broker
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", False)
    # Redis keeps its queue between test runs; a stale job would only find nothing to do, but keep it clean.
    get_broker().purge_queue()


@pytest.fixture
def start_cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """Start real clusters (`start_cluster(simulator_url, **env)`); every one is stopped afterwards."""
    started: list[Cluster] = []

    def start(simulator_url: str, *, workers: int = 2, **env: str) -> Cluster:
        environment = cluster_env(simulator_url, AICP_Q_WORKERS=str(workers), **env)
        cluster = Cluster(environment, tmp_path / f"qcluster-{len(started)}.log", workers=workers).start()
        started.append(cluster)
        return cluster

    yield start
    for cluster in started:
        cluster.stop()
