"""Moved to `switchboard.report.evals` (the dashboard shows eval runs too, and web/ may not import evals/);
this name is kept for the code and tests that still import it from here."""

from switchboard.report.evals import (  # noqa: F401
    GATE_FIGURES,
    Arm,
    CallVerdict,
    Rate,
    Summary,
    build_summary,
    check_gates,
    format_summary,
    parse_gates,
    summary_json,
    table,
)
from switchboard.report.evals_html import summary_html  # noqa: F401
