"""Time-ordered identifiers (UUID version 7): they sort by creation time and stay unguessable."""

from __future__ import annotations

import time
import uuid

from core.ids import short_id, time_ordered_uuid


def test_it_is_a_version_7_rfc_uuid_carrying_the_current_unix_millisecond():
    before = time.time_ns() // 1_000_000
    value = time_ordered_uuid()
    after = time.time_ns() // 1_000_000
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert before <= value.int >> 80 <= after


def test_ids_made_in_later_milliseconds_sort_after_earlier_ones():
    earlier = [time_ordered_uuid() for _ in range(50)]
    last_millisecond = max(earlier).int >> 80
    deadline = time.monotonic() + 5
    while time.time_ns() // 1_000_000 <= last_millisecond and time.monotonic() < deadline:
        pass  # until the clock's next millisecond, rather than a sleep that may be too short or long
    later = [time_ordered_uuid() for _ in range(50)]
    assert max(earlier) < min(later)
    assert max(str(e) for e in earlier) < min(str(x) for x in later)  # as text too (SQLite stores hex)
    assert max(e.hex for e in earlier) < min(x.hex for x in later)


def test_the_random_part_makes_each_id_distinct_within_one_millisecond():
    values = [time_ordered_uuid() for _ in range(20_000)]
    assert len(set(values)) == len(values)
    same_millisecond = {}
    for value in values:
        same_millisecond.setdefault(value.int >> 80, []).append(value)
    crowded = max(same_millisecond.values(), key=len)
    assert len(crowded) > 1
    # 74 random bits: the ids of one millisecond differ beyond the timestamp, not by a counter
    assert len({value.int & ((1 << 62) - 1) for value in crowded}) == len(crowded)


def test_a_short_id_is_the_random_tail_so_ids_of_the_same_moment_differ():
    moment = time_ordered_uuid().int >> 80 << 80
    first, second = (
        uuid.UUID(int=moment | 0x7000_8000_0000_0000_0A1B2),
        uuid.UUID(int=moment | 0x7000_8000_0000_0000_0C3D4),
    )
    assert first.hex[:12] == second.hex[:12]  # the same millisecond
    assert (short_id(first), short_id(second)) == ("0a1b2", "0c3d4")
    assert short_id(first) in str(first).replace("-", "")
