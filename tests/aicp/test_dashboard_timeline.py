"""The dashboard over time: buckets, money totals, training events and why Duke is (not) serving."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from aicp.dashboard.timeline import time_chart
from duke.models import ModelVersion, RoutingState, SampleCounter, ServedTask, TrainingData
from duke.selectors_readiness import duke_readiness
from ledger.selectors_totals import money_totals
from tasks.models import Task
from tasks.selectors_timeline import WINDOWS, task_timeline, training_events, window_for
from tasks.services.lifecycle import Outcome, task_complete, task_fail
from tests.factories import submit

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator_session(operator) -> Client:
    client = Client()
    client.force_login(operator)
    return client


def at(task: Task, moment) -> Task:
    Task.objects.filter(pk=task.pk).update(created_at=moment)
    return task


def served(task: Task, moment, *, price: str, llm_price: str, task_type: str = "news") -> None:
    row = ServedTask.objects.create(
        task_id=task.id,
        task_type=task_type,
        model_version=1,
        label="a",
        confidence=0.97,
        price=Decimal(price),
        llm_agent="openai-gpt-4o-mini",
        llm_price=Decimal(llm_price),
        llm_cost_estimate=Decimal("0.00001"),
    )
    ServedTask.objects.filter(pk=row.pk).update(created_at=moment)


def sample(task_type: str, label: str, labels: list[str], n: int = 1) -> None:
    import uuid

    TrainingData.objects.bulk_create(
        TrainingData(
            task_id=uuid.uuid4(),
            input_text=f"{label} {i}",
            task_type=task_type,
            labels=labels,
            output=label,
            split="train",
        )
        for i in range(n)
    )


def test_it_buckets_tasks_share_cost_and_savings_by_minute(buyer, llm_settings):
    now = timezone.now()
    minute_ago = now - timedelta(minutes=10)
    long_ago = now - timedelta(hours=3)
    # Saved before the window: counts in the cumulative line from its first point.
    old = at(submit(buyer, "old", labels=["a", "b"], task_type="news"), long_ago)
    served(old, long_ago, price="0.0010", llm_price="0.0110")
    llm_task = at(submit(buyer, "by the LLM", labels=["a", "b"], task_type="news"), minute_ago)
    task_complete(task_id=llm_task.id, outcome=Outcome(result="a", latency_ms=5))
    duke_task = at(submit(buyer, "by Duke", labels=["a", "b"], task_type="news"), minute_ago)
    task_complete(task_id=duke_task.id, outcome=Outcome(result="b", latency_ms=5))
    served(duke_task, minute_ago, price="0.0020", llm_price="0.0200")
    failed = at(submit(buyer, "fails"), minute_ago)
    task_fail(task_id=failed.id, error="boom", error_code="server_error")

    timeline = task_timeline(window=WINDOWS["hour"], now=now)

    buckets = timeline["buckets"]
    assert len(buckets) == 60
    assert timeline["step_seconds"] == 60
    busy = [b for b in buckets if b["submitted"]]
    assert len(busy) == 1
    bucket = busy[0]
    assert bucket["start"] == minute_ago.replace(second=0, microsecond=0)
    assert (bucket["submitted"], bucket["completed"], bucket["failed"]) == (3, 2, 1)
    assert bucket["labeling_completed"] == 2 and bucket["served_by_duke"] == 1
    assert bucket["duke_share"] == 0.5
    prices = Task.objects.get(pk=llm_task.pk).price + Task.objects.get(pk=duke_task.pk).price
    assert bucket["revenue"] == prices.quantize(Decimal("0.0001"))
    assert bucket["cost_per_task"] == (prices / 2).quantize(Decimal("0.0001"))
    counterfactual = prices - Decimal("0.0020") + Decimal("0.0200")
    assert bucket["llm_cost_per_task"] == (counterfactual / 2).quantize(Decimal("0.0001"))
    assert buckets[0]["saved_cumulative"] == Decimal("0.0100")  # saved before the window
    assert buckets[-1]["saved_cumulative"] == Decimal("0.0280")
    assert all(b["duke_share"] is None for b in buckets if not b["labeling_completed"])


def test_it_switches_windows_and_falls_back_on_an_unknown_one():
    now = timezone.now()
    assert len(task_timeline(window=WINDOWS["day"], now=now)["buckets"]) == 24
    assert len(task_timeline(window=WINDOWS["week"], now=now)["buckets"]) == 168
    assert window_for("fortnight") is WINDOWS["hour"] and window_for(None) is WINDOWS["hour"]


def test_it_lists_training_events_in_the_window():
    now = timezone.now()
    ModelVersion.objects.create(number=1, status="retired", accuracy=0.8)
    ModelVersion.objects.filter(number=1).update(created_at=now - timedelta(days=2))
    ModelVersion.objects.create(number=2, status="production", accuracy=0.9, promoted_at=now, finished_at=now)
    ModelVersion.objects.create(number=3, status="failed")
    RoutingState.objects.create(
        task_type="news", model_version=2, suspended=True, suspended_at=now, reason="agreement 81% < 95%"
    )

    events = training_events(since=now - timedelta(hours=1))

    kinds = [(e["kind"], e["version"]) for e in events]
    assert ("trained", 2) in kinds and ("promoted", 2) in kinds and ("failed", 3) in kinds
    assert ("suspended", 2) in kinds
    assert all(version != 1 for _, version in kinds)  # trained before the window


def test_it_draws_points_and_event_markers_on_a_time_axis():
    now = timezone.now().replace(second=0, microsecond=0)
    window = WINDOWS["hour"]
    start, end = now - timedelta(minutes=59), now + timedelta(minutes=1)
    times = [start + timedelta(minutes=i, seconds=30) for i in range(60)]
    values = [None] * 58 + [0.25, 0.5]
    chart = time_chart(
        name="share",
        title="t",
        window=window,
        start=start,
        end=end,
        times=times,
        series=[{"name": "s", "cls": "series-duke", "values": values}],
        events=[
            {"kind": "promoted", "at": now, "version": 4},
            {"kind": "trained", "at": start - timedelta(1)},
        ],
        y_format=lambda v: f"{v:.0%}",
        y_max=1.0,
    )
    assert chart["points"] == 2 and not chart["empty"]
    dots = chart["series"][0]["dots"]
    assert dots[0]["x"] < dots[1]["x"] <= chart["plot"]["right"]
    assert dots[1]["y"] < dots[0]["y"]  # higher value, higher on the page
    assert [e["text"] for e in chart["events"]] == ["v4 prod"]  # the one outside the window is left out
    assert [g["label"] for g in chart["grid"]] == ["0%", "25%", "50%", "75%", "100%"]


def test_it_totals_the_money(buyer, llm_settings):
    done = submit(buyer, "done")
    task_complete(task_id=done.id, outcome=Outcome(result="ok", latency_ms=5))
    failed = submit(buyer, "fails")
    task_fail(task_id=failed.id, error="boom", error_code="server_error")
    pending = submit(buyer, "waits")

    totals = money_totals()

    done_price = Task.objects.get(pk=done.pk).price
    assert totals["revenue"] == done_price
    assert totals["payouts"] + totals["platform_fees"] == done_price
    assert totals["held_in_escrow"] == Task.objects.get(pk=pending.pk).price
    assert totals["refunds"] == Task.objects.get(pk=failed.pk).price
    assert totals["buyer_balances"] == totals["credits"] - done_price - totals["held_in_escrow"]
    assert all("E" not in str(value) for value in totals.values())


def test_it_says_how_many_samples_duke_still_needs(settings):
    settings.DUKE_MIN_SAMPLES = 50
    settings.DUKE_TRAIN_EVERY = 100
    sample("news", "a", ["a", "b", "c"], 7)
    sample("news", "b", ["a", "b", "c"], 6)
    sample("news", "c", ["a", "b", "c"], 1)
    SampleCounter.objects.create(samples=14)

    readiness = duke_readiness()

    overall = readiness["overall"]
    assert overall["samples"] == 14 and overall["usable_samples"] == 13
    assert overall["next_training"].startswith("needs 37 more samples")
    (news,) = readiness["task_types"]
    assert news["state"] == "collecting" and news["labels_short"] == ["c"]
    assert "'c'" in news["why"]


def test_it_says_when_the_next_version_trains_and_why_a_type_is_not_certified(settings):
    settings.DUKE_MIN_SAMPLES = 50
    settings.DUKE_TRAIN_EVERY = 100
    sample("news", "a", ["a", "b"], 120)
    sample("news", "b", ["a", "b"], 110)
    sample("reviews", "x", ["x", "y"], 30)
    sample("reviews", "y", ["x", "y"], 30)
    SampleCounter.objects.create(samples=290)
    certificate = {
        "threshold": 0.9,
        "coverage": 0.6,
        "served": 120,
        "agreed": 118,
        "lower_bound": 0.96,
        "p_value": 0.001,
        "n": 200,
        "target": 0.95,
        "delta": 0.05,
        "procedure": "ltt",
    }
    ModelVersion.objects.create(
        number=3,
        status="production",
        accuracy=0.93,
        thresholds={"news": {"threshold": 0.9, "coverage": 0.6, "certificate": certificate}},
        promotion={
            "calibration": {"news": certificate, "reviews": {**certificate, "threshold": None, "n": 48}}
        },
    )

    readiness = duke_readiness()

    assert readiness["overall"]["next_training"] == "training v4 at 300 samples"
    types = {row["task_type"]: row for row in readiness["task_types"]}
    assert types["news"]["state"] == "serving" and types["news"]["threshold"] == 0.9
    assert types["reviews"]["state"] == "not certified"
    assert "calibration on 48 samples" in types["reviews"]["why"]
    assert types["reviews"]["next"] == "training v4 at 300 samples"


def test_it_shows_a_training_in_progress(settings):
    settings.DUKE_MIN_SAMPLES = 2
    sample("news", "a", ["a", "b"], 3)
    sample("news", "b", ["a", "b"], 3)
    ModelVersion.objects.create(number=5, status="training", epoch=3, epochs=10)

    assert duke_readiness()["overall"]["next_training"] == "training v5 now (epoch 3/10)"


def test_it_renders_the_timeline_with_a_window_switch(operator_session, buyer, llm_settings):
    task = submit(buyer, "by the LLM", labels=["a", "b"], task_type="news")
    task_complete(task_id=task.id, outcome=Outcome(result="a", latency_ms=5))

    body = operator_session.get("/dashboard").content.decode()
    assert body.count("data-timechart=") == 4
    assert re.search(r'class="window-link active" href="\?window=hour"', body)
    assert 'data-url="/dashboard/data.json?window=hour"' in body
    assert "Why Duke is or isn&#x27;t serving yet" in body or "Why Duke is or isn't serving yet" in body

    day = operator_session.get("/dashboard?window=day").content.decode()
    assert re.search(r'class="window-link active" href="\?window=day"', day)

    data = operator_session.get("/dashboard/data.json?window=week").json()
    assert data["window"] == "week"
    assert [c["name"] for c in data["timecharts"]] == ["share", "cost", "savings", "throughput"]
    assert len(data["timeline"]["buckets"]) == 168
    throughput = next(c for c in data["timecharts"] if c["name"] == "throughput")
    assert throughput["points"] == 2 * 168
    assert data["figures"]["window_tasks"] == "1"
    assert re.fullmatch(r"\d+\.\d{4}", data["money"]["revenue"])  # a plain decimal string
    assert data["tables"]["readiness"][0]["cells"][0]["text"] == "news"

    bogus = operator_session.get("/dashboard/data.json?window=<script>").json()
    assert bogus["window"] == "hour"


def test_it_shows_a_training_in_progress_and_plain_numbers_in_the_json(operator_session, settings):
    settings.DUKE_MIN_SAMPLES = 2
    sample("news", "a", ["a", "b"], 3)
    sample("news", "b", ["a", "b"], 3)
    ModelVersion.objects.create(number=2, status="training", epoch=4, epochs=12)

    response = operator_session.get("/dashboard/data.json?window=day")
    data = response.json()

    assert data["figures"]["ready_next"] == "training v2 now (epoch 4/12)"
    assert data["bars"]["ready_training"] == {"value": 4, "max": 12}
    assert data["flags"]["training"] is True
    body = response.content.decode()
    match = re.search(r"\d(\.\d+)?E[-+]?\d", body)
    assert match is None, body[max(0, match.start() - 200) : match.end() + 20]  # no exponent anywhere
    page = operator_session.get("/dashboard").content.decode()
    assert re.search(r'data-bar="ready_training" value="4" max="12"', page)
    assert "training v2 now (epoch 4/12)" in page
