"""POST /tasks's body check (the input serializer) on typical and edge bodies, and its answer (render)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from agents.models import Agent
from tasks.api import (
    MAX_DESCRIPTION,
    MAX_LABEL_LENGTH,
    MAX_LABELS,
    MAX_TASK_TYPE,
    TaskOutputSerializer,
    TaskSubmitInputSerializer,
)
from tasks.models import Task
from tasks.services.lifecycle import Outcome, task_claim, task_complete, task_fail
from tests.factories import submit


def _by_serializer(body: object) -> dict | None:
    serializer = TaskSubmitInputSerializer(data=body)
    return dict(serializer.validated_data) if serializer.is_valid() else None


TYPICAL = [
    {"description": "Summarise the quarterly report in one sentence.", "complexity": 1},
    {"description": "  padded  ", "complexity": 10},
    {
        "description": "Classify",
        "complexity": 2,
        "labels": ["positive", "negative"],
        "task_type": "sentiment",
    },
    {"description": "Classify", "complexity": 2, "labels": [" a ", "b"], "task_type": ""},
    {"description": "ünïcode ✓ and 'quotes'", "complexity": 3, "agent": "openai-gpt-4o-mini"},
    {"description": "x", "complexity": 5, "labels": None, "task_type": "news-topic_2", "agent": "auto"},
    {"description": "x" * MAX_DESCRIPTION, "complexity": 1, "labels": [str(n) for n in range(MAX_LABELS)]},
    {"description": "x", "complexity": 1, "labels": ["l" * MAX_LABEL_LENGTH, "m"], "task_type": "t" * 64},
]

EDGES = [  # most are refused, a few accepted
    None,
    [],
    "text",
    {},
    {"complexity": 1},
    {"description": "x"},
    {"description": "", "complexity": 1},
    {"description": "   ", "complexity": 1},
    {"description": None, "complexity": 1},
    {"description": 7, "complexity": 1},
    {"description": "x" * (MAX_DESCRIPTION + 1), "complexity": 1},
    {"description": "nul \x00 inside", "complexity": 1},
    {"description": "lone \ud800 surrogate", "complexity": 1},
    {"description": "x", "complexity": 0},
    {"description": "x", "complexity": 11},
    {"description": "x", "complexity": "3"},
    {"description": "x", "complexity": 3.0},
    {"description": "x", "complexity": True},
    {"description": "x", "complexity": None},
    {"description": "x", "complexity": 1, "task_type": "has space"},
    {"description": "x", "complexity": 1, "task_type": "slug\n"},
    {"description": "x", "complexity": 1, "task_type": " padded "},
    {"description": "x", "complexity": 1, "task_type": "t" * (MAX_TASK_TYPE + 1)},
    {"description": "x", "complexity": 1, "task_type": None},
    {"description": "x", "complexity": 1, "task_type": 5},
    {"description": "x", "complexity": 1, "labels": []},
    {"description": "x", "complexity": 1, "labels": ["only"]},
    {"description": "x", "complexity": 1, "labels": ["a", "a"]},
    {"description": "x", "complexity": 1, "labels": ["a", " a"]},
    {"description": "x", "complexity": 1, "labels": ["a", ""]},
    {"description": "x", "complexity": 1, "labels": ["a", 2]},
    {"description": "x", "complexity": 1, "labels": "a,b"},
    {"description": "x", "complexity": 1, "labels": {"a": 1, "b": 2}},
    {"description": "x", "complexity": 1, "labels": [str(n) for n in range(MAX_LABELS + 1)]},
    {"description": "x", "complexity": 1, "labels": ["l" * (MAX_LABEL_LENGTH + 1), "m"]},
    {"description": "x", "complexity": 1, "agent": ""},
    {"description": "x", "complexity": 1, "agent": None},
    {"description": "x", "complexity": 1, "agent": "a" * 65},
    {"description": "x", "complexity": 1, "price": "0"},
    {"description": "x", "complexity": 1, "status": "completed"},
    {"description": "x", "complexity": 1, "unknown": "a key no field has"},
    {"description": "x", "complexity": 1, "labels": ["a", "b"], "lables": ["a", "b"]},
]


@pytest.mark.parametrize("body", TYPICAL)
def test_typical_bodies_are_accepted_with_trimmed_text_and_defaults(body):
    data = _by_serializer(body)
    assert data == {
        "description": body["description"].strip(),
        "complexity": body["complexity"],
        "task_type": body.get("task_type", ""),
        "labels": [label.strip() for label in body["labels"]] if body.get("labels") else None,
        "agent": body.get("agent", "auto"),
        "callback_url": "",  # issue 21: webhooks and the Batch API path, both optional
        "priority": "normal",
    }


def test_the_serializer_refuses_every_edge_but_a_slug_it_trims():
    accepted = [body for body in EDGES if _by_serializer(body) is not None]
    # DRF's SlugField trims and its regex allows one trailing newline.
    assert accepted == [
        {"description": "x", "complexity": 1, "task_type": "slug\n"},
        {"description": "x", "complexity": 1, "task_type": " padded "},
    ]


@pytest.mark.django_db
def test_render_is_the_serializers_data_for_tasks_in_every_state(buyer):
    agent = Agent.objects.get(name="openai-gpt-4o-mini")
    pending = submit(buyer, "pending task")
    labelled = submit(buyer, "classify me", labels=["yes", "no"], task_type="yes-no")
    completed = submit(buyer, "completed task", complexity=4)
    task_claim(task_id=completed.id)
    task_complete(
        task_id=completed.id,
        outcome=Outcome(
            result="done",
            prompt_tokens=12,
            completion_tokens=3,
            latency_ms=41,
            cost=Decimal("0.0012"),
            confidence=0.875,
        ),
        executed_by_id=agent.id,
    )
    failed = submit(buyer, "failed task")
    task_claim(task_id=failed.id)
    task_fail(task_id=failed.id, error="no", error_code="llm_error")
    tasks = [
        Task.objects.select_related("buyer", "agent", "executed_by").get(pk=task.pk)
        for task in (pending, labelled, completed, failed)
    ]
    assert {task.status for task in tasks} == {"pending", "completed", "failed"}
    for task in [pending, *tasks]:  # as returned by the submission, and as read back
        assert TaskOutputSerializer.render(task) == dict(TaskOutputSerializer(task).data)
    assert TaskOutputSerializer.render(tasks[2])["executed_by"] == agent.name
