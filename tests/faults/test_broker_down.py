"""The broker is down when tasks are submitted: each task is written once, held once, answered 201, and
runs exactly once when the broker is back (issue 20, item 1).

Reproduced before the fix (PostgreSQL + Redis, Redis stopped): the enqueue on commit raised out of the
committed transaction, group commit took that for a failed write and wrote every member of the group
again: 24 requests made 31 tasks and 31 escrow holds, and clients got 500 for tasks that existed.

The Redis tests start a redis-server of their own on a free loopback port (never the shared one), stop it,
submit, start it again on the same port (empty, as after a crash) and start a real cluster reading it;
the reaper (scheduled every minute) finds the pending tasks nobody enqueued and asks for a drainer.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from django.db import OperationalError
from django.db.models import Count, Q, Sum
from django_q.conf import Conf

from ledger.models import Account, LedgerEntry
from tasks.models import Task
from tasks.queue import RECOVERY_BOUND_S
from tests.factories import authenticated_client, make_buyer
from tests.faults.harness import RedisServer
from tests.postgres.threads import run_concurrently

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

REQUESTS = 24
# Small enough that several groups form (and a re-written group would show), as in the attack run.
GROUP_MAX = 8
CLUSTER_SETTINGS = {"AICP_DRAINERS": "2", "AICP_LLM_CONCURRENCY": "8", "AICP_SUBMIT_GROUP_MAX": "8"}


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    try:
        server = RedisServer(tmp_path).start()
    except FileNotFoundError:
        pytest.skip("redis-server is not installed")
    yield server
    server.stop()


@pytest.fixture
def redis_broker(own_redis: RedisServer, monkeypatch, settings) -> RedisServer:
    """This process enqueues to the test's own Redis (not the shared one, not inline), and its cache is
    there too: with Redis down, all of it is down, as in the scale-out setup."""
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": own_redis.url}
    }
    monkeypatch.setattr(Conf, "SYNC", False)
    monkeypatch.setattr(Conf, "ORM", None)
    monkeypatch.setattr(Conf, "DJANGO_REDIS", None)
    monkeypatch.setattr(Conf, "REDIS", own_redis.url)
    return own_redis


def _post_concurrently(buyer, count: int) -> list[tuple[int, dict]]:
    def post(index: int) -> tuple[int, dict]:
        client = authenticated_client(buyer)
        client.raise_request_exception = False  # a 500 is an answer here, as a client would see it
        response = client.post(
            "/tasks", {"description": f"Broker down, request {index}", "complexity": 1}, format="json"
        )
        try:
            body = response.json()
        except ValueError:
            body = {"raw": response.content[:200].decode(errors="replace")}
        return response.status_code, body

    return run_concurrently(post, count)


def _holds_per_task(buyer) -> dict:
    return dict(
        LedgerEntry.objects.filter(task__buyer=buyer, kind="hold", amount__lt=0)
        .values_list("task")
        .annotate(n=Count("id"))
    )


def _assert_each_task_written_once(buyer, answers: list, start_balance: Decimal) -> list:
    statuses = [status for status, _ in answers]
    tasks = Task.objects.filter(buyer=buyer)
    figures = {
        "answers": dict(Counter(statuses)),
        "tasks": tasks.count(),
        "holds": sum(_holds_per_task(buyer).values()),
    }
    assert statuses == [201] * REQUESTS, figures
    answered = {body["id"] for _, body in answers}
    assert len(answered) == REQUESTS
    assert {str(pk) for pk in tasks.values_list("pk", flat=True)} == answered, figures
    assert set(_holds_per_task(buyer).values()) == {1} and len(_holds_per_task(buyer)) == REQUESTS, figures
    assert set(tasks.values_list("status", flat=True)) == {Task.Status.PENDING}
    held = tasks.aggregate(total=Sum("price"))["total"]
    accounts = {a.kind: a.balance for a in Account.objects.filter(user=buyer)}
    assert accounts[Account.Kind.BUYER] == start_balance - held
    assert accounts[Account.Kind.ESCROW] == held
    return [task.id for task in tasks]


def _assert_logged_once_per_failure(caplog) -> None:
    failures = [r for r in caplog.records if "after commit" in r.getMessage()]
    assert failures, "a failed enqueue must be logged"
    # One line each, no traceback flood (Django's robust on_commit would log one with a traceback).
    assert all(r.exc_info is None for r in failures)
    assert not [r for r in caplog.records if r.name == "django.db.backends.base"]


def _wait_until_completed(ids: list, cluster) -> None:
    """The reaper on its default schedule (every minute; django-q2's scheduler looks every 30 s), not
    fired by the test: recovery must come within RECOVERY_BOUND_S of the broker's return, plus the time
    to start a cluster and run the tasks on a loaded machine. Measured: about 31 s."""
    timeout_s = RECOVERY_BOUND_S + 150
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if Task.objects.filter(pk__in=ids, status=Task.Status.COMPLETED).count() == len(ids):
            return
        time.sleep(0.5)
    statuses = dict(Task.objects.filter(pk__in=ids).values_list("status").annotate(n=Count("id")))
    raise AssertionError(f"not completed after {timeout_s} s: {statuses}\n{cluster.log()}")


def _assert_ran_exactly_once(buyer, ids: list, start_balance: Decimal, simulator) -> None:
    per_task = (
        LedgerEntry.objects.filter(task__in=ids, amount__lt=0)
        .values("task")
        .annotate(
            holds=Count("id", filter=Q(kind="hold")),
            payouts=Count("id", filter=Q(kind="payout")),
            releases=Count("id", filter=Q(kind="release")),
        )
    )
    assert {(row["holds"], row["payouts"], row["releases"]) for row in per_task} == {(1, 1, 0)}
    assert set(Task.objects.filter(pk__in=ids).values_list("attempts", flat=True)) == {1}
    assert simulator.request_count == len(ids), "each task called the LLM exactly once"
    spent = Task.objects.filter(pk__in=ids).aggregate(total=Sum("price"))["total"]
    accounts = {a.kind: a.balance for a in Account.objects.filter(user=buyer)}
    assert accounts == {Account.Kind.BUYER: start_balance - spent, Account.Kind.ESCROW: Decimal("0")}


@pytest.mark.parametrize(
    "cluster_during_outage", [False, True], ids=["cluster-started-after", "cluster-running"]
)
def test_it_writes_each_task_once_and_answers_201_while_redis_is_down_then_runs_each_once(
    redis_broker, make_llm_simulator, start_cluster, settings, caplog, cluster_during_outage
):
    settings.AICP_SUBMIT_GROUP_MAX = GROUP_MAX
    buyer = make_buyer("redis-down")
    start_balance = Account.objects.get(user=buyer, kind=Account.Kind.BUYER).balance
    simulator = make_llm_simulator()

    def cluster():
        # AICP_TEST_POSTGRES=1 only keeps tests.settings from dropping AICP_REDIS_URL in the cluster.
        return start_cluster(
            simulator.base_url, AICP_REDIS_URL=redis_broker.url, AICP_TEST_POSTGRES="1", **CLUSTER_SETTINGS
        )

    running = cluster() if cluster_during_outage else None
    redis_broker.stop()

    with caplog.at_level(logging.WARNING):
        answers = _post_concurrently(buyer, REQUESTS)

    ids = _assert_each_task_written_once(buyer, answers, start_balance)
    _assert_logged_once_per_failure(caplog)

    # Redis comes back (empty): nothing was ever enqueued; the reaper finds the pending tasks.
    redis_broker.start()
    _wait_until_completed(ids, running or cluster())
    _assert_ran_exactly_once(buyer, ids, start_balance, simulator)


def test_it_writes_each_task_once_and_answers_201_when_the_orm_broker_write_fails(
    make_llm_simulator, start_cluster, settings, monkeypatch, caplog
):
    """The ORM broker (the default on SQLite) writes its queue row after the task's commit; when that
    write fails (a database locked past the busy timeout), the committed tasks stand and are answered."""
    from django_q.brokers.orm import ORM

    settings.AICP_SUBMIT_GROUP_MAX = GROUP_MAX
    monkeypatch.setattr(Conf, "SYNC", False)
    monkeypatch.setattr(Conf, "ORM", "default")
    buyer = make_buyer("orm-broker-down")
    start_balance = Account.objects.get(user=buyer, kind=Account.Kind.BUYER).balance

    def locked(self, task):  # noqa: ANN001, ANN202 — the broker's signature
        raise OperationalError("database is locked")

    with monkeypatch.context() as broken:
        broken.setattr(ORM, "enqueue", locked)
        with caplog.at_level(logging.WARNING):
            answers = _post_concurrently(buyer, REQUESTS)

    ids = _assert_each_task_written_once(buyer, answers, start_balance)
    _assert_logged_once_per_failure(caplog)

    simulator = make_llm_simulator()
    cluster = start_cluster(simulator.base_url, AICP_REDIS_URL="", **CLUSTER_SETTINGS)
    _wait_until_completed(ids, cluster)
    _assert_ran_exactly_once(buyer, ids, start_balance, simulator)
