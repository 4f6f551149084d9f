"""Drain slots: at most AICP_DRAINERS drainer jobs queued or running, each holding a slot's lease.

Submissions enqueue a drainer only while a slot is free, so a burst of thousands of tasks costs a few
jobs, not one job each; a dead drainer's lease runs out and frees its slot.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Q
from django.utils import timezone

from tasks.models import DrainSlot
from tasks.selectors import drain_slots_busy


@dataclass(frozen=True)
class SlotLease:
    number: int
    token: uuid.UUID


def _take_drain_slot(*, number: int, token: uuid.UUID, state: str, lease_s: float, now: datetime) -> bool:
    return bool(
        DrainSlot.objects.filter(Q(lease_until__isnull=True) | Q(lease_until__lte=now), number=number).update(
            token=token, state=state, lease_until=now + timedelta(seconds=lease_s), updated_at=now
        )
    )


def _take_any_drain_slot(*, slots: int, state: str, lease_s: float) -> SlotLease | None:
    now = timezone.now()
    if drain_slots_busy(slots=slots, now=now) >= slots:
        return None  # the usual answer under load, found without building an ORM query
    leases = dict(DrainSlot.objects.filter(number__lt=slots).values_list("number", "lease_until"))
    if len(leases) < slots:
        DrainSlot.objects.bulk_create(
            [DrainSlot(number=n) for n in range(slots) if n not in leases], ignore_conflicts=True
        )
    for number in range(slots):
        if leases.get(number) is not None and leases[number] > now:
            continue
        token = uuid.uuid4()
        if _take_drain_slot(number=number, token=token, state=state, lease_s=lease_s, now=now):
            return SlotLease(number, token)
    return None


# Not @transaction.atomic on purpose: every submission calls this, and on SQLite an atomic block takes the
# write lock at BEGIN even to find that all slots are busy. Each UPDATE on its own is atomic.
def drain_slot_reserve(*, slots: int, ttl_s: float) -> SlotLease | None:
    """Reserves a free drainer slot for a job about to be enqueued; None when all are busy (one read)."""
    return _take_any_drain_slot(slots=slots, state=DrainSlot.State.QUEUED, lease_s=ttl_s)


def drain_slot_acquire(*, slots: int, lease_s: float, reserved: SlotLease | None = None) -> SlotLease | None:
    """A starting drainer takes the slot reserved for it, or any free one; None: enough drainers run."""
    if reserved is not None:
        now = timezone.now()
        if DrainSlot.objects.filter(number=reserved.number, token=reserved.token).update(
            state=DrainSlot.State.RUNNING, lease_until=now + timedelta(seconds=lease_s), updated_at=now
        ):
            return reserved
    return _take_any_drain_slot(slots=slots, state=DrainSlot.State.RUNNING, lease_s=lease_s)


def drain_slot_renew(*, lease: SlotLease, lease_s: float) -> bool:
    now = timezone.now()
    return bool(
        DrainSlot.objects.filter(number=lease.number, token=lease.token).update(
            lease_until=now + timedelta(seconds=lease_s), updated_at=now
        )
    )


def drain_slot_release(*, lease: SlotLease) -> None:
    DrainSlot.objects.filter(number=lease.number, token=lease.token).update(
        state=DrainSlot.State.IDLE, token=None, lease_until=None, updated_at=timezone.now()
    )
