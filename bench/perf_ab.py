"""A/B of one performance trick of core/perf on POST /tasks: through gunicorn (--http) or in process.

Rounds alternate the trick on (A) and off (B) in A B / B A order, so both sides see the same machine load
and the same growing table. Issue 19: a trick worth less than 10% goes.

``--http`` (the measure issue 19 asks for): each side starts gunicorn as ``run_system`` does (and as
bench/api_load.py's POST /tasks phase), with the trick's switch set in its environment, on one SQLite
file shared by all rounds; ``--clients`` keep-alive clients send POST /tasks back to back for
``--seconds`` after ``--warmup-s``; the server is stopped before the other side starts.

    .venv/bin/python bench/perf_ab.py --http --trick sqlite-queue --rounds 4 --seconds 12

In process: the same requests handed straight to Django's WSGI application on one thread (as api_load's
in-process table); only for tricks whose switch can be flipped in a running process.

    .venv/bin/python bench/perf_ab.py --trick recent-rows --rounds 6 --requests 1500

(Commit 6f35834 ran the same A/B for the plainly_valid validation shortcut: 1.026, since removed.)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (  # noqa: E402
    MANAGE,
    PYTHON,
    apply_env,
    free_port,
    load_average,
    percentile,
    run_checked,
    stack_env,
    start,
    stop,
    wait_for_http,
)
from bench.api_load import Call, in_process, run_phase  # noqa: E402

# The environment that turns each trick off (B); A is the default settings.
SWITCHED_OFF = {
    "sqlite-queue": {"AICP_PERF_SQLITE_QUEUE": "0"},
    "group-commit": {"AICP_SUBMIT_GROUP_MAX": "1"},
    "raw-sql": {"AICP_PERF_RAW_SQL": "0"},
    "recent-rows": {"AICP_RECENT_ROWS_S": "0"},
    "web-worker": {"AICP_PERF_WEB_WORKER": "0"},  # the balanced worker and the frozen heap together
}
IN_PROCESS = ("recent-rows",)


@contextmanager
def _stack(prefix: str) -> Iterator[tuple[Path, dict[str, str]]]:
    """A fresh data directory and database, this process set up on them: (directory, environment)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        data = Path(tmp)
        env = stack_env(
            data,
            DJANGO_SETTINGS_MODULE="bench._site",
            AICP_LOG_LEVEL="WARNING",
            AICP_THROTTLE_SUBMIT="1000000/minute",
        )
        run_checked([PYTHON, MANAGE, "migrate", "--no-input"], env, data / "migrate.log")
        apply_env(env)
        import django

        django.setup()
        yield data, env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trick", choices=sorted(SWITCHED_OFF), required=True)
    parser.add_argument("--http", action="store_true", help="through gunicorn (else in process)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=1500, help="in process: requests per round and side")
    parser.add_argument("--clients", type=int, default=50, help="--http: keep-alive clients")
    parser.add_argument("--seconds", type=float, default=12.0, help="--http: measured seconds per side")
    parser.add_argument("--warmup-s", type=float, default=3.0, help="--http: warm-up per side")
    args = parser.parse_args()
    if args.http:
        return http_ab(args)
    if args.trick not in IN_PROCESS:
        parser.error(f"--trick {args.trick} can only be switched per process: use --http")
    with _stack("aicp-bench-ab-"):
        from django.conf import settings
        from rest_framework_simplejwt.tokens import RefreshToken

        from ledger.services import buyer_credit
        from users.services import buyer_register

        buyer = buyer_register(username="ab-buyer", password="bench-pass-1234567")
        token = str(RefreshToken.for_user(buyer).access_token)
        buyer_credit(user_id=buyer.pk, amount=Decimal("1000000"), memo="bench")
        body = {"description": "Summarise the quarterly report in one sentence.", "complexity": 1}
        calls = [Call("/tasks", body, token)]
        switched_on = settings.AICP_RECENT_ROWS_S

        def switch(on: bool) -> None:
            settings.AICP_RECENT_ROWS_S = switched_on if on else 0.0

        load_before = load_average()
        rates: dict[str, list[float]] = {"A": [], "B": []}
        for round_number in range(args.rounds):
            # A B, then B A: each round's tasks make the next round's table larger and its inserts slower,
            # so the side that always went first would be favoured.
            for side in ("A", "B") if round_number % 2 == 0 else ("B", "A"):
                switch(side == "A")
                try:
                    rates[side].append(in_process(calls, threads=1, per_thread=args.requests).rps)
                finally:
                    switch(True)
        a, b = statistics.median(rates["A"]), statistics.median(rates["B"])
        print(f"load before {load_before}, after {load_average()}")
        print(f"trick: {args.trick}")
        print("A (on) req/s:", [round(r, 1) for r in rates["A"]], "median", round(a, 1))
        print("B (off) req/s:", [round(r, 1) for r in rates["B"]], "median", round(b, 1))
        pairs = [ra / rb for ra, rb in zip(rates["A"], rates["B"], strict=True)]
        print("A/B per round:", [round(r, 3) for r in pairs], "median", round(statistics.median(pairs), 3))
        print(f"A/B of the medians = {a / b:.3f} (keep if >= 1.10)")
    return 0


def http_ab(args: argparse.Namespace) -> int:
    """A/B through gunicorn: a server per side and round, the switch in its environment."""
    from core.perf.web import gunicorn_command

    with _stack("aicp-bench-ab-http-") as (data, env):
        port = free_port()
        from rest_framework_simplejwt.tokens import RefreshToken

        from ledger.services import buyer_credit
        from users.services import buyer_register

        body = {"description": "Summarise the quarterly report in one sentence.", "complexity": 1}
        requests = []
        for index in range(args.clients):
            buyer = buyer_register(username=f"ab-buyer-{index}", password="bench-pass-1234567")
            buyer_credit(user_id=buyer.pk, amount=Decimal("1000000"), memo="bench")
            requests.append(Call("/tasks", body, str(RefreshToken.for_user(buyer).access_token)).http())
        from django.db import connections

        connections.close_all()

        load_before = load_average()
        sides: dict[str, list[tuple[float, float, float]]] = {"A": [], "B": []}  # (req/s, p50, p99)
        failed = 0
        for round_number in range(args.rounds):
            for side in ("A", "B") if round_number % 2 == 0 else ("B", "A"):
                side_env = dict(env) if side == "A" else {**env, **SWITCHED_OFF[args.trick]}
                balanced = side_env.get("AICP_PERF_WEB_WORKER", "1") != "0"
                command = gunicorn_command(
                    python=PYTHON, bind=f"127.0.0.1:{port}", workers=2, balanced=balanced
                )
                web = start(command, side_env, data / f"gunicorn-{side}.log")
                try:
                    wait_for_http(f"http://127.0.0.1:{port}/health", accept=(200, 503))
                    _, phase = run_phase(
                        f"{side}{round_number}", port, requests, args.seconds, args.warmup_s, web.pid
                    )
                finally:
                    stop(web)
                failed += phase.failed
                lat = phase.latencies_ms
                sides[side].append((phase.rps, percentile(lat, 50), percentile(lat, 99)))
                print(
                    f"round {round_number} {side}: {phase.rps:.1f} req/s, p50 {percentile(lat, 50):.1f} ms, "
                    f"p99 {percentile(lat, 99):.1f} ms, failed {phase.failed}, load {load_average()}",
                    flush=True,
                )
    load_after = load_average()
    pairs = [a[0] / b[0] for a, b in zip(sides["A"], sides["B"], strict=True)]
    p99_pairs = [b[2] / a[2] for a, b in zip(sides["A"], sides["B"], strict=True)]

    def median(side: str, index: int) -> float:
        return statistics.median(run[index] for run in sides[side])

    print(
        f"trick: {args.trick} (B = {SWITCHED_OFF[args.trick]}); load before {load_before}, after {load_after}"
    )
    for side in ("A", "B"):
        print(
            f"{side}: req/s {[round(run[0]) for run in sides[side]]} median {median(side, 0):.1f}; "
            f"p99 median {median(side, 2):.1f} ms"
        )
    print(
        f"A/B req/s per round: {[round(p, 3) for p in pairs]} median {statistics.median(pairs):.3f} "
        f"(min {min(pairs):.3f}, max {max(pairs):.3f}); "
        f"p99 B/A per round: {[round(p, 2) for p in p99_pairs]} median {statistics.median(p99_pairs):.2f}"
    )
    print(f"failed requests: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
