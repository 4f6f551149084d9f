"""Certified routing thresholds: which confidence cut serves tasks at >= T agreement, with what proof.

Pure numpy/math: no Django. `certify_threshold` picks a threshold on calibration data (Learn-then-Test);
`recertify` re-checks the threshold in force on live traffic (the LLM audits of served tasks and the
tasks Duke left to the LLM).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

LTT_PROCEDURE = "learn-then-test fixed-sequence, exact binomial (Clopper-Pearson) p-values"

# The thresholds tested, highest first. Fixed before any data is seen (fixed-sequence testing needs a
# fixed order); dense near 1, where a many-label model's useful thresholds are.
THRESHOLD_GRID: tuple[float, ...] = tuple(
    float(t)
    for t in np.unique(
        np.round(np.concatenate([1 - np.logspace(-4, -1, 61), np.linspace(0.9, 0.05, 86)]), 6)
    )[::-1]
)


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), exact (log-space sum of the terms)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    # log term(k), then each next term by its ratio to the one before: one vectorised cumulative sum.
    first = (
        math.lgamma(n + 1)
        - math.lgamma(k + 1)
        - math.lgamma(n - k + 1)
        + k * math.log(p)
        + (n - k) * math.log1p(-p)
    )
    i = np.arange(k, n, dtype=np.float64)
    ratios = np.log((n - i) / (i + 1)) + (math.log(p) - math.log1p(-p))
    logs = first + np.concatenate([[0.0], np.cumsum(ratios)])
    top = float(logs.max())
    return float(min(1.0, math.exp(top) * float(np.exp(logs - top).sum())))


def clopper_pearson_lower(successes: int, n: int, delta: float) -> float:
    """One-sided exact lower confidence bound at level 1 - delta: the p with P(X >= successes | p) = delta."""
    if n <= 0 or successes <= 0:
        return 0.0
    lo, hi = 0.0, 1.0
    for _ in range(60):  # bisection to ~1e-18: the tail is increasing in p
        mid = (lo + hi) / 2
        if binomial_tail(successes, n, mid) > delta:
            hi = mid
        else:
            lo = mid
    return lo


def min_testable(target: float, delta: float) -> int:
    """Fewest served samples for which even full agreement rejects 'agreement < target' at level delta."""
    return max(1, math.ceil(math.log(delta) / math.log(target)))


@dataclass(frozen=True)
class Certificate:
    """The lowest threshold passed by `certify_threshold`, and the evidence it was passed on."""

    threshold: float | None  # None: no threshold certified (routing stays off)
    served: int  # samples at or above the threshold
    agreed: int
    lower_bound: float  # Clopper-Pearson lower bound of agreement among served at 1 - delta
    p_value: float
    n: int  # calibration samples in all
    target: float
    delta: float
    procedure: str = LTT_PROCEDURE

    @property
    def coverage(self) -> float:
        return self.served / self.n if self.n else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "coverage": round(self.coverage, 4),
            "served": self.served,
            "agreed": self.agreed,
            "lower_bound": round(self.lower_bound, 4),
            "p_value": self.p_value,
            "n": self.n,
            "target": self.target,
            "delta": self.delta,
            "procedure": self.procedure,
        }


def certify_threshold(
    confidences: Sequence[float] | np.ndarray,
    correct: Sequence[bool] | np.ndarray,
    *,
    target: float,
    delta: float,
    grid: Sequence[float] = THRESHOLD_GRID,
    start_served: int | None = None,
) -> Certificate:
    """Learn-then-Test fixed-sequence testing (Angelopoulos et al. 2021) with exact binomial p-values.

    For each threshold t of the fixed `grid`, highest first, the null hypothesis is H0(t): the agreement
    of the samples served at t (confidence >= t) is below `target`. Its p-value is the exact binomial
    tail P(Binomial(n_t, target) >= k_t), k_t of the n_t served samples agreeing. Thresholds are tested
    in order and the scan stops at the first p-value above `delta`; the lowest threshold rejected is
    certified. Fixed-sequence testing controls the family-wise error at delta, so with probability at
    least 1 - delta the certified threshold's served agreement is >= target (samples i.i.d. from the
    distribution served).

    Thresholds serving fewer than `start_served` samples (at least `min_testable`: below it even full
    agreement cannot reject) are passed over without a test and without stopping. The rule looks only at
    the counts n_t, never at agreement; given the counts of every band between grid points, k_t is a sum
    of independent binomials with mean n_t * agreement(t), whose upper tail is no heavier than one
    binomial's (Hoeffding 1956), so each test stays valid and so does the sequence.
    """
    conf = np.asarray(confidences, dtype=np.float64)
    ok = np.asarray(correct, dtype=bool)
    if conf.shape != ok.shape:
        raise ValueError("confidences and correct differ in length")
    n = int(conf.size)
    start = max(min_testable(target, delta), start_served or 0)
    order = np.argsort(-conf, kind="stable")
    sorted_conf, cum_ok = conf[order], np.cumsum(ok[order])
    best: tuple[float, int, int, float] | None = None
    for t in grid:
        served = int(np.searchsorted(-sorted_conf, -t, side="right"))
        if served < start:
            continue
        agreed = int(cum_ok[served - 1])
        p_value = binomial_tail(agreed, served, target)
        if p_value > delta:
            break
        best = (float(t), served, agreed, p_value)
    if best is None:
        return Certificate(None, 0, 0, 0.0, 1.0, n, target, delta)
    t, served, agreed, p_value = best
    bound = clopper_pearson_lower(agreed, served, delta)
    return Certificate(t, served, agreed, bound, p_value, n, target, delta)


def agreement_fails(agreed: int, served: int, *, target: float, delta: float) -> bool:
    """Whether `agreed` of `served` rejects 'agreement >= target' at level delta (exact lower tail)."""
    if served <= 0:
        return False
    lower_tail = 1.0 - binomial_tail(agreed + 1, served, target)
    return lower_tail <= delta


@dataclass(frozen=True)
class Recertification:
    """What live evidence says about a threshold in force: keep it, raise it, lower it or stop routing."""

    action: str  # "keep", "raise", "lower" or "suspend"
    threshold: float | None
    reason: str
    certificate: Certificate | None = None


def recertify(
    *,
    current: float,
    audited_confidence: Sequence[float] | np.ndarray,
    audited_agreed: Sequence[bool] | np.ndarray,
    below_confidence: Sequence[float] | np.ndarray = (),
    below_agreed: Sequence[bool] | np.ndarray = (),
    target: float,
    delta: float,
    min_observations: int,
    grid: Sequence[float] = THRESHOLD_GRID,
) -> Recertification:
    """Re-certifies a threshold on live traffic.

    `audited_*`: served tasks (confidence >= their threshold) that were also sent to the LLM, with Duke's
    confidence and whether the LLM agreed. `below_*`: live tasks Duke did not serve (confidence below
    `current`) that the LLM answered, scored by the same version afterwards.

    - It no longer holds when the audits at or above `current` reject "agreement >= target" at level
      delta (exact binomial lower tail): it is raised to the lowest threshold that the audits themselves
      certify by `certify_threshold`, or routing is suspended when none is.
    - It is lowered to t < current when both parts of what t would serve are certified, each at delta/2
      (a union bound): the audits at or above `current` (binomial test), and the band [t, current) of the
      tasks below by `certify_threshold` on them. Both >= target means their mixture is too.
    """
    conf = np.asarray(audited_confidence, dtype=np.float64)
    ok = np.asarray(audited_agreed, dtype=bool)
    top = conf >= current
    served, agreed = int(top.sum()), int(ok[top].sum())
    if served >= min_observations and agreement_fails(agreed, served, target=target, delta=delta):
        higher = [t for t in grid if t > current]
        cert = certify_threshold(conf, ok, target=target, delta=delta, grid=higher)
        held = f"live audits agreed {agreed}/{served} at threshold {current:.4g}, below {target:.3f}"
        if cert.threshold is None:
            return Recertification("suspend", None, f"{held}; no higher threshold certified", cert)
        return Recertification("raise", cert.threshold, f"{held}; raised to {cert.threshold:.4g}", cert)
    band_conf = np.asarray(below_confidence, dtype=np.float64)
    band_ok = np.asarray(below_agreed, dtype=bool)
    band = band_conf < current
    if served and binomial_tail(agreed, served, target) <= delta / 2 and band.any():
        lower = [t for t in grid if t < current]
        cert = certify_threshold(band_conf[band], band_ok[band], target=target, delta=delta / 2, grid=lower)
        if cert.threshold is not None:
            reason = (
                f"live audits agreed {agreed}/{served} at {current:.4g} and {cert.agreed}/{cert.served} "
                f"unserved tasks in [{cert.threshold:.4g}, {current:.4g}); lowered to {cert.threshold:.4g}"
            )
            return Recertification("lower", cert.threshold, reason, cert)
    return Recertification("keep", current, f"live audits agreed {agreed}/{served}")
