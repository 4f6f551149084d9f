"""core.perf.group_commit: callers that arrive while a group is written are written together, once each."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest
from django.db import OperationalError

from core.perf.group_commit import GroupCommit


class Recorder:
    """A write function that records its groups; the first group can be held open to make others queue."""

    def __init__(self, *, poison_fails_with: type[Exception] = Exception) -> None:
        self.groups: list[list[object]] = []
        self.first_started = threading.Event()
        self.release_first = threading.Event()
        self.release_first.set()
        # A group holding "poison" fails as a whole, as a transaction aborted by one bad row would.
        self.poison_fails_with = poison_fails_with
        self._lock = threading.Lock()

    def __call__(self, items: Sequence[object]) -> list[object]:
        with self._lock:
            self.groups.append(list(items))
            first = len(self.groups) == 1
        if first:
            self.first_started.set()
            assert self.release_first.wait(10)
        if "poison" in items:
            raise self.poison_fails_with("the group's transaction failed")
        return [
            ValueError(f"refused {item}") if str(item).startswith("bad") else f"done {item}" for item in items
        ]


def _call_concurrently(commit: GroupCommit, recorder: Recorder, first: object, others: list[object]) -> dict:
    """``first`` starts a group and is held inside its write until every one of ``others`` is queued."""
    outcomes: dict[object, object] = {}

    def call(item: object) -> None:
        try:
            outcomes[item] = commit.submit(item)
        except Exception as error:  # noqa: BLE001 - the test looks at which caller got which error
            outcomes[item] = error

    recorder.release_first.clear()
    leader = threading.Thread(target=call, args=(first,))
    leader.start()
    assert recorder.first_started.wait(10)
    followers = [threading.Thread(target=call, args=(item,)) for item in others]
    for thread in followers:
        thread.start()
    deadline = time.monotonic() + 10
    while len(commit._queued) < len(others) and time.monotonic() < deadline:
        time.sleep(0.001)
    assert len(commit._queued) == len(others)
    recorder.release_first.set()
    for thread in [leader, *followers]:
        thread.join(10)
        assert not thread.is_alive()
    return outcomes


def test_a_lone_caller_writes_a_group_of_one_on_its_own_thread():
    seen_threads = []

    def write(items: Sequence[str]) -> list[str]:
        seen_threads.append(threading.get_ident())
        return [item.upper() for item in items]

    commit = GroupCommit(write, max_group=lambda: 32)
    assert commit.submit("a") == "A"
    assert commit.submit("b") == "B"
    assert seen_threads == [threading.get_ident()] * 2
    assert commit._queued == [] and not commit._leading


def test_callers_queued_behind_a_group_are_written_together_in_arrival_order_each_once():
    recorder = Recorder()
    commit = GroupCommit(recorder, max_group=lambda: 32)
    others = [f"item-{n}" for n in range(6)]
    outcomes = _call_concurrently(commit, recorder, "first", others)

    assert recorder.groups[0] == ["first"]
    assert len(recorder.groups) == 2 and sorted(recorder.groups[1]) == sorted(others)
    assert outcomes == {item: f"done {item}" for item in ["first", *others]}
    assert commit._queued == [] and not commit._leading


def test_no_group_is_larger_than_the_maximum_and_the_lead_passes_on_until_the_queue_is_empty():
    recorder = Recorder()
    commit = GroupCommit(recorder, max_group=lambda: 3)
    others = [f"item-{n}" for n in range(8)]
    outcomes = _call_concurrently(commit, recorder, "first", others)

    assert [len(group) for group in recorder.groups] == [1, 3, 3, 2]
    written = [item for group in recorder.groups for item in group]
    assert sorted(written) == sorted(["first", *others])  # every item, none twice
    assert outcomes == {item: f"done {item}" for item in written}
    assert commit._queued == [] and not commit._leading


def test_an_items_own_refusal_is_raised_in_its_caller_only():
    recorder = Recorder()
    commit = GroupCommit(recorder, max_group=lambda: 32)
    outcomes = _call_concurrently(commit, recorder, "first", ["good-1", "bad-2", "good-3"])

    assert len(recorder.groups) == 2
    assert isinstance(outcomes["bad-2"], ValueError) and str(outcomes["bad-2"]) == "refused bad-2"
    assert outcomes["good-1"] == "done good-1" and outcomes["good-3"] == "done good-3"


def test_when_a_group_fails_as_a_whole_each_item_is_written_alone_and_only_the_culprit_fails():
    class Poisoned(Exception):
        pass

    recorder = Recorder(poison_fails_with=Poisoned)
    commit = GroupCommit(recorder, max_group=lambda: 32)
    outcomes = _call_concurrently(commit, recorder, "first", ["a", "poison", "b"])

    assert isinstance(outcomes["poison"], Poisoned)
    assert outcomes == outcomes | {"first": "done first", "a": "done a", "b": "done b"}
    # The failed group of three, then each of its items alone, in order.
    assert [len(group) for group in recorder.groups] == [1, 3, 1, 1, 1]
    assert [group[0] for group in recorder.groups[2:]] == recorder.groups[1]


def test_a_database_that_cannot_be_written_fails_the_whole_group_without_retrying_each():
    recorder = Recorder(poison_fails_with=OperationalError)
    commit = GroupCommit(recorder, max_group=lambda: 32)
    outcomes = _call_concurrently(commit, recorder, "first", ["a", "poison", "b"])

    assert [len(group) for group in recorder.groups] == [1, 3]
    for item in ("a", "poison", "b"):
        assert isinstance(outcomes[item], OperationalError)
    assert outcomes["first"] == "done first"


def test_a_write_that_returns_the_wrong_number_of_results_fails_loudly():
    commit = GroupCommit(lambda items: [], max_group=lambda: 32)
    with pytest.raises(RuntimeError, match="0 results for 1 items"):
        commit.submit("a")
    assert not commit._leading  # the next caller can lead
    commit._write = lambda items: ["ok" for _ in items]
    assert commit.submit("b") == "ok"
