"""The report's statistics: percentiles, and the Mann-Whitney U test of two rows' TTFT samples."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100), linear interpolation; None for no values."""
    return round(float(np.percentile(values, q)), 1) if len(values) else None


def mann_whitney_p(x: Sequence[float], y: Sequence[float]) -> float:
    """Two-sided Mann-Whitney U p-value: scipy's when installed, else the normal approximation."""
    try:
        from scipy.stats import mannwhitneyu
    except ImportError:
        return mann_whitney_p_normal(x, y)
    return float(mannwhitneyu(x, y, alternative="two-sided").pvalue)


def mann_whitney_p_normal(x: Sequence[float], y: Sequence[float]) -> float:
    """Normal approximation with tie and continuity correction (scipy's method="asymptotic")."""
    n1, n2 = len(x), len(y)
    combined = sorted((value, group) for group, values in enumerate((x, y)) for value in values)
    rank_sum_x, ties, i = 0.0, 0.0, 0
    while i < len(combined):
        j = i
        while j + 1 < len(combined) and combined[j + 1][0] == combined[i][0]:
            j += 1
        rank = (i + j) / 2 + 1  # the average of ranks i+1 … j+1
        rank_sum_x += rank * sum(1 for k in range(i, j + 1) if combined[k][1] == 0)
        t = j - i + 1
        ties += t**3 - t
        i = j + 1
    n = n1 + n2
    u = rank_sum_x - n1 * (n1 + 1) / 2
    variance = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    if variance <= 0:
        return 1.0
    z = (abs(u - n1 * n2 / 2) - 0.5) / math.sqrt(variance)
    return min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2)))
