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
import json, sys, time
import django
django.setup()
from agents.ratelimit import DatabaseLimiter, Limits, RedisLimiter
backend, key, rpm, duration = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
limiter = RedisLimiter(backend) if backend.startswith("redis://") else DatabaseLimiter()
limits = Limits(rpm=rpm, burst_s=1)
print("ready", flush=True)
start_at = float(sys.stdin.readline())
time.sleep(max(0.0, start_at - time.time()))
granted, first, last = 0, time.time(), time.time()
while time.time() < start_at + duration:
    granted += limiter.take(key, limits, [1]).granted
    last = time.time()
    time.sleep(0.002)
print(json.dumps({"granted": granted, "first": first, "last": last}))
"""


def _database_env() -> dict[str, str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(REPO)}
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        env["AICP_SQLITE_PATH"] = str(db["NAME"])
    else:
        host, port = db["HOST"] or "127.0.0.1", db["PORT"] or 5432
        env["DATABASE_URL"] = f"postgresql://{db['USER']}:{db['PASSWORD']}@{host}:{port}/{db['NAME']}"
    return env


def _take_in_two_processes(backend: str, key: str, rpm: int, duration: float) -> tuple[int, float]:
    """This process and a subprocess take from the same bucket at the same time: (total granted, window)."""
    child = subprocess.Popen(
        [sys.executable, "-c", _SHARED_TAKER, backend, key, str(rpm), str(duration)],
        cwd=REPO,
        env=_database_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "ready", child.stderr.read()
    start_at = time.time() + 0.3
    child.stdin.write(f"{start_at}\n")
    child.stdin.flush()
    limiter = RedisLimiter(backend) if backend.startswith("redis://") else DatabaseLimiter()
    limits = Limits(rpm=rpm, burst_s=1)
    time.sleep(max(0.0, start_at - time.time()))
    mine, first, last = 0, time.time(), time.time()
    while time.time() < start_at + duration:
        mine += limiter.take(key, limits, [1]).granted
        last = time.time()
        time.sleep(0.002)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    theirs = json.loads(out.strip().splitlines()[-1])
    assert theirs["granted"] > 0 and mine > 0, "both processes must have been served"
    window = max(last, theirs["last"]) - min(first, theirs["first"])
    return mine + theirs["granted"], window


def _assert_shared_rate(total: int, window: float, rpm: int) -> None:
    rate, burst = rpm / 60, max(1.0, rpm / 60)
    # Two processes each holding their own bucket would get about twice this.
    assert total <= burst + rate * window + 1
    assert total >= rate * window * 0.6, "the limiter must not starve its callers either"


# serialized_rollback: a plain flush would recreate content types that the next serialized test reloads.
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_it_shares_the_database_bucket_between_two_processes():
    total, window = _take_in_two_processes("db", "shared-agent", rpm=1200, duration=1.5)
    _assert_shared_rate(total, window, rpm=1200)


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
    total, window = _take_in_two_processes(redis_url, "shared-agent", rpm=1200, duration=1.5)
    _assert_shared_rate(total, window, rpm=1200)


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
