"""Rate-limit arithmetic, its shared state (database and Redis, across processes), and the circuit breaker."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from agents.ratelimit import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    Breaker,
    BreakerPolicy,
    Bucket,
    CircuitBreaker,
    DatabaseLimiter,
    Limits,
    RedisLimiter,
    breaker_permit,
    breaker_record,
    bucket_block,
    bucket_charge,
    bucket_take,
)

REPO = Path(__file__).resolve().parents[2]
T0 = 1_000_000.0

# --- arithmetic ----------------------------------------------------------------------------------------


def test_it_grants_up_to_the_burst_then_refills_at_the_rate():
    limits = Limits(rpm=120, burst_s=5)  # 2 requests/s, at most 10 at once
    bucket = Bucket.full(limits, T0)
    bucket, grant = bucket_take(bucket, limits, T0, [1] * 12)
    assert grant.granted == 10
    assert grant.wait_s == pytest.approx(0.5)  # one request token refills in half a second
    bucket, grant = bucket_take(bucket, limits, T0 + 0.25, [1])
    assert grant.granted == 0 and grant.wait_s == pytest.approx(0.25)
    bucket, grant = bucket_take(bucket, limits, T0 + 1.0, [1, 1, 1])
    assert grant.granted == 2 and grant.wait_s == pytest.approx(0.5)
    # Idle for a minute: full again, never more than the burst.
    _, grant = bucket_take(bucket, limits, T0 + 61, [1] * 20)
    assert grant.granted == 10


def test_it_lets_a_low_limit_grant_one_whole_request():
    limits = Limits(rpm=6, burst_s=1)  # 0.1/s: a 1 s burst would be a tenth of a request
    bucket, grant = bucket_take(Bucket.full(limits, T0), limits, T0, [1, 1])
    assert grant.granted == 1 and grant.wait_s == pytest.approx(10.0)


def test_it_charges_token_estimates_into_debt_and_waits_it_out():
    limits = Limits(tpm=6000, burst_s=1)  # 100 tokens/s, bucket of 100
    bucket = Bucket.full(limits, T0)
    bucket, grant = bucket_take(bucket, limits, T0, [60, 60, 60])
    # The second request starts while tokens remain (debt model: a big prompt is never refused forever).
    assert grant.granted == 2 and bucket.tokens == pytest.approx(-20)
    assert grant.wait_s == pytest.approx(0.2 + 0.01)  # back above zero
    _, grant = bucket_take(bucket, limits, T0 + 0.2, [1])
    assert grant.granted == 0
    _, grant = bucket_take(bucket, limits, T0 + 0.25, [1])
    assert grant.granted == 1


def test_it_corrects_estimates_with_real_usage_without_exceeding_the_bucket():
    limits = Limits(tpm=6000, burst_s=1)
    bucket, _ = bucket_take(Bucket.full(limits, T0), limits, T0, [80])
    assert bucket_charge(bucket, limits, T0, 50).tokens == pytest.approx(-30)  # used 50 more than thought
    assert bucket_charge(bucket, limits, T0, -500).tokens == pytest.approx(100)  # refund capped at capacity


def test_it_needs_both_buckets():
    limits = Limits(rpm=60, tpm=6000, burst_s=1)  # 1 request and 100 tokens at once
    bucket, grant = bucket_take(Bucket.full(limits, T0), limits, T0, [10, 10])
    assert grant.granted == 1 and grant.wait_s == pytest.approx(1.0)  # requests bind, not tokens


def test_it_honours_a_retry_after_block():
    limits = Limits(rpm=600)
    bucket = bucket_block(Bucket.full(limits, T0), T0 + 3)
    bucket = bucket_block(bucket, T0 + 1)  # an earlier block never shortens a later one
    _, grant = bucket_take(bucket, limits, T0 + 1, [1])
    assert grant.granted == 0 and grant.wait_s == pytest.approx(2.0)
    _, grant = bucket_take(bucket, limits, T0 + 3, [1])
    assert grant.granted == 1


# --- shared state --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_keeps_the_database_bucket_between_calls_and_keys_apart():
    limiter = DatabaseLimiter()
    limits = Limits(rpm=60, burst_s=5)
    assert limiter.take("agent-a", limits, [1] * 8, now=T0).granted == 5
    assert limiter.take("agent-a", limits, [1], now=T0 + 0.5).granted == 0
    assert limiter.take("agent-b", limits, [1] * 8, now=T0).granted == 5
    limiter.block("agent-a", time.time() + 60)
    assert set(limiter.blocked_until(["agent-a", "agent-b"])) == {"agent-a"}
    assert limiter.take("agent-a", limits, [1], now=time.time() + 10).granted == 0


_SHARED_TAKER = """
import json, sys
import django
django.setup()
from agents.ratelimit import DatabaseLimiter, Limits, RedisLimiter
backend, key, rpm = sys.argv[1], sys.argv[2], int(sys.argv[3])
limiter = RedisLimiter(backend) if backend.startswith("redis://") else DatabaseLimiter()
limits = Limits(rpm=rpm, burst_s=1)
print("ready", flush=True)
granted = 0
for line in sys.stdin:  # one batch of virtual instants per line, at the same time as the parent's
    if line.startswith("probe "):  # one take at a given instant, its grant printed
        print(limiter.take(key, limits, [1], now=float(line.split()[1])).granted, flush=True)
        continue
    if not line.strip():
        break
    for now in json.loads(line):
        granted += limiter.take(key, limits, [1], now=now).granted
    print("done", flush=True)
