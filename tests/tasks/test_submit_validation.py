"""POST /tasks's quick paths agree with DRF: its body check (plainly_valid) and its answer (render)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

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


def _agree(body: object) -> dict | None:
    """The quick path's answer, after checking it is the serializer's (or that it deferred to it)."""
    quick = TaskSubmitInputSerializer.plainly_valid(body)
    if quick is not None:
        assert quick == _by_serializer(body), body
    return quick


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

DEFERRED = [  # not plainly valid: the serializer decides (most are refused, a few accepted)
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
    {"description": "x", "complexity": 1, "unknown": "ignored by DRF"},
]


@pytest.mark.parametrize("body", TYPICAL)
def test_typical_bodies_take_the_quick_path_with_the_serializers_data(body):
    quick = _agree(body)
    assert quick is not None
    assert quick == _by_serializer(body)


@pytest.mark.parametrize("body", DEFERRED)
def test_anything_else_is_left_to_the_serializer(body):
    assert TaskSubmitInputSerializer.plainly_valid(body) is None


def test_what_the_serializer_refuses_is_never_plainly_valid():
    refused = [body for body in DEFERRED if _by_serializer(body) is None]
    assert len(refused) >= len(DEFERRED) - 4  # padding on a slug, an unknown key: accepted by DRF
    assert all(TaskSubmitInputSerializer.plainly_valid(body) is None for body in refused)


_text = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", " ", "a", " a ", "a\n", "\x00", "\ud800", "x" * 65, "news-topic", "ü"]),
)
_value = st.one_of(
    _text,
    st.none(),
    st.booleans(),
    st.integers(min_value=-2, max_value=12),
    st.floats(allow_nan=False, width=16),
    st.lists(_text, max_size=4),
)


@hsettings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(["description", "complexity", "task_type", "labels", "agent", "price"]),
        _value,
        max_size=6,
    )
)
def test_on_any_body_the_quick_path_agrees_or_defers(body):
    _agree(body)


@hsettings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.fixed_dictionaries(
        {"description": st.text(min_size=1, max_size=20), "complexity": st.integers(0, 11)},
        optional={
            "labels": st.one_of(st.none(), st.lists(st.text(max_size=4), max_size=4)),
            "task_type": st.one_of(st.sampled_from(["", "topic", "news-topic_2"]), st.text(max_size=5)),
            "agent": st.one_of(st.just("auto"), st.text(max_size=5)),
        },
    )
)
def test_on_nearly_valid_bodies_the_quick_path_agrees_or_defers(body):
    _agree(body)


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
