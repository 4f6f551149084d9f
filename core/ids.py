"""Identifiers that sort by creation time (UUID version 7, RFC 9562).

A random (version 4) key puts each new row at a random place in every index on it: on SQLite each
submission then wrote a separate page of the tasks' primary key, of the ledger's task, hold and
transaction indexes, which was most of what a commit wrote to the WAL. Keys that grow with time are
appended, so a group of inserts shares the last page of each of those indexes. The 74 random bits
left still make them unguessable; ownership, not the key, is what guards access.
"""

from __future__ import annotations

import os
import time
import uuid


def time_ordered_uuid() -> uuid.UUID:
    """A version 7 UUID: 48 bits of Unix milliseconds, then 74 random bits (version and variant set)."""
    milliseconds = time.time_ns() // 1_000_000
    value = (milliseconds & 0xFFFF_FFFF_FFFF) << 80 | int.from_bytes(os.urandom(10), "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # variant 10 (RFC 9562)
    return uuid.UUID(int=value)


def short_id(value: uuid.UUID) -> str:
    """Five hex characters naming an id in logs and lists: its random tail, not its head.

    A time-ordered id's head is its timestamp, shared by every id made within minutes of each other.
    Still a substring of the full id, so the admin's search finds it.
    """
    return value.hex[-5:]
