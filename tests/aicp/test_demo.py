"""`manage.py demo` against a live server and the LLM simulator answering from the same dataset."""

from __future__ import annotations

import json
import threading
import time
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from duke.models import ModelVersion
from ledger.models import LedgerEntry
from tasks.models import Task

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

TOPICS = {
    "sports": "The striker scored twice as the home team won match {i} of the season.",
    "finance": "Shares of company {i} rose after quarterly earnings beat analyst forecasts.",
    "weather": "A cold front brings heavy rain and strong winds to region {i} tomorrow.",
}


LINES = [
    json.dumps({"text": template.format(i=i), "label": label})
    for i in range(8)
    for label, template in TOPICS.items()
]


@pytest.fixture
def dataset(tmp_path):
    path = tmp_path / "tiny-news.train.jsonl"
    path.write_text("\n".join(LINES) + "\nnot json\n")  # a line the demo must skip, not choke on
    return path


@pytest.fixture
def simulator_dataset(tmp_path):
    path = tmp_path / "simulator.jsonl"
    path.write_text("\n".join(LINES) + "\n")
    return path


@pytest.fixture
def system(settings, tmp_path, make_llm_simulator, simulator_dataset, live_server):
    """A live server whose LLM agents ask a simulator that knows the dataset's labels."""
    simulator = make_llm_simulator(dataset=simulator_dataset)
    settings.OPENAI_BASE_URL = simulator.base_url
    settings.OPENAI_API_KEY = "test-key"
    settings.DATA_DIR = tmp_path / "data"
    settings.DUKE_ENCODE_ON_RECORD = False
    return live_server


def run_demo(base_url: str, dataset, *args: str) -> str:
    out = StringIO()
    call_command("demo", "--dataset", str(dataset), "--base-url", base_url, "--rate", "0", *args, stdout=out)
    return out.getvalue()


def test_it_submits_the_dataset_as_labeling_tasks_and_summarises(system, dataset):
    output = run_demo(system.url, dataset, "--tasks", "12")

    tasks = Task.objects.filter(buyer__username="demo-buyer")
    assert tasks.count() == 12
    assert set(tasks.values_list("status", flat=True)) == {"completed"}
    assert {tuple(task.labels) for task in tasks} == {("finance", "sports", "weather")}
    assert set(tasks.values_list("task_type", flat=True)) == {"tiny-news"}
    answers = {task.description: task.result for task in tasks}
    expected = {t.format(i=i): label for i in range(8) for label, t in TOPICS.items()}
    assert all(expected[text] == result for text, result in answers.items())  # the simulator's labels
    assert "Skipped 1 line(s)" in output
    assert "Registered the demo buyer 'demo-buyer'" in output
    assert "[" + "#" * 30 + "] 12/12" in output
    assert "12 submitted · 12 completed · 0 failed" in output
    assert "Duke served 0 of 12 tasks (0.0%)" in output


def test_it_reuses_the_demo_buyer_and_credits_it_when_low(system, dataset, settings):
    settings.AICP_SIGNUP_CREDIT = Decimal("0.0100")  # not enough for the run
    first = run_demo(system.url, dataset, "--tasks", "5")
    second = run_demo(system.url, dataset, "--tasks", "3", "--seed", "1")

    assert "Credited" in first
    credits = LedgerEntry.objects.filter(memo="demo credit", account__user__username="demo-buyer")
    assert credits.exists()
    assert "Signed in as the demo buyer 'demo-buyer'" in second
    assert Task.objects.filter(buyer__username="demo-buyer", status="completed").count() == 8


def test_it_counts_failures(system, dataset, make_llm_simulator, settings):
    from agents.simulator import Fault

    broken = make_llm_simulator()
    broken.script(*[Fault(401, code="invalid_api_key", message="bad key")] * 20)
    settings.OPENAI_BASE_URL = broken.base_url

    output = run_demo(system.url, dataset, "--tasks", "3")

    assert "3 submitted · 0 completed · 3 failed" in output
    assert Task.objects.filter(buyer__username="demo-buyer", status="failed").count() == 3


def test_it_refuses_a_dataset_without_enough_labels(tmp_path):
    single = tmp_path / "one.jsonl"
    single.write_text(json.dumps({"text": "a", "label": "x"}) + "\n")

    with pytest.raises(CommandError, match="1 distinct labels"):
        call_command("demo", "--dataset", str(single), stdout=StringIO())
    with pytest.raises(CommandError, match="No dataset"):
        call_command("demo", "--dataset", str(tmp_path / "missing.jsonl"), stdout=StringIO())


def test_it_says_when_no_server_answers(dataset):
    with pytest.raises(CommandError, match="No AICP server answers"):
        call_command("demo", "--dataset", str(dataset), "--base-url", "http://127.0.0.1:9", stdout=StringIO())


def test_it_waits_for_the_training_its_last_samples_started_before_summarising(system, dataset):
    training = ModelVersion.objects.create(number=7, status=ModelVersion.Status.TRAINING, epochs=10)
    waiting = threading.Event()
    finished_at: list[float] = []

    class Output(StringIO):
        def write(self, text: str) -> int:
            if "Waiting for Duke v7 to finish training" in text:
                waiting.set()
            return super().write(text)

    def finish_once_the_demo_waits() -> None:
        # The training ends only after the demo has said it waits for it: the summary must come after.
        if waiting.wait(timeout=120):
            ModelVersion.objects.filter(pk=training.pk).update(status=ModelVersion.Status.CANDIDATE)
            finished_at.append(time.monotonic())
        connection.close()

    threading.Thread(target=finish_once_the_demo_waits, daemon=True).start()
    out = Output()
    call_command(
        "demo", "--dataset", str(dataset), "--base-url", system.url, "--rate", "0", "--tasks", "3", stdout=out
    )
    returned_at = time.monotonic()

    assert "Waiting for Duke v7 to finish training" in out.getvalue()
    assert finished_at and returned_at >= finished_at[0]
    assert "v7 is training" not in out.getvalue()