print(json.dumps({"granted": granted}), flush=True)
"""

# The shared-bucket tests run on a virtual clock (``now=``): 20 requests/s, so a bucket holds 20 and
# refills one every 50 ms of virtual time, whatever the machine's load.
RPM = 1200
STEP_S = 0.01  # virtual seconds between two takes of one process
STEPS = 300  # 3 virtual seconds
BATCH = 10  # the two processes start every 10 steps together: they race, neither runs ahead


def _database_env() -> dict[str, str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(REPO)}
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        env["AICP_SQLITE_PATH"] = str(db["NAME"])
    else:
        host, port = db["HOST"] or "127.0.0.1", db["PORT"] or 5432
        env["DATABASE_URL"] = f"postgresql://{db['USER']}:{db['PASSWORD']}@{host}:{port}/{db['NAME']}"
    return env


def _take_in_two_processes(backend: str, key: str) -> tuple[int, float]:
    """This process and a subprocess take from the same bucket at the same (virtual) instants, batch by
    batch at the same time: (total granted, virtual window). First, each sees what the other took."""
    child = subprocess.Popen(
        [sys.executable, "-c", _SHARED_TAKER, backend, key, str(RPM)],
        cwd=REPO,
        env=_database_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        limiter = RedisLimiter(backend) if backend.startswith("redis://") else DatabaseLimiter()
        limits = Limits(rpm=RPM, burst_s=1)

        def child_takes_at(now: float) -> int:
            child.stdin.write(f"probe {now}\n")
            child.stdin.flush()
            return int(child.stdout.readline())

        # Sharing, step by step: this process empties the bucket; the child finds it empty at the same
        # instant and is granted the one request 50 ms refill; this process then finds that gone too.
        assert limiter.take(key, limits, [1] * 25, now=T0).granted == 20
        assert child_takes_at(T0) == 0, "the child has a bucket of its own"
        assert child_takes_at(T0 + 0.05) == 1
        assert limiter.take(key, limits, [1], now=T0 + 0.05).granted == 0
        start = T0 + 0.05
        mine = 0
        for batch in range(STEPS // BATCH):
            instants = [start + (batch * BATCH + i + 1) * STEP_S for i in range(BATCH)]
            child.stdin.write(json.dumps(instants) + "\n")
            child.stdin.flush()
            for now in instants:
                mine += limiter.take(key, limits, [1], now=now).granted
            assert child.stdout.readline().strip() == "done", child.stderr.read()
        out, err = child.communicate("\n", timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, err
    theirs = json.loads(out.strip().splitlines()[-1])
    assert theirs["granted"] > 0 and mine > 0, "both processes must have been served"
    return mine + theirs["granted"], STEPS * STEP_S


def _assert_shared_rate(total: int, window: float, rpm: int) -> None:
    rate = rpm / 60
    # The race started on an empty bucket. Two processes each holding their own bucket, or losing each
    # other's updates, would get up to twice this.
    assert total <= rate * window + 1
    assert total >= rate * window * 0.9, "the limiter must not starve its callers either"


# serialized_rollback: a plain flush would recreate content types that the next serialized test reloads.
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_it_shares_the_database_bucket_between_two_processes():
    total, window = _take_in_two_processes("db", "shared-agent")
    _assert_shared_rate(total, window, rpm=RPM)


@pytest.fixture
def redis_url(tmp_path):
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.05)
    yield url
    process.terminate()
    process.wait(timeout=10)


def test_it_keeps_the_redis_bucket_with_the_same_arithmetic(redis_url):
    limiter = RedisLimiter(redis_url)
    limits = Limits(rpm=60, burst_s=5)
    assert limiter.take("agent-a", limits, [1] * 8, now=T0).granted == 5
    assert limiter.take("agent-a", limits, [1], now=T0 + 0.5).granted == 0
    assert limiter.take("agent-a", limits, [1], now=T0 + 1.0).granted == 1
    limiter.block("agent-b", time.time() + 60)
    assert set(limiter.blocked_until(["agent-a", "agent-b"])) == {"agent-b"}


@pytest.mark.django_db
def test_it_shares_the_redis_bucket_between_two_processes(redis_url):
    total, window = _take_in_two_processes(redis_url, "shared-agent")
    _assert_shared_rate(total, window, rpm=RPM)


# --- circuit breaker -----------------------------------------------------------------------------------

POLICY = BreakerPolicy(failures=3, cooldown_s=10.0, trial_s=5.0)


def test_it_opens_after_consecutive_failures_only():
    breaker = breaker_record(Breaker(), POLICY, T0, [False, False, True, False, False])
    assert breaker.state == CLOSED and breaker.failures == 2  # the success reset the count
    breaker = breaker_record(breaker, POLICY, T0, [False])
    assert breaker.state == OPEN and breaker.open_until == T0 + 10
    assert breaker_permit(breaker, POLICY, T0 + 9.9, 5) == (breaker, 0)


def test_it_allows_one_trial_after_the_cooldown_and_closes_on_success():
    opened = breaker_record(Breaker(), POLICY, T0, [False] * 3)
    trial, granted = breaker_permit(opened, POLICY, T0 + 10, 5)
    assert granted == 1 and trial.state == HALF_OPEN and trial.trial_until == T0 + 15
    assert breaker_permit(trial, POLICY, T0 + 11, 5)[1] == 0  # one trial at a time
    assert breaker_record(trial, POLICY, T0 + 12, [True]) == Breaker()
    assert breaker_permit(Breaker(), POLICY, T0 + 12, 5)[1] == 5


def test_it_reopens_when_the_trial_fails_or_allows_another_when_it_is_lost():
    trial, _ = breaker_permit(breaker_record(Breaker(), POLICY, T0, [False] * 3), POLICY, T0 + 10, 1)
    reopened = breaker_record(trial, POLICY, T0 + 12, [False])
    assert reopened.state == OPEN and reopened.open_until == T0 + 22
    # A trial whose caller died: after its deadline another caller may try.
    again, granted = breaker_permit(trial, POLICY, T0 + 15, 1)
    assert granted == 1 and again.trial_until == T0 + 20


@pytest.mark.django_db
def test_it_keeps_breaker_state_in_the_database():
    breakers = CircuitBreaker(POLICY)
    assert breakers.record("agent-a", [False, False], now=T0).state == CLOSED
    assert breakers.record("agent-a", [False], now=T0 + 1).state == OPEN
    assert breakers.states(["agent-a", "agent-b"]) == {"agent-a": Breaker(OPEN, 3, T0 + 11, 0.0)}
    assert breakers.permit("agent-a", 4, now=T0 + 5)[0] == 0
    granted, state = breakers.permit("agent-a", 4, now=T0 + 11)
    assert granted == 1 and state.state == HALF_OPEN
    assert breakers.permit("agent-a", 4, now=T0 + 12)[0] == 0  # another worker asks: the trial is taken
    assert breakers.record("agent-a", [True], now=T0 + 13) == Breaker()
    assert breakers.states(["agent-a"]) == {"agent-a": Breaker()}
