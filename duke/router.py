"""Confidence routing: which labeling tasks Duke serves itself, and the routing picture per task type.

A task is Duke's when the production version has a calibrated threshold for its task type, routing for
that type is not suspended on that version, every label it offers is one Duke knows, and Duke's
confidence reaches the threshold. Anything else (including any error here) goes to the LLM: routing
must never make a submission fail.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Sum

from duke.models import ModelVersion, RoutingState, ServedTask, TrainingData
from duke.serving import needs_embedding, production_model

if TYPE_CHECKING:
    # duke.model maps torch (~200 MB per process): it is imported when a model is first used, so web and
    # queue processes that import the router but never have a production version to serve don't carry it.
    import numpy as np

    from duke.model import Prediction, TrainedModel

logger = logging.getLogger("duke")

MONEY_PLACES = Decimal("0.0001")
COST_PLACES = Decimal("0.00000001")

# Which Duke-served tasks are also audited; seedable so tests and benchmarks are reproducible.
_audit_rng = random.Random()


def seed_audit_sampling(seed: int | None) -> None:
    _audit_rng.seed(seed)


@dataclass(frozen=True)
class RouteDecision:
    label: str
    confidence: float
    model_version: int
    audit: bool  # also send to the LLM in the background to measure live agreement
    threshold: float = 0.0
    encode_ms: float = 0.0  # the sentence embedding of the text
    decide_ms: float = 0.0  # prediction and threshold once the text is encoded


def threshold_for(version: ModelVersion, task_type: str) -> float | None:
    """The version's calibrated threshold for the type; None when the validation data did not earn one."""
    entry = (version.thresholds or {}).get(task_type)
    if not isinstance(entry, dict) or entry.get("threshold") is None:
        return None
    return float(entry["threshold"])


def is_suspended(*, model_version: int, task_type: str) -> bool:
    return RoutingState.objects.filter(
        model_version=model_version, task_type=task_type, suspended=True
    ).exists()


def decide(
    model: TrainedModel,
    *,
    text: str,
    labels: Sequence[str],
    task_type: str,
    embedding: np.ndarray | None,
    threshold: float,
) -> Prediction | None:
    """Duke's prediction when it is confident enough, else None. No I/O: this is the timed decision."""
    from duke.model import Input

    if not all(label in model.label_index for label in labels):
        # A label Duke never saw can never be its answer, so its confidence over the others means nothing.
        return None
    prediction = model.predict([Input(text, tuple(labels), task_type, embedding)])[0]
    if prediction.label is None or prediction.confidence < threshold:
        return None
    return prediction


def _production() -> tuple[ModelVersion, TrainedModel] | None:
    # In a web worker, only what its preloader has loaded: a request never loads a model (duke.serving).
    return production_model()


def _embed(text: str) -> np.ndarray | bool:
    """The text's embedding, or False when the encoder is not installed."""
    from duke.encoder import EncoderUnavailable, encode_texts

    try:
        return encode_texts([text])[0]
    except EncoderUnavailable:
        logger.warning("Duke cannot route: the sentence encoder is not installed")
        return False


def route(*, text: str, labels: Sequence[str], task_type: str) -> RouteDecision | None:
    """Duke's answer when the production model is confident enough for this task type, else None."""
    try:
        if not transaction.get_connection().in_atomic_block:
            # Only reads: in autocommit, not in a transaction of its own, which on SQLite would hold the
            # database's write lock (every writer waits) while the text is encoded.
            return _route(text=text, labels=labels, task_type=task_type)
        # A savepoint: a database error in here must not break the caller's (the submission's) transaction.
        with transaction.atomic():
            return _route(text=text, labels=labels, task_type=task_type)
    except Exception:  # noqa: BLE001 — a broken model or artifact must degrade to the LLM, not fail the task
        logger.exception("Duke routing failed; the task goes to the LLM")
        return None


def _route(*, text: str, labels: Sequence[str], task_type: str) -> RouteDecision | None:
    loaded = _production()
    if loaded is None:
        return None
    version, model = loaded
    threshold = threshold_for(version, task_type)
    if threshold is None or is_suspended(model_version=version.number, task_type=task_type):
        return None
    if not all(label in model.label_index for label in labels):
        return None  # checked before encoding too: the encoder is the expensive part
    started = time.perf_counter()
    embedding = _embed(text) if needs_embedding(model) else None
    if embedding is False:
        return None
    encoded = time.perf_counter()
    prediction = decide(
        model, text=text, labels=labels, task_type=task_type, embedding=embedding, threshold=threshold
    )
    decided = time.perf_counter()
    if prediction is None:
        return None
    return RouteDecision(
        label=prediction.label,
        confidence=prediction.confidence,
        model_version=version.number,
        audit=_audit_rng.random() < settings.DUKE_AUDIT_RATE,
        threshold=threshold,
        encode_ms=(encoded - started) * 1000,
        decide_ms=(decided - encoded) * 1000,
    )


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
    return str(value.quantize(places))


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
    from duke.audit import LiveAgreement, live_agreement_by_type, min_live_observations

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
