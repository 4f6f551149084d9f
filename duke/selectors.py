"""Reads on Duke's data and versions, live agreement, and the routing picture (dashboard JSON)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Count, Max, Q, QuerySet, Sum, TextField, Value
from django.db.models.functions import Coalesce, NullIf

from core.money import plain
from duke.calibration import wilson_lower_bound
from duke.models import ModelVersion, RoutingState, SampleCounter, ServedTask, TrainingData
from duke.router import threshold_for

MONEY_PLACES = Decimal("0.0001")
COST_PLACES = Decimal("0.00000001")


def model_version_list() -> QuerySet[ModelVersion]:
    """Every version, oldest first (the order a learning curve is read in)."""
    return ModelVersion.objects.order_by("number")


def model_version_production() -> ModelVersion | None:
    return ModelVersion.objects.filter(status=ModelVersion.Status.PRODUCTION).first()


def model_version_training() -> ModelVersion | None:
    return ModelVersion.objects.filter(status=ModelVersion.Status.TRAINING).first()


def sample_progress() -> dict[str, int]:
    """Labeling samples collected (by split) and where the count stands against the next training."""
    counts = TrainingData.objects.filter(labels__isnull=False).aggregate(
        total=Count("pk"),
        train=Count("pk", filter=Q(split=TrainingData.Split.TRAIN)),
        validation=Count("pk", filter=Q(split=TrainingData.Split.VALIDATION)),
    )
    # The counter, not the row count, drives the training watermark, so progress is read from it.
    ordinal = SampleCounter.objects.values_list("samples", flat=True).first() or 0
    every = settings.DUKE_TRAIN_EVERY
    since_last = ordinal % every
    return {
        **counts,
        "train_every": every,
        "since_last_training": since_last,
        "until_next_training": every - since_last,
    }


def model_version_get(*, number: int) -> ModelVersion | None:
    return ModelVersion.objects.filter(number=number).first()


def model_version_recent(*, limit: int = 50) -> QuerySet[ModelVersion]:
    """The newest versions first (what a status page shows)."""
    return ModelVersion.objects.order_by("-number")[:limit]


def labeling_samples(*, split: str | None = None) -> QuerySet[TrainingData]:
    """Samples of labeling tasks (free-form results are stored but never trained on), in insert order.

    The order is fixed so that the same data always gives the same training run.
    """
    samples = TrainingData.objects.filter(labels__isnull=False).order_by("pk")
    return samples.filter(split=split) if split else samples


def labeling_samples_last_pk() -> int:
    """The newest labeling sample's pk (0 when none): a snapshot for work that must not chase arrivals."""
    return labeling_samples().aggregate(last=Max("pk"))["last"] or 0


def label_counts() -> Counter:
    """{training label: labeling samples}: a buyer's correction counts instead of the LLM's answer."""
    rows = (
        labeling_samples()
        .order_by()
        .annotate(target=Coalesce(NullIf("correct_label", Value("")), "output", output_field=TextField()))
        .values("target")
        .annotate(n=Count("pk"))
    )
    return Counter({row["target"]: row["n"] for row in rows})


def samples_missing_embedding() -> QuerySet[TrainingData]:
    return labeling_samples().filter(embedding__isnull=True)


STATUS_VERSIONS = 50


def model_status() -> dict:
    """What `GET /model/status` shows: production, sample counts, training progress, recent versions."""
    production = model_version_production()
    training = model_version_training()
    progress = sample_progress()
    return {
        "production_version": production.number if production else None,
        "production_accuracy": production.accuracy if production else None,
        "production_macro_f1": production.macro_f1 if production else None,
        "training_samples": progress["total"],
        "samples_until_next_training": progress["until_next_training"],
        "training_in_progress": (
            {"version": training.number, "epoch": training.epoch, "epochs": training.epochs}
            if training
            else None
        ),
        "versions": list(model_version_recent(limit=STATUS_VERSIONS)),
    }


# --- live agreement ------------------------------------------------------------------------------------

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


# --- the routing picture ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Savings:
    served: int
    paid_to_duke: Decimal  # what buyers paid for Duke's answers
    llm_quotes: Decimal  # what the same tasks would have cost them on the LLM
    llm_cost_avoided: Decimal  # estimated provider token cost of the LLM calls not made
    audit_cost: Decimal  # provider cost of the audit calls (ours, never billed)

    @property
    def money_saved(self) -> Decimal:
        """Saved by buyers: the LLM's quotes minus what Duke charged."""
        return self.llm_quotes - self.paid_to_duke


def savings_by_type() -> dict[str, Savings]:
    """Per task type, over every Duke-served task to date (all versions)."""
    zero = Decimal("0")
    rows = (
        ServedTask.objects.values("task_type")
        .annotate(
            served=Count("pk"),
            paid_to_duke=Sum("price"),
            llm_quotes=Sum("llm_price"),
            llm_cost_avoided=Sum("llm_cost_estimate"),
            audit_cost=Sum("audit_cost"),
        )
        .order_by("task_type")
    )
    return {
        row["task_type"]: Savings(
            served=row["served"],
            paid_to_duke=row["paid_to_duke"] or zero,
            llm_quotes=row["llm_quotes"] or zero,
            llm_cost_avoided=row["llm_cost_avoided"] or zero,
            audit_cost=row["audit_cost"] or zero,
        )
        for row in rows
    }


