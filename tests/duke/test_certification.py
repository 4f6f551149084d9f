"""Certified routing thresholds (pure): the Learn-then-Test guarantee, checked by simulation, and the live
re-certification rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import beta, binom

from duke.certification import (
    LTT_PROCEDURE,
    binomial_tail,
    certify_threshold,
    clopper_pearson_lower,
    min_testable,
    recertify,
)

TARGET, DELTA = 0.95, 0.05


def test_it_computes_exact_binomial_tails_and_clopper_pearson_bounds() -> None:
    for k, n, p in [(3, 10, 0.5), (95, 100, 0.95), (480, 500, 0.95), (1, 1, 0.3), (0, 5, 0.2)]:
        assert binomial_tail(k, n, p) == pytest.approx(binom.sf(k - 1, n, p), rel=1e-9, abs=1e-15)
    for k, n in [(95, 100), (59, 59), (300, 320)]:
        assert clopper_pearson_lower(k, n, DELTA) == pytest.approx(beta.ppf(DELTA, k, n - k + 1), rel=1e-9)
    assert min_testable(TARGET, DELTA) == 59  # 0.95**59 < 0.05 <= 0.95**58


def test_it_certifies_the_lowest_threshold_that_passes_and_says_how() -> None:
    rng = np.random.default_rng(0)
    conf = rng.uniform(size=4000)
    correct = rng.uniform(size=4000) < 0.7 + 0.3 * conf  # served agreement at t: 0.85 + 0.15 t
    cert = certify_threshold(conf, correct, target=TARGET, delta=DELTA)
    assert cert.threshold is not None and 0.6 < cert.threshold < 0.85
    assert cert.served == int((conf >= cert.threshold).sum())
    assert cert.agreed == int(correct[conf >= cert.threshold].sum())
    assert cert.lower_bound >= TARGET and cert.p_value <= DELTA
    shown = cert.as_json()
    assert shown["procedure"] == LTT_PROCEDURE and shown["delta"] == DELTA and shown["target"] == TARGET
    assert shown["coverage"] == pytest.approx(cert.served / 4000, abs=1e-4)


def test_it_certifies_nothing_without_enough_evidence() -> None:
    assert certify_threshold([0.99] * 58, [True] * 58, target=TARGET, delta=DELTA).threshold is None
    # 59 of 59 pass; with the 60th (wrong, at 0.5) the test fails: the lowest grid point above it holds.
    cert = certify_threshold([0.99] * 59 + [0.5], [True] * 59 + [False], target=TARGET, delta=DELTA)
    assert cert.threshold == pytest.approx(0.51) and cert.served == 59
    assert certify_threshold([], [], target=TARGET, delta=DELTA).threshold is None


def _violation_rate(curve: str, draws: int, n: int, seed: int) -> float:
    """Share of synthetic calibration sets whose certified threshold truly serves below TARGET."""
    rng = np.random.default_rng(seed)
    violations = 0
    for _ in range(draws):
        conf = rng.uniform(size=n)
        if curve == "flat":  # every threshold truly serves 0.94: any certificate is a violation
            truth = lambda t: 0.94  # noqa: E731
            p_correct = np.full(n, 0.94)
        else:  # agreement rises with confidence: thresholds below 2/3 truly serve < 0.95
            truth = lambda t: 0.85 + 0.15 * t  # noqa: E731
            p_correct = 0.7 + 0.3 * conf
        correct = rng.uniform(size=n) < p_correct
        cert = certify_threshold(conf, correct, target=TARGET, delta=DELTA)
        if cert.threshold is not None and truth(cert.threshold) < TARGET:
            violations += 1
    return violations / draws


@pytest.mark.parametrize(("curve", "n"), [("flat", 400), ("rising", 600), ("rising", 2000)])
def test_it_keeps_the_violation_rate_below_delta_over_many_draws(curve: str, n: int) -> None:
    draws = 1000
    rate = _violation_rate(curve, draws, n, seed=7)
    # Monte-Carlo slack: three standard errors of a rate of delta over this many draws.
    assert rate <= DELTA + 3 * math.sqrt(DELTA * (1 - DELTA) / draws)


def test_it_raises_a_threshold_that_live_audits_say_no_longer_holds() -> None:
    rng = np.random.default_rng(1)
    conf = rng.uniform(0.9, 1.0, size=400)
    agreed = rng.uniform(size=400) < np.where(conf >= 0.97, 0.995, 0.80)
    decision = recertify(
        current=0.9,
        audited_confidence=conf,
        audited_agreed=agreed,
        target=TARGET,
        delta=DELTA,
        min_observations=20,
    )
    assert decision.action == "raise"
    assert decision.threshold is not None and decision.threshold > 0.95
    assert decision.certificate is not None and decision.certificate.lower_bound >= TARGET


def test_it_suspends_when_no_higher_threshold_is_certified() -> None:
    decision = recertify(
        current=0.9,
        audited_confidence=[0.95] * 40,
        audited_agreed=[True] * 30 + [False] * 10,
        target=TARGET,
        delta=DELTA,
        min_observations=20,
    )
    assert decision.action == "suspend" and decision.threshold is None


def test_it_keeps_a_threshold_on_too_few_or_good_audits() -> None:
    few = recertify(
        current=0.9,
        audited_confidence=[0.95] * 10,
        audited_agreed=[False] * 10,
        target=TARGET,
        delta=DELTA,
        min_observations=20,
    )
    assert few.action == "keep" and few.threshold == 0.9
    good = recertify(
        current=0.9,
        audited_confidence=[0.95] * 100,
        audited_agreed=[True] * 97 + [False] * 3,
        target=TARGET,
        delta=DELTA,
        min_observations=20,
    )
    assert good.action == "keep"


def test_it_lowers_a_threshold_when_live_tasks_below_it_certify_a_lower_one() -> None:
    rng = np.random.default_rng(2)
    below = rng.uniform(0.5, 0.9, size=3000)
    below_agreed = rng.uniform(size=3000) < np.where(below >= 0.7, 0.99, 0.7)
    decision = recertify(
        current=0.9,
        audited_confidence=[0.95] * 150,
        audited_agreed=[True] * 150,
        below_confidence=below,
        below_agreed=below_agreed,
        target=TARGET,
        delta=DELTA,
        min_observations=20,
    )
    assert decision.action == "lower"
    assert decision.threshold is not None and 0.6 < decision.threshold < 0.9


def test_it_never_lowers_without_certified_audits_above() -> None:
    decision = recertify(
        current=0.9,
        audited_confidence=[0.95] * 30,  # 30 of 30 cannot reject at delta / 2
        audited_agreed=[True] * 30,
        below_confidence=np.linspace(0.5, 0.89, 3000),
        below_agreed=[True] * 3000,
        target=TARGET,
        delta=DELTA,
        min_observations=20,
    )
    assert decision.action == "keep"
