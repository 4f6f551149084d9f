"""manage.py export_training_data: OpenAI fine-tuning chat JSONL and plain {text, label} lines."""

import io
import json
import uuid
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from agents.llm import request_messages
from duke.models import TrainingData

pytestmark = pytest.mark.django_db


def _sample(text, output, *, labels=("spam", "ham"), task_type="mail", correct_label="", age_days=0):
    sample = TrainingData.objects.create(
        task_id=uuid.uuid4(),
        input_text=text,
        task_type=task_type,
        labels=list(labels) if labels else None,
        output=output,
        correct_label=correct_label,
        source=TrainingData.Source.BUYER if correct_label else TrainingData.Source.LLM,
        split=TrainingData.Split.TRAIN,
    )
    if age_days:
        TrainingData.objects.filter(pk=sample.pk).update(created_at=timezone.now() - timedelta(days=age_days))
    return sample


def _export(*args):
    out = io.StringIO()
    call_command("export_training_data", *args, stdout=out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_it_writes_plain_text_label_lines_with_corrections_winning():
    _sample("Win a cruise", "spam")
    _sample("Lunch at noon?", "spam", correct_label="ham")
    _sample("Write a poem", "Roses are red", labels=None, task_type="")  # free-form: no label to export
    assert _export("--format", "jsonl") == [
        {"text": "Win a cruise", "label": "spam"},
        {"text": "Lunch at noon?", "label": "ham"},
    ]


def test_it_writes_openai_chat_lines_with_the_production_prompt():
    _sample("Lunch at noon?", "spam", correct_label="ham")
    _sample("Write a poem", "Roses are red", labels=None, task_type="")
    labeled, free_form = _export("--format", "openai")
    messages = labeled["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert messages[:2] == request_messages(text="Lunch at noon?", labels=["spam", "ham"])
    assert '["spam", "ham"]' in messages[0]["content"]
    assert json.loads(messages[2]["content"]) == {"label": "ham"}  # the structured answer, corrected
    assert free_form["messages"][1:] == [
        {"role": "user", "content": "Write a poem"},
        {"role": "assistant", "content": "Roses are red"},
    ]


def test_it_filters_by_task_type_and_date():
    _sample("old mail", "spam", age_days=10)
    _sample("new mail", "ham")
    _sample("a review", "fresh", labels=("fresh", "rotten"), task_type="review")
    assert [r["text"] for r in _export("--format", "jsonl", "--task-type", "mail")] == [
        "old mail",
        "new mail",
    ]
    since = (timezone.now() - timedelta(days=2)).date().isoformat()
    assert [r["text"] for r in _export("--format", "jsonl", "--since", since)] == ["new mail", "a review"]
    both = _export("--format", "jsonl", "--task-type", "mail", "--since", since)
    assert [r["text"] for r in both] == ["new mail"]


def test_it_writes_to_a_file(tmp_path):
    _sample("Win a cruise", "spam")
    target = tmp_path / "out.jsonl"
    assert _export("--format", "jsonl", "--output", str(target)) == []
    assert [json.loads(line) for line in target.read_text().splitlines()] == [
        {"text": "Win a cruise", "label": "spam"}
    ]
    assert list(tmp_path.iterdir()) == [target]  # no temp file left behind


def test_it_keeps_non_ascii_text_readable(tmp_path):
    _sample("Déjeuner à midi ? 🍽", "ham")
    target = tmp_path / "out.jsonl"
    _export("--format", "jsonl", "--output", str(target))
    assert "Déjeuner à midi ? 🍽" in target.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "args",
    [
        ["--format", "csv"],
        ["--format", "jsonl", "--since", "last tuesday"],
        ["--format", "jsonl", "--output", "/no/such/dir/out.jsonl"],
    ],
)
def test_it_refuses_bad_arguments(args):
    with pytest.raises(CommandError):
        _export(*args)