def labeling_tasks_by_type() -> dict[str, int]:
    """Completed labeling tasks per type: the LLM's (one sample each) plus Duke's (one served row each)."""
    llm_done = (
        TrainingData.objects.filter(labels__isnull=False)
        .exclude(task_id__in=ServedTask.objects.values("task_id"))
        .values("task_type")
        .annotate(n=Count("pk"))
        .order_by()
    )
    totals = {row["task_type"]: row["n"] for row in llm_done}
    for row in ServedTask.objects.values("task_type").annotate(n=Count("pk")).order_by():
        totals[row["task_type"]] = totals.get(row["task_type"], 0) + row["n"]
    return totals


def _money(value: Decimal, places: Decimal = MONEY_PLACES) -> str:
    return plain(value.quantize(places))


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _live_json(live: Any) -> dict[str, Any]:
    return {
        "observations": live.observations,
        "agreed": live.agreed,
        "agreement": round(live.agreement, 4) if live.agreement is not None else None,
        "lower_bound": round(live.lower_bound, 4),
        "upper_bound": round(live.upper_bound, 4),
        "audits": live.audits,
        "audits_agreed": live.audits_agreed,
        "audits_pending": live.audits_pending,
        "audits_failed": live.audits_failed,
        "buyer_verdicts": live.buyer_verdicts,
        "buyer_rejected": live.buyer_rejected,
    }


def _savings_json(savings: Savings) -> dict[str, str]:
    return {
        "money_saved": _money(savings.money_saved),
        "paid_to_duke": _money(savings.paid_to_duke),
        "llm_quotes": _money(savings.llm_quotes),
        "llm_cost_avoided": _money(savings.llm_cost_avoided, COST_PLACES),
        "audit_cost": _money(savings.audit_cost, COST_PLACES),
    }


def routing_status() -> dict:
    """Per task type: threshold, expected coverage, live agreement, suspended or not, savings.

    JSON-ready: money is a string (Decimal), shares and agreements are floats.
    """
    production = ModelVersion.objects.filter(status=ModelVersion.Status.PRODUCTION).first()
    thresholds = (production.thresholds or {}) if production else {}
    live = live_agreement_by_type(model_version=production.number) if production else {}
    states = (
        {s.task_type: s for s in RoutingState.objects.filter(model_version=production.number)}
        if production
        else {}
    )
    savings = savings_by_type()
    labeling = labeling_tasks_by_type()
    empty_live = LiveAgreement(0, 0, 0, 0, 0, 0, 0, 0)
    zero = Decimal("0")
    empty_savings = Savings(0, zero, zero, zero, zero)

    types: dict[str, dict[str, Any]] = {}
    for task_type in sorted(set(thresholds) | set(savings)):
        entry = thresholds.get(task_type) if isinstance(thresholds.get(task_type), dict) else {}
        threshold = threshold_for(production, task_type) if production else None
        state = states.get(task_type)
        suspended = bool(state and state.suspended)
        type_savings = savings.get(task_type, empty_savings)
        total = labeling.get(task_type, 0)
        types[task_type] = {
            "threshold": threshold,
            "expected_coverage": entry.get("coverage"),
            "validation_samples": entry.get("validation_samples"),
            # How the threshold was earned: served/agreed, bound, delta, target, procedure; "live" when
            # live traffic last re-certified it.
            "certificate": entry.get("certificate"),
            "threshold_source": entry.get("source", "out-of-fold") if threshold is not None else None,
            "routing": threshold is not None and not suspended,
            "suspended": suspended,
            "suspended_at": state.suspended_at.isoformat() if suspended and state.suspended_at else None,
            "suspended_reason": state.reason if suspended else "",
            "live": _live_json(live.get(task_type, empty_live)),
            "served_by_duke": type_savings.served,
            "labeling_tasks": total,
            "share": _share(type_savings.served, total),
            **_savings_json(type_savings),
        }
    all_savings = Savings(
        served=sum(s.served for s in savings.values()),
        paid_to_duke=sum((s.paid_to_duke for s in savings.values()), zero),
        llm_quotes=sum((s.llm_quotes for s in savings.values()), zero),
        llm_cost_avoided=sum((s.llm_cost_avoided for s in savings.values()), zero),
        audit_cost=sum((s.audit_cost for s in savings.values()), zero),
    )
    all_labeling = sum(labeling.values())
    return {
        "production_version": production.number if production else None,
        "target_agreement": settings.DUKE_TARGET_AGREEMENT,
        "audit_rate": settings.DUKE_AUDIT_RATE,
        "min_live_observations": min_live_observations(),
        "task_types": types,
        "totals": {
            "served_by_duke": all_savings.served,
            "labeling_tasks": all_labeling,
            "share": _share(all_savings.served, all_labeling),
            **_savings_json(all_savings),
        },
    }
