"""How long the dashboard's over-time reads take on a large history (SQLite, a throw-away database).

    .venv/bin/python bench/dashboard_timeline.py --tasks 100000

Fills a fresh database with `--tasks` tasks spread over the last week (a third served by Duke, 3% failed,
three ledger rows each), then times each read of the timeline part of the dashboard per window, and the
whole snapshot, median of `--repeat` runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="aicp-bench-timeline-"))
    os.environ.update(
        {"DJANGO_SETTINGS_MODULE": "aicp.settings", "AICP_DATA_DIR": str(data_dir), "OPENAI_API_KEY": ""}
    )
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    fill(args.tasks)
    measure(args.repeat)


def fill(n: int) -> None:
    from django.db import transaction
    from django.utils import timezone

    from agents.models import Agent
    from duke.models import ServedTask
    from ledger.models import Account, LedgerEntry
    from tasks.models import Task
    from users.models import User

    buyer = User.objects.create_user(username="bench-buyer", password="x" * 12)
    llm = Agent.objects.exclude(backend="duke").first()
    duke = Agent.objects.filter(backend="duke").first() or llm
    escrow = Account.objects.create(kind=Account.Kind.ESCROW, user=buyer)
    earnings = Account.objects.get_or_create(kind=Account.Kind.AGENT, agent=llm)[0]
    now = timezone.now()
    week = timedelta(days=7).total_seconds()
    started = time.perf_counter()
    batch = 5_000
    with transaction.atomic():
        for offset in range(0, n, batch):
            tasks, served, entries = [], [], []
            for i in range(offset, min(n, offset + batch)):
                created = now - timedelta(seconds=week * (1 - i / n))
                by_duke = i % 3 == 0
                failed = not by_duke and i % 33 == 1
                task = Task(
                    id=uuid.uuid4(),
                    buyer=buyer,
                    description=f"task {i}",
                    complexity=1,
                    task_type="topic",
                    labels=["a", "b"],
                    agent=duke if by_duke else llm,
                    executed_by=None if failed else (duke if by_duke else llm),
                    status="failed" if failed else "completed",
                    price=Decimal("0.0022") if by_duke else Decimal("0.0200"),
                    created_at=created,
                )
                tasks.append(task)
                if by_duke:
                    served.append(
                        ServedTask(
                            task_id=task.id,
                            task_type="topic",
                            model_version=1,
                            label="a",
                            confidence=0.97,
                            price=Decimal("0.0022"),
                            llm_agent=llm.name,
                            llm_price=Decimal("0.0200"),
                            llm_cost_estimate=Decimal("0.00000800"),
                            created_at=created,
                        )
                    )
                tx = uuid.uuid4()
                entries += [
                    LedgerEntry(
                        transaction_id=tx, account=escrow, amount=-task.price, kind="payout", task=task
                    ),
                    LedgerEntry(
                        transaction_id=tx, account=earnings, amount=task.price, kind="payout", task=task
                    ),
                ]
            Task.objects.bulk_create(tasks)
            ServedTask.objects.bulk_create(served)
            LedgerEntry.objects.bulk_create(entries)
    print(f"filled {n:,} tasks in {time.perf_counter() - started:.1f} s", flush=True)
    _spread(n, now, week)


def _spread(n: int, now: datetime, week: float) -> None:
    """bulk_create keeps auto_now_add's `now`: rewrite created_at in SQL, evenly over the week."""
    from django.db import connection

    start = (now - timedelta(seconds=week)).timestamp()
    with connection.cursor() as cursor:
        for table in ("tasks_task", "duke_servedtask"):
            cursor.execute(f"SELECT count(*) FROM {table}")
            count = cursor.fetchone()[0] or 1
            cursor.execute(
                f"UPDATE {table} SET created_at = strftime('%Y-%m-%d %H:%M:%f', "
                f"{start} + (rowid - 1) * {week} / {count}, 'unixepoch')"
            )


def measure(repeat: int) -> None:
    from django.utils import timezone

    from aicp.dashboard import dashboard_snapshot
    from duke.selectors_readiness import duke_readiness
    from ledger.selectors_totals import money_totals
    from tasks.selectors_timeline import WINDOWS, task_timeline, training_events

    def timed(fn: Callable[[], object]) -> float:
        runs = []
        for _ in range(repeat):
            began = time.perf_counter()
            fn()
            runs.append((time.perf_counter() - began) * 1000)
        return statistics.median(runs)

    now = timezone.now()
    for name, window in WINDOWS.items():
        ms = timed(lambda window=window: task_timeline(window=window, now=now))
        rows = task_timeline(window=window, now=now)["buckets"]
        tasks = sum(b["submitted"] for b in rows)
        print(f"task_timeline {name:5s} {len(rows):4d} buckets, {tasks:7,d} tasks: {ms:7.1f} ms")
    week_ago = now - timedelta(days=7)
    print(f"training_events            : {timed(lambda: training_events(since=week_ago)):7.1f} ms")
    print(f"money_totals               : {timed(money_totals):7.1f} ms")
    print(f"duke_readiness             : {timed(duke_readiness):7.1f} ms")
    for name in WINDOWS:
        print(f"dashboard_snapshot({name:5s}) : {timed(lambda name=name: dashboard_snapshot(name)):7.1f} ms")
    print(f"load average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
