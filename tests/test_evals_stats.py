"""The eval report's statistics (switchboard/report/eval_stats.py) against scipy, the reference, on known
samples."""

from __future__ import annotations

import numpy as np
import pytest

from switchboard.report import mann_whitney_p_normal
from switchboard.report.eval_stats import bootstrap_mean_interval, fisher_exact_p, pairwise_win_rate, wilson

stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize(("passed", "total"), [(0, 5), (5, 5), (9, 10), (45, 50), (17, 40), (1, 1)])
def test_wilson_matches_scipy(passed, total):
    reference = stats.binomtest(passed, total).proportion_ci(0.95, method="wilson")
    low, high = wilson(passed, total)  # type: ignore[misc]
    assert (low, high) == pytest.approx((reference.low, reference.high), abs=1e-9)
    assert wilson(0, 0) is None


@pytest.mark.parametrize("table", [(9, 1, 4, 6), (10, 0, 0, 10), (3, 7, 3, 7), (0, 5, 5, 0), (18, 2, 12, 8),
                                   (1, 0, 0, 0), (45, 5, 38, 12)])
def test_fisher_exact_matches_scipy(table):
    a, b, c, d = table
    expected = stats.fisher_exact([[a, b], [c, d]], alternative="two-sided").pvalue
    assert fisher_exact_p(a, b, c, d) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(("x", "y"), [
    ([5, 4, 5, 3, 4, 5, 4, 4], [3, 2, 4, 3, 3, 2, 1, 3, 4]),  # judged scores: all ties
    ([1.0, 0.0, 1.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0]),
    ([4.3, 3.7, 4.0, 5.0], [4.3, 3.7, 4.0, 5.0]),
])
def test_mann_whitney_matches_scipys_asymptotic_test(x, y):
    expected = stats.mannwhitneyu(x, y, alternative="two-sided", method="asymptotic").pvalue
    assert mann_whitney_p_normal(x, y) == pytest.approx(expected, rel=1e-9)


def test_the_bootstrap_interval_agrees_with_scipys_percentile_bootstrap():
    scores = np.array([5, 4, 4, 3, 5, 5, 4, 2, 4, 5, 3, 4, 4, 5, 3, 4, 5, 4, 4, 3], dtype=float)
    ours = bootstrap_mean_interval(scores, resamples=20000)
    reference = stats.bootstrap((scores,), np.mean, n_resamples=20000, method="percentile",
                                random_state=1).confidence_interval
    assert ours is not None
    # different random resamples: the ends agree to within a few hundredths of a point
    assert ours == pytest.approx((reference.low, reference.high), abs=0.05)
    assert ours[0] < scores.mean() < ours[1]
    assert bootstrap_mean_interval(scores) == bootstrap_mean_interval(scores)  # seeded: reads the same twice
    assert bootstrap_mean_interval([4.0]) is None


def test_the_win_rate_is_the_mann_whitney_u_over_all_pairs():
    x, y = [5, 4, 4, 3, 5], [3, 4, 2, 3]
    u = stats.mannwhitneyu(x, y, alternative="two-sided").statistic
    assert pairwise_win_rate(x, y) == pytest.approx(u / (len(x) * len(y)))
    assert pairwise_win_rate(x, y) + pairwise_win_rate(y, x) == pytest.approx(1.0)  # type: ignore[operator]
    assert pairwise_win_rate([], y) is None
