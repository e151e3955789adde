"""The statistics of an eval report (report/evals.py), small and checked against scipy in
tests/test_evals_stats.py.

scipy stays a test extra: these four need a few lines each (Fisher's exact test is a sum over the
hypergeometric distribution, Wilson's interval a closed form, the bootstrap numpy's resampling), and the
Mann-Whitney U test is the live report's (`report.mann_whitney_p`: scipy's when installed, else the same
asymptotic test with tie and continuity correction: judged scores of 1 to 5 are all ties, where scipy
also uses the asymptotic test).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from switchboard.report import mann_whitney_p

Z95 = 1.959963984540054  # the standard normal's 97.5th percentile
BOOTSTRAP_RESAMPLES = 2000

__all__ = ["bootstrap_mean_interval", "fisher_exact_p", "mann_whitney_p", "pairwise_win_rate", "wilson"]


def wilson(passed: int, total: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval of a pass rate (95 % by default); None without a sample."""
    if total <= 0:
        return None
    p = passed / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_exact_p(a: int, b: int, c: int, d: int) -> float:
    """Two-sided p-value of Fisher's exact test on the 2×2 table [[a, b], [c, d]] (rows: arms, columns:
    passed, failed): the probability, with the margins fixed, of a table as or less likely than this one."""
    row1, col1, total = a + b, a + c, a + b + c + d
    if total == 0:
        return 1.0
    low, high = max(0, col1 - (total - row1)), min(row1, col1)

    def log_p(x: int) -> float:
        return _log_choose(col1, x) + _log_choose(total - col1, row1 - x) - _log_choose(total, row1)

    observed = log_p(a)
    cutoff = observed + math.log1p(1e-7)  # scipy's relative tolerance for "as likely"
    p = sum(math.exp(log_p(x)) for x in range(low, high + 1) if log_p(x) <= cutoff)
    return min(1.0, p)


def bootstrap_mean_interval(values: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES,
                            confidence: float = 0.95, seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean (seeded: a report reads the same twice); None for fewer
    than 2 values."""
    data = np.asarray(values, dtype=float)
    if data.size < 2:
        return None
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def pairwise_win_rate(mine: Sequence[float], theirs: Sequence[float]) -> float | None:
    """How often one of my calls beats one of theirs (ties count half): U / (n₁·n₂), the probability that a
    random call of mine scores higher than a random call of theirs. None without samples."""
    if not mine or not theirs:
        return None
    a, b = np.asarray(mine, dtype=float)[:, None], np.asarray(theirs, dtype=float)[None, :]
    wins = (a > b).sum() + 0.5 * (a == b).sum()
    return float(wins / (a.size * b.size))
