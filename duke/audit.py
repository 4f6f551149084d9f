"""Writes on Duke's routing state: the tasks it served, their live audit, buyers' verdicts, suspension.

Called by tasks with plain values (duke never imports tasks). A separate module from services.py, which
holds samples, training and promotion.

Live agreement of a (production version, task type) counts one observation per served task that has
been checked: the buyer's verdict when there is one (the buyer knows best), else the LLM audit's.
Routing for the pair stops when the evidence says agreement is below DUKE_TARGET_AGREEMENT: with at
least `min_live_observations()` observations, the *upper* end of the Wilson interval is below the target.
(Requiring the lower end to stay above the target, as the threshold calibration does, would suspend
every type early on: 20 agreements out of 20 have a Wilson lower bound of 0.84.)
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from core.ids import short_id
from duke.calibration import wilson_lower_bound
from duke.models import RoutingState, ServedTask
from duke.services import sample_record

logger = logging.getLogger("duke")

DEFAULT_MIN_LIVE_OBSERVATIONS = 20


def min_live_observations() -> int:
    return int(getattr(settings, "DUKE_MIN_LIVE_AUDITS", DEFAULT_MIN_LIVE_OBSERVATIONS))


def wilson_upper_bound(successes: int, n: int) -> float:
    """Upper end of the Wilson interval: the lower end of the failure rate, mirrored (1 when n == 0)."""
    if n <= 0:
        return 1.0
    return 1.0 - wilson_lower_bound(n - successes, n)


@dataclass(frozen=True)
class LiveAgreement:
    observations: int  # served tasks checked by an audit or a buyer
    agreed: int
    audits: int  # LLM audits answered
    audits_agreed: int
    audits_pending: int
    audits_failed: int
    buyer_verdicts: int
    buyer_rejected: int

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.observations if self.observations else None

    @property
    def lower_bound(self) -> float:
        return wilson_lower_bound(self.agreed, self.observations)

    @property
    def upper_bound(self) -> float:
        return wilson_upper_bound(self.agreed, self.observations)


_CHECKED = Q(verdict__in=[ServedTask.Verdict.ACCEPTED, ServedTask.Verdict.REJECTED]) | Q(
    verdict=ServedTask.Verdict.NONE, audit__in=[ServedTask.Audit.AGREED, ServedTask.Audit.DISAGREED]
)
_AGREED = Q(verdict=ServedTask.Verdict.ACCEPTED) | Q(
    verdict=ServedTask.Verdict.NONE, audit=ServedTask.Audit.AGREED
)


def live_agreement_by_type(*, model_version: int) -> dict[str, LiveAgreement]:
    rows = (
        ServedTask.objects.filter(model_version=model_version)
        .values("task_type")
        .annotate(
            observations=Count("pk", filter=_CHECKED),
            agreed=Count("pk", filter=_AGREED),
            audits=Count("pk", filter=Q(audit__in=[ServedTask.Audit.AGREED, ServedTask.Audit.DISAGREED])),
            audits_agreed=Count("pk", filter=Q(audit=ServedTask.Audit.AGREED)),
            audits_pending=Count("pk", filter=Q(audit=ServedTask.Audit.PENDING)),
            audits_failed=Count("pk", filter=Q(audit=ServedTask.Audit.FAILED)),
            buyer_verdicts=Count("pk", filter=~Q(verdict=ServedTask.Verdict.NONE)),
            buyer_rejected=Count("pk", filter=Q(verdict=ServedTask.Verdict.REJECTED)),
        )
        .order_by("task_type")
    )
    return {row.pop("task_type"): LiveAgreement(**row) for row in rows}


def live_agreement(*, task_type: str, model_version: int) -> LiveAgreement:
    found = live_agreement_by_type(model_version=model_version).get(task_type)
    return found or LiveAgreement(0, 0, 0, 0, 0, 0, 0, 0)


@transaction.atomic
def served_record(
    *,
    task_id: uuid.UUID,
    task_type: str,
    model_version: int,
    label: str,
    confidence: float,
    price: Decimal,
    llm_agent: str,
    llm_price: Decimal,
    llm_cost_estimate: Decimal,
    audit: bool,
) -> ServedTask:
    """Records a task Duke answered and what the LLM would have cost; `audit` marks it for the LLM check."""
    return ServedTask.objects.create(
        task_id=task_id,
        task_type=task_type,
        model_version=model_version,
        label=label,
        confidence=confidence,
        price=price,
        llm_agent=llm_agent,
        llm_price=llm_price,
        llm_cost_estimate=llm_cost_estimate,
        audit=ServedTask.Audit.PENDING if audit else ServedTask.Audit.NONE,
    )


def audit_pending(*, task_id: uuid.UUID) -> bool:
    """Whether the task still awaits its audit (a repeated job must not pay for a second LLM call)."""
    return ServedTask.objects.filter(task_id=task_id, audit=ServedTask.Audit.PENDING).exists()


@transaction.atomic
def audit_record(
    *,
    task_id: uuid.UUID,
    llm_label: str,
    cost: Decimal,
    text: str,
    complexity: int,
    labels: Sequence[str],
) -> bool | None:
    """Stores the LLM's answer to an audited task: compared with Duke's, kept as a training sample.

    Returns whether the LLM agreed, or None when the task was not awaiting an audit (a repeat).
    """
    served = ServedTask.objects.filter(task_id=task_id).first()
    if served is None:
        return None
    agreed = llm_label == served.label
    updated = ServedTask.objects.filter(
        pk=served.pk, audit__in=[ServedTask.Audit.PENDING, ServedTask.Audit.FAILED]
    ).update(
        audit=ServedTask.Audit.AGREED if agreed else ServedTask.Audit.DISAGREED,
        audit_label=llm_label,
        audit_cost=cost,
    )
    if not updated:
        return None
    # A real LLM label for a real task: the data keeps growing while Duke serves.
    sample_record(
        task_id=task_id,
        text=text,
        task_type=served.task_type,
        complexity=complexity,
        labels=labels,
        output=llm_label,
    )
    logger.info(
        "Duke audit of task %s: LLM %s (%r vs Duke's %r)",
        short_id(task_id),
        "agreed" if agreed else "DISAGREED",
        llm_label,
        served.label,
    )
    routing_evaluate(task_type=served.task_type, model_version=served.model_version)
    return agreed


@transaction.atomic
def audit_fail(*, task_id: uuid.UUID, error: str) -> bool:
    """The audit call failed for good: the task stays unchecked; nobody is billed."""
    failed = ServedTask.objects.filter(task_id=task_id, audit=ServedTask.Audit.PENDING).update(
        audit=ServedTask.Audit.FAILED
    )
    if failed:
        logger.warning("Duke audit of task %s failed: %s", short_id(task_id), error[:300])
    return bool(failed)


@transaction.atomic
def served_verdict(*, task_id: uuid.UUID, accepted: bool) -> bool:
    """A buyer's verdict on Duke's answer counts in live agreement (once). False if not a Duke task."""
    served = ServedTask.objects.filter(task_id=task_id).first()
    if served is None:
        return False
    verdict = ServedTask.Verdict.ACCEPTED if accepted else ServedTask.Verdict.REJECTED
    if ServedTask.objects.filter(pk=served.pk, verdict=ServedTask.Verdict.NONE).update(verdict=verdict):
        routing_evaluate(task_type=served.task_type, model_version=served.model_version)
    return True


@transaction.atomic
def routing_evaluate(*, task_type: str, model_version: int) -> bool:
    """Suspends routing for the pair when live agreement is clearly below target. Returns `suspended`."""
    state = RoutingState.objects.filter(model_version=model_version, task_type=task_type).first()
    if state is not None and state.suspended:
        return True
    live = live_agreement(task_type=task_type, model_version=model_version)
    target = settings.DUKE_TARGET_AGREEMENT
    if live.observations < min_live_observations() or live.upper_bound >= target:
        return False
    reason = (
        f"live agreement {live.agreed}/{live.observations} ({live.agreement:.1%}); "
        f"its upper bound {live.upper_bound:.3f} is below the target {target:.3f}"
    )
    RoutingState.objects.update_or_create(
        model_version=model_version,
        task_type=task_type,
        defaults={"suspended": True, "suspended_at": timezone.now(), "reason": reason},
    )
    logger.warning(
        "Duke routing SUSPENDED for task type %r on v%d: %s", task_type or "untyped", model_version, reason
    )
    return True
