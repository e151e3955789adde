"""The report as text: its JSON, and the table with its legend that `switchboard report` prints."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from switchboard.report.rows import TEST_NAME, Report, Row


def report_json(report: Report) -> dict[str, Any]:
    """The report as JSON-ready data (what `--json` prints)."""
    reference = report.reference
    return {
        "filters": report.filters,
        "test": TEST_NAME,
        "alpha": report.alpha,
        "reference": None if reference is None else {"source": reference.source, "vendor": reference.vendor},
        "excluded_turns": report.excluded_turns,
        "hedges": report.hedges,
        "rows": [{k: v for k, v in asdict(row).items() if k != "ttft_samples"} for row in report.rows],
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


TABLE_HEADER = ("source", "LLM vendor/model", "calls", "turns", "v2v p50/p90/p99", "TTFT p50/p90",
                "STT p50", "TTS 1st byte p50", "err %", "timeout %", "interrupt/undone %", "tokens in/out",
                "spec drop, bc/turn", "tools/turn (invalid/err %)", "$/call")


def significance_mark(row: Row) -> str:
    """"ref" for the row the others are tested against, "*" for a significant difference, else ""."""
    return "ref" if row.reference else "*" if row.significant else ""


def format_cost(row: Row) -> str:
    """$/call as shown: "-" when unpriced, a trailing "+" when some stage used has no price."""
    if row.cost_per_call is None:
        return "-"
    return f"{row.cost_per_call:.4f}" + ("+" if row.cost_partial else "")


def table_cells(report: Report) -> list[list[str]]:
    """The table's cells, one list per row, in TABLE_HEADER's order (the text and HTML tables' content)."""
    cells = []
    for row in report.rows:
        mark = significance_mark(row)
        cells.append([
            row.source, row.vendor, str(row.calls), str(row.turns),
            f"{_ms(row.v2v_p50_ms)}/{_ms(row.v2v_p90_ms)}/{_ms(row.v2v_p99_ms)}",
            f"{_ms(row.ttft_p50_ms)}/{_ms(row.ttft_p90_ms)}" + (f" {mark}" if mark else ""),
            _ms(row.stt_p50_ms), _ms(row.tts_first_byte_p50_ms),
            _num(row.errors_pct), _num(row.timeouts_pct),
            f"{_num(row.interruptions_pct)}/{_num(row.undone_pct)}",
            f"{_num(row.tokens_in_mean)}/{_num(row.tokens_out_mean)}",
            f"{_num(row.dropped_per_turn, 2)}, {_num(row.backchannels_per_turn, 2)}",
            f"{_num(row.tool_calls_per_turn, 2)} ({_num(row.tool_invalid_pct)}/{_num(row.tool_error_pct)})",
            format_cost(row),
        ])
    return cells


def empty_text(report: Report) -> str:
    """What to say when no row matches."""
    return "no turns match" + (f" ({report.excluded_turns} without an LLM stage)"
                               if report.excluded_turns else "")


def legend_lines(report: Report) -> list[str]:
    """The notes under the table: units, the significance test with its sample sizes, costs, exclusions."""
    lines = ["times in ms; TTFT = LLM first token − STT done, STT = STT done − endpoint, "
             "TTS 1st byte = TTS first byte − first chunk, v2v = first audio sent − speech end"]
    reference = report.reference
    if reference is not None:
        samples = ", ".join(f"{row.vendor} ({row.source}) n={row.ttft_n}" + (
            "" if row.ttft_p_value is None else f" p={row.ttft_p_value:.3g}") for row in report.rows)
        lines.append(f"* TTFT differs from ref ({reference.vendor}, {reference.source}): {TEST_NAME}, "
                     f"p < {report.alpha:g}; TTFT samples: {samples}")
    else:
        lines.append("significance: not tested (fewer than two rows with 2+ TTFT samples)")
    if any(row.cost_per_call is not None for row in report.rows):
        lines.append("$/call: USD per call from `pricing:`; live rows: the LLM's tokens + STT minutes of "
                     "speech + TTS characters of the calls it answered; shadow rows: LLM tokens only")
    partial = [row for row in report.rows if row.cost_partial]
    if partial:
        lines.append("+ partial (a lower bound), no price for: " + "; ".join(
            f"{row.vendor} ({row.source}): {', '.join(row.cost_unpriced)}" for row in partial))
    if report.hedges:
        lines.append("hedged (a late first result asked again beside it; won = the hedge answered first): "
                     + "; ".join(f"{key} {count['hedged']} (won {count['won']})"
                                 for key, count in report.hedges.items()))
    if report.excluded_turns:
        lines.append(f"{report.excluded_turns} turns without an LLM stage (greetings) are not counted"
                     + (" in the figures; their STT and TTS count in their call's $/call"
                        if any(row.cost_per_call is not None for row in report.rows) else ""))
    return lines


def format_table(report: Report) -> str:
    """The report as a text table with its legend."""
    if not report.rows:
        return empty_text(report) + "\n"
    lines = [list(TABLE_HEADER), *table_cells(report)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(TABLE_HEADER))]
    text = ["  ".join(cell.ljust(width) if i < 2 else cell.rjust(width)
                      for i, (cell, width) in enumerate(zip(line, widths, strict=True))).rstrip()
            for line in lines]
    return "\n".join([*text, "", *legend_lines(report)]) + "\n"
