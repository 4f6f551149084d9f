"""Housekeeping between a drainer's rounds: shared state, lease renewals, finding the next work, stopping.

The lease renewals are the heartbeat: a claimed task's lease (AICP_TASK_LEASE_S, 15 s by default) is
renewed every few seconds while its call really runs, however long the call takes; a dead worker renews
nothing, and the lease watchdog (tasks.execution.watchdog) gives its tasks back.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings

from agents.models import Agent
from agents.ratelimit import (
    Breaker,
)
from tasks.execution.flights import DRAIN_LEASE_S, POLL_S, SHARED_REFRESH_S, epoch_to_datetime
from tasks.execution.slots import drain_slot_acquire, drain_slot_release, drain_slot_renew
from tasks.models import Task
from tasks.queue import request_drain
from tasks.selectors import claimable_tasks
from tasks.services.lifecycle import (
    task_extend_leases,
)

logger = logging.getLogger("tasks")


class Housekeeping:
    """The drainer's housekeeping: shared breaker state, lease renewals, idling, stopping, handing over."""

    def _load_agents(self) -> None:
        self.agents.update(dict(Agent.objects.values_list("name", "pk")))

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now >= self.next_refresh:
            self.next_refresh = now + SHARED_REFRESH_S
            keys = list(self.agents)
            epoch = time.time()
            shared = self.breaker.states(keys)
            self.breakers = {key: shared.get(key, Breaker()) for key in keys}
            for key, until in self.limiter.blocked_until(keys).items():
                self.blocked[key] = max(self.blocked.get(key, 0.0), until)
            self.blocked = {key: until for key, until in self.blocked.items() if until > epoch}
        if now >= self.next_renew:
            self.next_renew = now + self.renew_s
            if self.slot is not None:
                drain_slot_renew(lease=self.slot, lease_s=DRAIN_LEASE_S)
            # The heartbeat: every claim held for at least one renewal interval (calls in flight, however
            # long they take, and claims waiting for permits) gets a fresh lease, so the reaper never takes
            # a task from a live worker unless this loop stalls for most of a lease.
            lease_s = settings.AICP_TASK_LEASE_S
            held = [
                f
                for f in [*self.inflight.values(), *self.waiting]
                if f.lease_ends - now <= lease_s - self.renew_s
            ]
            if held:
                for flight in held:
                    flight.lease_ends = now + settings.AICP_TASK_LEASE_S
                task_extend_leases(task_ids=[f.task.id for f in held])

    def _next_work_in(self) -> float | None:
        """Seconds until some task can be claimed: 0 now, None when nothing pending is due at all."""
        epoch = time.time()
        blocked = self._blocked_keys(epoch)
        blocked_ids = [self.agents[k] for k in blocked if k in self.agents]
        if claimable_tasks(exclude_agent_ids=blocked_ids, task_ids=self.task_ids).exists():
            return 0.0
        if self.task_ids is not None:
            return None  # a drainer for given tasks takes what it can now and stops
        due = []
        for key in set(blocked):
            if key in self.agents and claimable_tasks(only_agent_id=self.agents[key]).exists():
                breaker = self.breakers.get(key, Breaker())
                until = max(self.blocked.get(key, 0.0), breaker.blocked_until(epoch))
                due.append(max(0.0, until - epoch))
        next_retry = (
            Task.objects.filter(status=Task.Status.PENDING, not_before__gt=epoch_to_datetime(epoch))
            .exclude(agent_id__in=blocked_ids)
            .order_by("not_before")
            .values_list("not_before", flat=True)
            .first()
        )
        if next_retry is not None:
            due.append(next_retry.timestamp() - epoch)
        return max(POLL_S, min(due)) if due else None

    def _stop(self) -> bool:
        """Leaves the slot, then looks once more: a task submitted while we were leaving is not stranded.

        The submitter commits its task, then looks for a free slot; we free ours, then look for tasks.
        Whichever comes second sees the other's write, so someone always runs the task.
        """
        if self.slot is None:
            return True
        drain_slot_release(lease=self.slot)
        self.slot = None
        if self._next_work_in() != 0.0:
            return True
        self.slot = drain_slot_acquire(slots=settings.AICP_DRAINERS, lease_s=DRAIN_LEASE_S)
        if self.slot is None:
            return True  # another drainer has it
        self.next_claim = 0.0
        return False

    def _hand_over(self) -> None:
        """The slice ended (or the drainer broke): free the slot and, if work is left, queue a successor
        behind the jobs that waited meanwhile (Duke training, the reaper)."""
        try:
            drain_slot_release(lease=self.slot)
            self.slot = None
            if claimable_tasks().exists():
                request_drain()
        except Exception:  # noqa: BLE001 — the slot lease expires; the reaper asks for a drainer
            logger.exception("Drainer could not hand over its slot")

    def _abandon(self) -> None:
        """On the way out (normally nothing is left): unsent claims go back, calls in flight are cancelled."""
        for future in list(self.inflight):
            future.cancel()
        if self.inflight:
            logger.warning(
                "Drainer stopped with %d call(s) in flight; the reaper re-queues them when their leases end",
                len(self.inflight),
            )
        if self.waiting:
            try:
                self._release([(f, time.time()) for f in self.waiting], error="", error_code="")
            except Exception:  # noqa: BLE001 — the leases expire and the reaper re-queues them anyway
                logger.exception("Could not give back %d claimed task(s)", len(self.waiting))
