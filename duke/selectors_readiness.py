"""Why Duke is (or is not yet) serving each task type, and what happens next.

Per task type: samples so far against what a version needs (DUKE_MIN_SAMPLES over all types, 2 of each
label), the production version's threshold and the certificate behind it (or the calibration that fell
short), the live audits' agreement, and the next step in words ("training v4 at 300 samples", "needs 37
more samples"). Reads are bounded: one grouped query over the samples by (type, label), the routing
picture, and a handful of rows.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.conf import settings
from django.db.models import Count, Max, TextField, Value
from django.db.models.functions import Coalesce, NullIf

from duke.certification import min_testable
from duke.models import ModelVersion, SampleCounter, TrainingData
from duke.selectors import model_version_production, model_version_training, routing_status


def _label_counts_by_type() -> dict[str, dict[str, int]]:
    rows = (
        TrainingData.objects.filter(labels__isnull=False)
        .annotate(target=Coalesce(NullIf("correct_label", Value("")), "output", output_field=TextField()))
        .values("task_type", "target")
        .annotate(n=Count("pk"))
        .order_by()
    )
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for row in rows:
        counts[row["task_type"]][row["target"]] = row["n"]
    return counts


def _latest_calibration() -> tuple[int | None, dict[str, Any]]:
    """The newest finished version's per-type calibration (certified or not), for types it covers."""
    version = (
        ModelVersion.objects.exclude(status__in=[ModelVersion.Status.TRAINING, ModelVersion.Status.FAILED])
        .order_by("-number")
        .values("number", "promotion")
        .first()
    )
    if not version:
        return None, {}
    calibration = (version["promotion"] or {}).get("calibration") or {}
    return version["number"], calibration if isinstance(calibration, dict) else {}


def duke_readiness() -> dict[str, Any]:
    """{"overall": ..., "task_types": [...]}: JSON-ready (numbers, strings, None)."""
    minimum = settings.DUKE_MIN_SAMPLES
    every = settings.DUKE_TRAIN_EVERY
    target = settings.DUKE_TARGET_AGREEMENT
    delta = settings.DUKE_RISK_DELTA
    need_served = min_testable(target, delta)
    counts = _label_counts_by_type()
    usable_total = sum(n for labels in counts.values() for n in labels.values() if n >= 2)
    samples_total = sum(sum(labels.values()) for labels in counts.values())
    ordinal = SampleCounter.objects.values_list("samples", flat=True).first() or 0
    next_watermark = (ordinal // every + 1) * every
    last_number = ModelVersion.objects.aggregate(n=Max("number"))["n"] or 0
    production = model_version_production()
    training = model_version_training()
    routing = routing_status()
    calibrated_by, calibration = _latest_calibration()
    short_overall = max(0, minimum - usable_total)

    if training:
        progress = f"epoch {training.epoch}/{training.epochs}" if training.epochs else "starting"
        next_training = f"training v{training.number} now ({progress})"
    elif short_overall:
        next_training = (
            f"needs {short_overall} more sample{'s' if short_overall != 1 else ''} "
            f"(DUKE_MIN_SAMPLES = {minimum}, labels with 2 or more samples)"
        )
    else:
        next_training = f"training v{last_number + 1} at {next_watermark:,} samples"

    types = []
    for task_type in sorted(set(counts) | set(routing["task_types"])):
        labels = counts.get(task_type, {})
        short_labels = sorted(label for label, n in labels.items() if n < 2)
        entry = routing["task_types"].get(task_type) or {}
        cert = entry.get("certificate") or calibration.get(task_type)
        live = entry.get("live") or {}
        threshold = entry.get("threshold")
        if entry.get("suspended"):
            state, why = "suspended", entry.get("suspended_reason") or "live agreement fell below the target"
            next_step = f"live audits re-certify it; else {next_training}"
        elif entry.get("routing"):
            state = "serving"
            coverage = entry.get("expected_coverage")
            why = f"threshold {threshold:.3f} certified" + (
                f", expected coverage {coverage:.0%}" if coverage is not None else ""
            )
            next_step = f"serving; {next_training}"
        elif not labels:
            state, why = "no samples", "no labeling sample of this type yet"
            next_step = "waiting for labeling tasks"
        elif short_labels:
            state = "collecting"
            shown = ", ".join(repr(label) for label in short_labels[:4])
            why = f"labels with fewer than 2 samples: {shown}" + (" …" if len(short_labels) > 4 else "")
            next_step = f"needs 2 samples of each label; {next_training}"
        elif short_overall:
            state, why = "collecting", f"{usable_total} of {minimum} samples a first version needs"
            next_step = next_training
        elif production is None:
            state, why = "no model", "no version promoted yet"
            next_step = next_training
        else:
            state = "not certified"
            if cert:
                why = (
                    f"calibration on {cert.get('n', 0)} samples could not certify {target:.0%} agreement "
                    f"at δ = {delta} (needs ≥ {need_served} confident samples above one threshold)"
                )
            else:
                why = f"v{production.number} was not calibrated on this type"
            next_step = next_training
        types.append(
            {
                "task_type": task_type,
                "state": state,
                "why": why,
                "next": next_step,
                "samples": sum(labels.values()),
                "labels": len(labels),
                "labels_short": short_labels,
                "threshold": threshold,
                "expected_coverage": entry.get("expected_coverage"),
                "certificate": cert,
                "calibrated_by": production.number if entry.get("certificate") else calibrated_by,
                "live_agreement": live.get("agreement"),
                "live_observations": live.get("observations", 0),
                "live_lower_bound": live.get("lower_bound"),
            }
        )
    return {
        "overall": {
            "samples": samples_total,
            "usable_samples": usable_total,
            "min_samples": minimum,
            "samples_short": short_overall,
            "train_every": every,
            "next_watermark": next_watermark,
            "next_version": training.number if training else last_number + 1,
            "next_training": next_training,
            "production_version": production.number if production else None,
            "target_agreement": target,
            "risk_delta": delta,
            "min_served_to_certify": need_served,
            "training": (
                {"version": training.number, "epoch": training.epoch, "epochs": training.epochs}
                if training
                else None
            ),
        },
        "task_types": types,
    }
