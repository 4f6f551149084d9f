"""A/B of one performance trick of core/perf on POST /tasks, in process.

The same requests handed straight to Django's WSGI application on one thread (as api_load's in-process
table), alternating rounds with the trick on (A) and off (B), in A B / B A order, so both see the same
machine load and the same growing table. Issue 19: a trick worth less than 10% goes.

    .venv/bin/python bench/perf_ab.py --trick negotiation --rounds 6 --requests 1500
    .venv/bin/python bench/perf_ab.py --trick recent-rows --rounds 6 --requests 1500

(Commit 6f35834 ran the same A/B for the plainly_valid validation shortcut: 1.026, since removed.)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import MANAGE, PYTHON, apply_env, load_average, run_checked, stack_env  # noqa: E402
from bench.api_load import Call, in_process  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trick", choices=["negotiation", "recent-rows"], required=True)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=1500, help="requests per round and side")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aicp-bench-ab-") as tmp:
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
        from django.conf import settings
        from rest_framework.negotiation import DefaultContentNegotiation
        from rest_framework.views import APIView
        from rest_framework_simplejwt.tokens import RefreshToken

        from ledger.services import buyer_credit
        from users.services import buyer_register

        buyer = buyer_register(username="ab-buyer", password="bench-pass-1234567")
        token = str(RefreshToken.for_user(buyer).access_token)
        buyer_credit(user_id=buyer.pk, amount=Decimal("1000000"), memo="bench")
        body = {"description": "Summarise the quarterly report in one sentence.", "complexity": 1}
        calls = [Call("/tasks", body, token)]
        switched_on = (APIView.content_negotiation_class, settings.AICP_RECENT_ROWS_S)

        def switch(on: bool) -> None:
            if args.trick == "negotiation":
                APIView.content_negotiation_class = switched_on[0] if on else DefaultContentNegotiation
            else:
                settings.AICP_RECENT_ROWS_S = switched_on[1] if on else 0.0

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


if __name__ == "__main__":
    raise SystemExit(main())
