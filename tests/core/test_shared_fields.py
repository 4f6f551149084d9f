"""Serializers that share one set of bound fields (core.serializers.SharedFieldsMixin) across threads."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from tasks.api import TaskOutputSerializer, TaskSubmitInputSerializer
from tests.factories import submit

BODIES = [
    {"description": "Summarise this.", "complexity": 3},
    {"description": "Classify", "complexity": 2, "labels": ["a", "b"], "task_type": "topic"},
    {"description": "", "complexity": 3},
    {"description": "x", "complexity": 11},
    {"description": "x", "complexity": "3"},
    {"description": 7, "complexity": 1},
    {"description": "x", "complexity": 1, "labels": ["a", "a"]},
    {"description": "x", "complexity": 1, "price": "0"},
    {"complexity": 1},
]


def _in_threads(work: Callable[[int], None], *, count: int) -> None:
    """Runs work(0) … work(count - 1) at once, each in its own thread, and waits for all of them."""
    threads = [threading.Thread(target=work, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _validate(body: dict) -> tuple[bool, object]:
    serializer = TaskSubmitInputSerializer(data=body)
    valid = serializer.is_valid()
    return valid, dict(serializer.validated_data) if valid else serializer.errors


def test_it_validates_concurrently_with_the_results_of_one_thread():
    expected = [_validate(body) for body in BODIES]
    assert [valid for valid, _ in expected] == [True, True] + [False] * 7
    mismatches: list[tuple[int, object]] = []

    def work(offset: int) -> None:
        for round_ in range(150):
            index = (offset + round_) % len(BODIES)
            got = _validate(BODIES[index])
            if got != expected[index]:
                mismatches.append((index, got))

    _in_threads(work, count=8)
    assert mismatches == []


def test_each_instance_keeps_its_own_data_and_errors():
    good, bad = TaskSubmitInputSerializer(data=BODIES[0]), TaskSubmitInputSerializer(data=BODIES[3])
    assert good.fields is bad.fields  # shared
    assert good.is_valid() and not bad.is_valid()
    assert good.validated_data["complexity"] == 3 and "complexity" in bad.errors
    assert not good.errors


@pytest.mark.django_db
def test_it_renders_tasks_concurrently_as_one_thread_does(buyer):
    tasks = [submit(buyer, f"task {n}", complexity=1 + n % 10) for n in range(12)]
    expected = [TaskOutputSerializer(task).data for task in tasks]
    assert len({row["id"] for row in expected}) == 12
    many = TaskOutputSerializer(tasks, many=True).data
    assert [dict(row) for row in many] == [dict(row) for row in expected]
    mismatches: list[int] = []

    def work(offset: int) -> None:
        for round_ in range(100):
            index = (offset + round_) % len(tasks)
            if TaskOutputSerializer(tasks[index]).data != expected[index]:
                mismatches.append(index)

    _in_threads(work, count=8)
    assert mismatches == []


@pytest.mark.django_db
def test_a_task_renders_exactly_as_drfs_generic_rendering_would_in_every_state(buyer, other_buyer):
    from decimal import Decimal

    from django.utils import timezone
    from rest_framework import serializers

    from agents.models import Agent
    from tasks.models import Task

    pending = submit(buyer, "Summarise this.", complexity=2)
    labeled = submit(other_buyer, "Classify", labels=["sports", "politics"], task_type="news-topic")
    now = timezone.now()
    Task.objects.filter(pk=labeled.pk).update(
        status=Task.Status.COMPLETED,
        executed_by=Agent.objects.get(name="openai-gpt-4o-mini"),
        result="sports",
        confidence=0.875,
        cost=Decimal("0.00001234"),
        prompt_tokens=31,
        completion_tokens=2,
        latency_ms=412,
        accepted=False,
        correct_label="politics",
        started_at=now,
        finished_at=now,
    )
    Task.objects.filter(pk=pending.pk).update(status=Task.Status.FAILED, error="boom", error_code="llm_error")
    tasks = Task.objects.select_related("agent", "executed_by", "buyer").order_by("created_at")

    for task in tasks:
        generic = serializers.ModelSerializer.to_representation(TaskOutputSerializer(task), task)
        rendered = TaskOutputSerializer(task).data
        assert rendered == generic
        assert list(rendered) == list(generic) == TaskOutputSerializer.Meta.fields
    assert [TaskOutputSerializer(task).data["executed_by"] for task in tasks] == [None, "openai-gpt-4o-mini"]
