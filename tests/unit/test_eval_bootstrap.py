"""Bootstrap CIs: coverage and width against known distributions, pairing, small samples, macro-F1."""

from __future__ import annotations

import math

import numpy as np
import pytest

from collab.evaluate.bootstrap import (
    bootstrap_difference,
    bootstrap_estimate,
    macro_f1_statistic,
)


def test_bernoulli_ci_covers_p_with_the_normal_approximation_width() -> None:
    rng = np.random.default_rng(1)
    samples = (rng.random(400) < 0.3).astype(float)
    est = bootstrap_estimate(samples, seed=0)
    expected_width = 2 * 1.96 * math.sqrt(0.3 * 0.7 / 400)  # 0.0898
    assert est.n == 400
    assert est.mean == pytest.approx(samples.mean())
    assert est.ci_low < 0.3 < est.ci_high
    assert est.ci_high - est.ci_low == pytest.approx(expected_width, rel=0.15)


def test_bernoulli_ci_coverage_is_near_95_percent_over_repeated_samples() -> None:
    rng = np.random.default_rng(7)
    covered = 0
    trials = 200
    for t in range(trials):
        samples = (rng.random(400) < 0.3).astype(float)
        est = bootstrap_estimate(samples, resamples=500, seed=t)
        covered += est.ci_low <= 0.3 <= est.ci_high
    assert 0.88 <= covered / trials <= 0.99


def test_paired_difference_recovers_a_known_shift_with_a_narrow_interval() -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(0.0, 1.0, 300)  # large between-task variance shared by both models
    shifted = base + 0.5 + rng.normal(0.0, 0.1, 300)
    diff = bootstrap_difference(shifted, base, seed=0)
    assert diff.n == 300
    assert diff.diff == pytest.approx(0.5, abs=0.02)
    assert diff.ci_low < 0.5 < diff.ci_high
    # Paired: the width follows the noise (sd 0.1), not the task spread (sd 1): 2 * 1.96 * 0.1 / sqrt(300) = 0.023.
    assert diff.ci_high - diff.ci_low == pytest.approx(2 * 1.96 * 0.1 / math.sqrt(300), rel=0.25)
    unpaired_width = 2 * 1.96 * math.sqrt(2 / 300)
    assert diff.ci_high - diff.ci_low < unpaired_width / 5


def test_no_tasks_gives_an_explicit_none_estimate() -> None:
    est = bootstrap_estimate([])
    assert (est.mean, est.ci_low, est.ci_high, est.n) == (None, None, None, 0)
    diff = bootstrap_difference([], [])
    assert (diff.diff, diff.ci_low, diff.ci_high, diff.n) == (None, None, None, 0)


def test_one_task_gives_its_value_without_an_interval() -> None:
    est = bootstrap_estimate([0.75])
    assert (est.mean, est.ci_low, est.ci_high, est.n) == (0.75, None, None, 1)
    diff = bootstrap_difference([1.0], [0.25])
    assert (diff.diff, diff.ci_low, diff.ci_high) == (0.75, None, None)


def test_constant_values_give_a_zero_width_interval() -> None:
    est = bootstrap_estimate([1.0, 1.0, 1.0])
    assert (est.mean, est.ci_low, est.ci_high) == (1.0, 1.0, 1.0)


def test_same_seed_same_interval_other_seed_other_interval() -> None:
    data = np.random.default_rng(0).random(50)
    assert bootstrap_estimate(data, seed=5) == bootstrap_estimate(data, seed=5)
    assert bootstrap_estimate(data, seed=5).ci_low != bootstrap_estimate(data, seed=6).ci_low


def test_paired_rows_of_different_length_are_rejected() -> None:
    with pytest.raises(ValueError, match="paired rows differ"):
        bootstrap_difference([1.0, 2.0], [1.0])


def test_macro_f1_of_a_perfect_and_a_mixed_confusion() -> None:
    # columns: gold ask/pred ask, gold ask/pred answer, gold answer/pred ask, gold answer/pred answer
    assert macro_f1_statistic(np.array([2.0, 0.0, 0.0, 3.0])) == pytest.approx(1.0)
    # ask: tp=1 fn=1 fp=1 -> F1 0.5; answer: tp=1 fn=1 fp=1 -> 0.5
    assert macro_f1_statistic(np.array([1.0, 1.0, 1.0, 1.0])) == pytest.approx(0.5)
    # always answering on 2 ask + 2 answer tasks: ask F1 0, answer F1 2*2/(4+2) = 2/3 -> macro 1/3
    assert macro_f1_statistic(np.array([0.0, 2.0, 0.0, 2.0])) == pytest.approx(1 / 3)


def test_macro_f1_leaves_out_a_class_that_never_occurs() -> None:
    # Only complete tasks, never asked: the ask class is undefined, answer F1 is 1.
    assert macro_f1_statistic(np.array([0.0, 0.0, 0.0, 4.0])) == pytest.approx(1.0)
    assert np.isnan(macro_f1_statistic(np.array([0.0, 0.0, 0.0, 0.0])))


def test_macro_f1_bootstrap_over_confusion_rows() -> None:
    rows = np.array([[1, 0, 0, 0]] * 10 + [[0, 1, 0, 0]] * 10 + [[0, 0, 0, 1]] * 20, dtype=float)
    est = bootstrap_estimate(rows, macro_f1_statistic, seed=0)
    # ask F1 = 2*10/(20+10) = 2/3, answer F1 = 40/(40+10) = 0.8
    assert est.mean == pytest.approx((2 / 3 + 0.8) / 2)
    assert est.ci_low < est.mean < est.ci_high
