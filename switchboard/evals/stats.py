"""Moved to `switchboard.report.eval_stats` (the eval summary lives in report/, which the dashboard may
import); this name is kept for the code and tests that still import it from here."""

from switchboard.report.eval_stats import (  # noqa: F401
    bootstrap_mean_interval,
    fisher_exact_p,
    mann_whitney_p,
    pairwise_win_rate,
    wilson,
)
