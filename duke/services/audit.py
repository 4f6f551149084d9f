"""Writes on Duke's routing state: the tasks it served, their live audit, buyers' verdicts, suspension,
and the live re-certification of each routing threshold.

Called by tasks with plain values (duke never imports tasks).

Live agreement of a (production version, task type) counts one observation per served task that has
been checked: the buyer's verdict when there is one (the buyer knows best), else the LLM audit's.
Routing for the pair stops when the evidence says agreement is below DUKE_TARGET_AGREEMENT: with at
least `min_live_observations()` observations, the *upper* end of the Wilson interval is below the target.
(Requiring the lower end to stay above the target, as the threshold calibration does, would suspend
every type early on: 20 agreements out of 20 have a Wilson lower bound of 0.84.)

Beside that rule, `routing_recertify` re-certifies the threshold itself on live traffic (see
duke.certification.recertify): the LLM audits, which record Duke's confidence, raise it (or suspend
routing) as soon as they reject the target at DUKE_RISK_DELTA; the tasks Duke left to the LLM since the
threshold last changed, scored by the same version at each training, lower it when they certify a
lower one. Repeating the check after every audit is a sequential test that spends more than DUKE_RISK_DELTA
over a long run; a threshold that fails is raised, never loosened, on that evidence alone.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.ids import short_id
from duke.certification import Recertification, recertify
from duke.models import ModelVersion, RoutingState, ServedTask
from duke.selectors import live_agreement, min_live_observations
from duke.services.samples import sample_record

logger = logging.getLogger("duke")


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


def _suspend(*, model_version: int, task_type: str, reason: str) -> None:
    RoutingState.objects.update_or_create(
        model_version=model_version,
        task_type=task_type,
        defaults={"suspended": True, "suspended_at": timezone.now(), "reason": reason[:300]},
    )
    logger.warning(
        "Duke routing SUSPENDED for task type %r on v%d: %s", task_type or "untyped", model_version, reason
    )


@transaction.atomic
def routing_evaluate(*, task_type: str, model_version: int) -> bool:
    """Suspends routing for the pair when live agreement is clearly below target, else re-certifies
    its threshold on the audits. Returns `suspended`."""
    state = RoutingState.objects.filter(model_version=model_version, task_type=task_type).first()
    if state is not None and state.suspended:
        return True
    live = live_agreement(task_type=task_type, model_version=model_version)
    target = settings.DUKE_TARGET_AGREEMENT
    if live.observations >= min_live_observations() and live.upper_bound < target:
        reason = (
            f"live agreement {live.agreed}/{live.observations} ({live.agreement:.1%}); "
            f"its upper bound {live.upper_bound:.3f} is below the target {target:.3f}"
        )
        _suspend(model_version=model_version, task_type=task_type, reason=reason)
        return True
    decision = routing_recertify(model_version=model_version, task_type=task_type)
    return decision is not None and decision.action == "suspend"


@transaction.atomic
def routing_recertify(
    *,
    model_version: int,
    task_type: str,
    below: Sequence[tuple[float, bool, uuid.UUID, datetime]] = (),
) -> Recertification | None:
    """Re-certifies the version's threshold for the type on live traffic; applies and returns the decision.

    `below`: (Duke's confidence, whether the LLM agreed, task id, recorded at) for live tasks the LLM
    answered, scored by this version; only those recorded since the threshold was last set, and not
    served by Duke, count (earlier ones met a different threshold). None: nothing to re-certify.
    """
    version = ModelVersion.objects.select_for_update().filter(number=model_version).first()
    entry = (version.thresholds or {}).get(task_type) if version is not None else None
    if version is None or not isinstance(entry, dict) or entry.get("threshold") is None:
        return None
    if RoutingState.objects.filter(model_version=model_version, task_type=task_type, suspended=True).exists():
        return None
    audits = list(
        ServedTask.objects.filter(
            model_version=model_version,
            task_type=task_type,
            audit__in=[ServedTask.Audit.AGREED, ServedTask.Audit.DISAGREED],
        ).values_list("confidence", "audit")
    )
    since = max(
        [t for t in (version.promoted_at, _parse(entry.get("certified_at"))) if t is not None],
        default=None,
    )
    served_ids = set(
        ServedTask.objects.filter(task_id__in=[task_id for _, _, task_id, _ in below]).values_list(
            "task_id", flat=True
        )
    )
    unserved = [
        (conf, agreed)
        for conf, agreed, task_id, at in below
        if task_id not in served_ids and (since is None or at >= since)
    ]
    current = float(entry["threshold"])
    decision = recertify(
        current=current,
        audited_confidence=[conf for conf, _ in audits],
        audited_agreed=[audit == ServedTask.Audit.AGREED for _, audit in audits],
        below_confidence=[conf for conf, _ in unserved],
        below_agreed=[agreed for _, agreed in unserved],
        target=settings.DUKE_TARGET_AGREEMENT,
        delta=settings.DUKE_RISK_DELTA,
        min_observations=min_live_observations(),
    )
    if decision.action == "suspend":
        _suspend(model_version=model_version, task_type=task_type, reason=decision.reason)
    elif decision.action in ("raise", "lower") and decision.certificate is not None:
        version.thresholds = {
            **version.thresholds,
            task_type: {
                **entry,
                "threshold": decision.threshold,
                "certificate": decision.certificate.as_json(),
                "certified_at": timezone.now().isoformat(),
                "source": "live",
                "previous_threshold": current,
                "reason": decision.reason,
            },
        }
        version.save(update_fields=["thresholds"])
        logger.warning(
            "Duke routing threshold for %r on v%d %sd: %s",
            task_type or "untyped",
            model_version,
            decision.action,
            decision.reason,
        )
    return decision


def _parse(value: object) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None
