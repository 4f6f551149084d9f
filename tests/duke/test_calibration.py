"""Duke's metrics, temperature scaling, routing thresholds and promotion test (pure, no database)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from duke.calibration import (
    THRESHOLD_Z,
    PairedResult,
    accuracy,
    agreement_threshold,
    beats_majority_baseline,
    binomial_upper_tail,
    fit_temperature,
    macro_f1,
    majority_label,
    paired_comparison,
    per_group_metrics,
    wilson_lower_bound,
)


def test_it_matches_scikit_learn_on_accuracy_and_macro_f1() -> None:
    rng = np.random.default_rng(0)
    y_true = rng.choice(["a", "b", "c", "d"], size=300).tolist()
    y_pred = [t if rng.random() < 0.6 else str(rng.choice(["a", "b", "c", "e"])) for t in y_true]
    assert accuracy(y_true, y_pred) == pytest.approx(accuracy_score(y_true, y_pred))
    assert macro_f1(y_true, y_pred) == pytest.approx(f1_score(y_true, y_pred, average="macro"))


def test_it_counts_a_missing_prediction_as_wrong() -> None:
    assert accuracy(["a", "b"], ["a", None]) == 0.5
    # None is not a class: "b" has recall 0, so F1(b) = 0; F1(a) = 1.
    assert macro_f1(["a", "b"], ["a", None]) == pytest.approx(0.5)
    assert accuracy([], []) == 0.0


def test_it_reports_metrics_per_task_type() -> None:
    metrics = per_group_metrics(["a", "b", "x", "y"], ["a", "a", "x", "y"], ["t1", "t1", "t2", "t2"])
    assert metrics["t1"] == {"accuracy": 0.5, "macro_f1": pytest.approx(1 / 3), "n": 2}
    assert metrics["t2"] == {"accuracy": 1.0, "macro_f1": 1.0, "n": 2}


def test_it_fits_the_temperature_that_undoes_overconfidence() -> None:
    rng = np.random.default_rng(1)
    true_logits = rng.normal(scale=2.0, size=(4000, 4))
    probs = np.exp(true_logits) / np.exp(true_logits).sum(1, keepdims=True)
    targets = np.array([rng.choice(4, p=p) for p in probs])
    assert fit_temperature(true_logits * 3.0, targets) == pytest.approx(3.0, rel=0.1)
    assert fit_temperature(true_logits * 0.5, targets) == pytest.approx(0.5, rel=0.1)


def test_it_fits_a_temperature_with_masked_labels() -> None:
    logits = np.array([[2.0, -np.inf, 0.0], [-np.inf, 1.0, 3.0], [0.5, 0.2, -np.inf]] * 50)
    targets = np.array([0, 2, 1] * 50)
    t = fit_temperature(logits, targets)
    assert math.isfinite(t) and t > 0
    with pytest.raises(ValueError):
        fit_temperature(np.array([[-np.inf, 1.0]]), np.array([0]))


@pytest.mark.parametrize(
    ("successes", "n", "expected"),
    [
        (0, 0, 0.0),
        (0, 10, 0.0),
        (10, 10, 0.72247),
        (50, 100, 0.40383),
        (95, 100, 0.88825),
        (990, 1000, 0.98168),
    ],
)
def test_it_computes_wilson_lower_bounds(successes: int, n: int, expected: float) -> None:
    assert wilson_lower_bound(successes, n) == pytest.approx(expected, abs=1e-4)


def test_it_finds_the_lowest_threshold_that_supports_the_target() -> None:
    # 100 confident and right, 100 unsure and wrong: only the confident group reaches 95 %.
    conf = [0.9] * 100 + [0.5] * 100
    correct = [True] * 100 + [False] * 100
    assert agreement_threshold(conf, correct, target=0.95, z=1.96) == (0.9, 0.5)
    # Wilson(100/100) = 0.963: no threshold supports 97 %, and 150 covered samples never agree enough.
    assert agreement_threshold(conf, correct, target=0.97, z=1.96) is None
    assert agreement_threshold(conf, correct, target=0.95, min_covered=150, z=1.96) is None


def test_it_calibrates_thresholds_on_the_99_percent_bound_by_default() -> None:
    # The chosen threshold is the best of many prefixes, so one prefix's 95% bound would overclaim.
    assert THRESHOLD_Z == pytest.approx(2.576)
    assert wilson_lower_bound(100, 100, z=THRESHOLD_Z) == pytest.approx(0.9378, abs=1e-4)
    assert agreement_threshold([0.9] * 100 + [0.5] * 100, [True] * 100 + [False] * 100, target=0.95) is None
    conf = [0.9] * 130 + [0.5] * 100
    correct = [True] * 130 + [False] * 100
    assert agreement_threshold(conf, correct, target=0.95) == (0.9, 130 / 230)  # Wilson(130/130) = 0.951


def test_it_prefers_a_lower_threshold_when_it_still_supports_the_target() -> None:
    conf = [0.95] * 300 + [0.6] * 10 + [0.3] * 50
    correct = [True] * 300 + [True] * 9 + [False] + [False] * 50
    threshold, coverage = agreement_threshold(conf, correct, target=0.95)
    assert threshold == 0.6
    assert coverage == pytest.approx(310 / 360)


def test_it_needs_enough_covered_samples_for_a_threshold() -> None:
    assert agreement_threshold([0.99] * 19, [True] * 19, target=0.5) is None
    assert agreement_threshold([0.99] * 20, [True] * 20, target=0.5) == (0.99, 1.0)
    assert agreement_threshold([], [], target=0.5) is None


def test_it_computes_exact_binomial_tails() -> None:
    assert binomial_upper_tail(8, 10) == pytest.approx(56 / 1024)
    assert binomial_upper_tail(0, 10) == 1.0
    assert binomial_upper_tail(11, 10) == 0.0
    # Past the exact-integer limit the log-space sum must agree with the exact one.
    n, k = 2500, 1300
    exact = sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n
    assert binomial_upper_tail(k, n) == pytest.approx(exact, rel=1e-9)


def test_it_does_not_call_a_small_win_better() -> None:
    # The candidate is right on all 20 items production got wrong: impressive, but 20 < 50 samples.
    result = paired_comparison([True] * 20, [False] * 20)
    assert isinstance(result, PairedResult)
    assert not result.better
    assert result.n == 20 and result.p_value < 1e-5
    assert "20" in result.reason


def test_it_calls_a_clear_winner_on_200_samples_better() -> None:
    # 45 items only the candidate gets right, 5 only production: p = P(X >= 45 | 50, 1/2).
    cand = [True] * 135 + [True] * 45 + [False] * 5 + [False] * 15
    prod = [True] * 135 + [False] * 45 + [True] * 5 + [False] * 15
    result = paired_comparison(cand, prod)
    assert result.better
    assert result.p_value == pytest.approx(binomial_upper_tail(45, 50))
    assert (result.candidate_accuracy, result.production_accuracy) == (0.9, 0.7)
    assert (result.candidate_only, result.production_only) == (45, 5)


def test_it_does_not_promote_a_tie_or_a_loser() -> None:
    same = [True] * 100 + [False] * 100
    assert not paired_comparison(same, same).better
    assert not paired_comparison([False] * 200, [True] * 200).better
    # Ahead, but not significantly: 28 vs 22 discordant pairs.
    cand = [True] * 28 + [False] * 22 + [True] * 150
    prod = [False] * 28 + [True] * 22 + [True] * 150
    result = paired_comparison(cand, prod)
    assert not result.better and result.p_value > 0.05


def test_it_compares_a_first_model_with_the_majority_baseline() -> None:
    y_true = ["a"] * 150 + ["b"] * 50
    train_labels = ["a"] * 70 + ["b"] * 30
    assert majority_label(train_labels) == "a"
    # A model that always answers "a" is the baseline itself.
    assert not beats_majority_baseline(y_true, ["a"] * 200, train_labels).better
    # Right on most "b" items, wrong on a few "a": clearly better.
    y_pred = ["a"] * 145 + ["b"] * 5 + ["b"] * 45 + ["a"] * 5
    result = beats_majority_baseline(y_true, y_pred, train_labels)
    assert result.better and result.production_accuracy == 0.75


def test_it_uses_each_task_types_own_majority_when_given() -> None:
    y_true = ["pos"] * 60 + ["sports"] * 60
    groups = ["sentiment"] * 60 + ["topic"] * 60
    train_labels = ["pos"] * 10 + ["neg"] * 5 + ["sports"] * 8 + ["tech"] * 30
    train_groups = ["sentiment"] * 15 + ["topic"] * 38
    perfect = list(y_true)
    per_group = beats_majority_baseline(
        y_true, perfect, train_labels, groups=groups, train_groups=train_groups
    )
    # Per task type the baseline answers "pos" and "tech": right on the 60 sentiment items only.
    assert per_group.production_accuracy == 0.5 and per_group.better
    assert majority_label(["b", "a", "a", "b"]) == "a"  # ties go to the smallest label
