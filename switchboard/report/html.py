"""`switchboard report --html`: the report as a page with charts that opens offline.

    turns, shadows = await load(db, since, pipeline, variant)      # pipeline.report
    report = build_report(turns, shadows, pricing, filters=…)
    report_fragment(report, turns, shadows)  # <section class="switchboard-report">: table, notes, charts
    report_page(report, turns, shadows)      # the same in a standalone document with REPORT_CSS inline

`turns` / `shadows` are the rows the report was built from (CallStore.query_turns / query_shadows dicts).
Charts are drawn with matplotlib (Agg canvas, imported only when a chart is drawn) and embedded as base64
PNG: no script, font or stylesheet is fetched from anywhere. Hooks for tests and the dashboard: the table
is `<table class="report">`; each chart is `<figure data-chart="NAME"><img class="chart" alt="…">` with
NAME one of `latency-distribution`, `waterfall`, `waterfall-latest`, `cost` (the last only when some row
has a cost). All text is HTML-escaped.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

from switchboard.core.metrics import WATERFALL, stage_spans
from switchboard.report import (
    TABLE_HEADER,
    Report,
    Row,
    empty_text,
    format_cost,
    legend_lines,
    llm_of,
    table_cells,
)

LATEST_TURNS = 15  # turns in the latest-turns waterfall
STAGE_COLORS = ("#9aa5b1", "#4e79a7", "#f28e2b", "#59a14f", "#b07aa1")
COST_COLORS = {"LLM": "#f28e2b", "STT": "#4e79a7", "TTS": "#59a14f"}
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#bab0ac")

REPORT_CSS = """
.switchboard-report { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2933; }
.switchboard-report table.report { border-collapse: collapse; font-size: 0.8rem; margin: 0.5rem 0; }
.switchboard-report table.report th, .switchboard-report table.report td {
  border-bottom: 1px solid #d9e2ec; padding: 0.25rem 0.4rem; text-align: right; white-space: nowrap; }
.switchboard-report table.report th { white-space: normal; vertical-align: bottom; min-width: 3.5rem; }
.switchboard-report table.report th { background: #f0f4f8; position: sticky; top: 0; }
.switchboard-report table.report td:nth-child(-n+2), .switchboard-report table.report th:nth-child(-n+2) {
  text-align: left; }
.switchboard-report tr.shadow td { color: #52606d; font-style: italic; }
.switchboard-report tr.significant td.ttft { background: #ffe3e3; font-weight: 600; }
.switchboard-report tr.reference td.ttft { background: #e3f8ff; }
.switchboard-report .notes { font-size: 0.85rem; color: #52606d; }
.switchboard-report .notes li { margin: 0.2rem 0; }
.switchboard-report dl.filters { display: grid; grid-template-columns: max-content auto; gap: 0.1rem 1rem; }
.switchboard-report dl.filters dt { font-weight: 600; }
.switchboard-report dl.filters dd { margin: 0; }
.switchboard-report figure { margin: 1.5rem 0; }
.switchboard-report figure img.chart { max-width: 100%; height: auto; border: 1px solid #d9e2ec; }
.switchboard-report figcaption { font-size: 0.85rem; color: #52606d; max-width: 60rem; }
.switchboard-report .empty { font-size: 1.1rem; padding: 1rem; background: #f0f4f8; }
.switchboard-report .table-wrap { overflow-x: auto; }
"""


# --- the HTML ----------------------------------------------------------------------------------------------


def report_fragment(report: Report, turns: Sequence[dict[str, Any]],
                    shadows: Sequence[dict[str, Any]]) -> str:
    """The report as an HTML fragment (no <html>/<head>): filters and sample sizes, the table with its
    notes, and the charts. Style it with REPORT_CSS."""
    parts = ['<section class="switchboard-report">', _summary(report, turns, shadows)]
    if not report.rows:
        if not turns and not shadows:
            text = ("No turns yet: the call store has no turns matching these filters. "
                    "Calls answered by `switchboard serve` are recorded as they happen.")
        else:
            text = empty_text(report).capitalize() + "."
        parts += [f'<p class="empty">{escape(text)}</p>', "</section>"]
        return "\n".join(parts)
    parts += [_table(report), _notes(report)]
    groups = _live_groups(turns, report)
    parts.append(_figure(
        "latency-distribution", _distribution_chart(report, groups),
        "Latency distribution per vendor/model: voice-to-voice and LLM time to first token, box plots",
        "Box: quartiles and median; whiskers: 1.5 × IQR; dots: every turn (up to 400 a row). "
        "Voice-to-voice = first audio sent − speech end (live only: shadows are never spoken); "
        "TTFT = LLM first token − STT done (live) or request → first token (shadow, hatched).",
    ))
    parts.append(_figure(
        "waterfall", _median_waterfall_chart(report, groups),
        "Per-turn latency waterfall: the median turn of each vendor/model, stage by stage",
        "For each live vendor/model, its median turn by voice-to-voice, split into stages from the end of "
        "the caller's speech: endpointing, STT, LLM first token, TTS first byte (including the wait for "
        "the first speakable chunk), first audio sent.",
    ))
    parts.append(_figure(
        "waterfall-latest", _latest_waterfall_chart(turns),
        f"Per-turn latency waterfall of the latest {LATEST_TURNS} answered turns",
        f"The latest {LATEST_TURNS} turns that reached the caller, oldest at the top, stage by stage as "
        "in the chart above.",
    ))
    if any(row.cost_per_call is not None for row in report.rows):
        parts.append(_figure(
            "cost", _cost_chart(report), "Estimated cost per call by vendor/model (USD), LLM, STT and TTS",
            "USD per call from `pricing:`: live rows count the LLM's tokens plus the STT and TTS of the "
            "calls it answered; shadow rows their LLM tokens only. A + marks a partial cost (a stage "
            "without a price).",
        ))
    parts.append("</section>")
    return "\n".join(parts)


def report_page(report: Report, turns: Sequence[dict[str, Any]], shadows: Sequence[dict[str, Any]],
                title: str = "Switchboard report") -> str:
    """A complete standalone HTML document: report_fragment with inline CSS; nothing loaded from outside."""
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>",
        f"<style>\nbody {{ margin: 1.5rem; }}\n{REPORT_CSS}</style>",
        "</head>",
        "<body>",
        '<main class="switchboard-report-page">',
        f"<h1>{escape(title)}</h1>",
        report_fragment(report, turns, shadows),
        f"<footer><p>Generated by <code>switchboard report</code> at {escape(generated)}.</p></footer>",
        "</main>",
        "</body>",
        "</html>",
        "",
    ])


def _summary(report: Report, turns: Sequence[dict[str, Any]], shadows: Sequence[dict[str, Any]]) -> str:
    filters = report.filters
    without_llm = f" ({report.excluded_turns:,} without an LLM stage)" if report.excluded_turns else ""
    items = [
        ("since", filters.get("since") or "all time"),
        ("pipeline", filters.get("pipeline") or "all"),
        ("variant", filters.get("variant") or "all"),
        ("turns read", f"{len(turns):,} in {len({t['call_id'] for t in turns}):,} calls{without_llm}"),
        ("shadow results", f"{len(shadows):,}"),
    ]
    rows = "".join(f"<dt>{escape(key)}</dt><dd>{escape(value)}</dd>" for key, value in items)
    return f'<dl class="filters">{rows}</dl>'


def _table(report: Report) -> str:
    head = "".join(f'<th scope="col">{escape(name)}</th>' for name in TABLE_HEADER)
    ttft_column = TABLE_HEADER.index("TTFT p50/p90")
    body = []
    for row, cells in zip(report.rows, table_cells(report), strict=True):
        classes = [row.source] + (["significant"] if row.significant else []) + (
            ["reference"] if row.reference else [])
        tds = []
        for i, cell in enumerate(cells):
            attrs = ' class="ttft"' if i == ttft_column else ""
            if i == ttft_column and row.ttft_p_value is not None:
                attrs += f' title="{escape(f"p = {row.ttft_p_value:.3g}, n = {row.ttft_n}")}"'
            tds.append(f"<td{attrs}>{escape(cell)}</td>")
        body.append(f'<tr class="{" ".join(classes)}" data-source="{escape(row.source)}" '
                    f'data-vendor="{escape(row.vendor)}">{"".join(tds)}</tr>')
    return (f'<div class="table-wrap"><table class="report"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _notes(report: Report) -> str:
    lines = legend_lines(report)  # the second says which test was run, or that none was, with the n's
    marked = ' class="significance"'
    items = [f"<li{marked if i == 1 else ''}>{escape(line)}</li>" for i, line in enumerate(lines)]
    return f'<ul class="notes">{"".join(items)}</ul>'


def _figure(name: str, png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure data-chart="{escape(name)}"><img class="chart" alt="{escape(alt)}" '
            f'src="data:image/png;base64,{data}"><figcaption>{escape(caption)}</figcaption></figure>')


# --- data for the charts ------------------------------------------------------------------------------------


def _live_groups(turns: Sequence[dict[str, Any]], report: Report) -> dict[str, list[dict[str, Any]]]:
    """The report's live rows' turns, by LLM (grouped as build_report does)."""
    vendors = {row.vendor for row in report.rows if row.source == "live"}
    groups: dict[str, list[dict[str, Any]]] = {vendor: [] for vendor in sorted(vendors)}
    for turn in turns:
        vendor = llm_of(turn)
        if vendor in groups:
            groups[vendor].append(turn)
    return groups


Span = tuple[str, float, float]  # (stage, start ms, end ms) since the end of the caller's speech


def _segments(turn: dict[str, Any]) -> list[Span] | None:
    """A complete turn's stage spans (core.metrics.stage_spans), or None if some reading is missing.
    The last span ends at the turn's voice-to-voice."""
    if any(turn.get(end) is None for _, _, end in WATERFALL):
        return None
    return stage_spans(turn)


def _total(spans: list[Span]) -> float:
    """What the caller waited: the end of the last stage (= voice-to-voice), not the stages' sum."""
    return max(end for _, _, end in spans)


def _label(text: str) -> str:
    """Text for matplotlib, which would read $…$ as mathematics."""
    return text.replace("$", r"\$")


def _row_label(row: Row) -> str:
    return _label(f"{row.vendor} · {row.source}")


def _color(report: Report, vendor: str) -> str:
    vendors = list(dict.fromkeys(row.vendor for row in report.rows))
    return PALETTE[vendors.index(vendor) % len(PALETTE)] if vendor in vendors else PALETTE[0]


# --- charts ------------------------------------------------------------------------------------------------


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _no_data(axes: Any, text: str) -> None:
    axes.text(0.5, 0.5, text, ha="center", va="center", transform=axes.transAxes, color="#52606d")
    axes.set_xticks([])
    axes.set_yticks([])


def _boxes(axes: Any, report: Report, rows: list[Row], samples: list[list[float]], title: str) -> None:
    axes.set_title(title, loc="left", fontsize=11)
    axes.set_xlabel("ms")
    axes.grid(axis="x", color="#e4e7eb")
    if not any(samples):
        _no_data(axes, "no samples")
        return
    positions = list(range(len(rows), 0, -1))  # first row at the top
    plotted = [(pos, row, values)
               for pos, row, values in zip(positions, rows, samples, strict=True) if values]
    parts = axes.boxplot([values for _, _, values in plotted], positions=[pos for pos, _, _ in plotted],
                         orientation="horizontal", widths=0.6, patch_artist=True, showfliers=False,
                         medianprops={"color": "#1f2933"})
    for box, (_, row, _) in zip(parts["boxes"], plotted, strict=True):
        box.set_facecolor(_color(report, row.vendor))
        box.set_alpha(0.55)
        if row.source == "shadow":
            box.set_hatch("//")
    for pos, row, values in plotted:
        shown = values[:: max(1, len(values) // 400)]
        jitter = [pos + 0.18 * (((i * 7919) % 13) / 6 - 1) for i in range(len(shown))]  # fixed jitter
        axes.scatter(shown, jitter, s=8, color=_color(report, row.vendor), alpha=0.6, linewidths=0, zorder=3)
    axes.set_yticks(positions, [f"{_row_label(row)} (n={len(values)})"
                                for row, values in zip(rows, samples, strict=True)])
    # plain milliseconds, never an offset ("1e-14+1e-1") when every sample is (nearly) the same
    low, high = min(min(v) for v in samples if v), max(max(v) for v in samples if v)
    if high - low < 1.0:
        axes.set_xlim(low - 1.0, high + 1.0)
    axes.ticklabel_format(axis="x", style="plain", useOffset=False)
    axes.set_ylim(0.4, len(rows) + 0.6)


def _distribution_chart(report: Report, groups: dict[str, list[dict[str, Any]]]) -> bytes:
    live = [row for row in report.rows if row.source == "live"]
    v2v = [[t["voice_to_voice_ms"] for t in groups.get(row.vendor, [])
            if t.get("voice_to_voice_ms") is not None] for row in live]
    rows = report.rows
    figure = _new_figure(11, 1.6 + 0.42 * (max(len(live), 1) + len(rows)))
    top, bottom = figure.subplots(2, 1, height_ratios=[max(len(live), 1) + 0.8, len(rows) + 0.8])
    if live:
        _boxes(top, report, live, v2v, "voice-to-voice")
    else:
        top.set_title("voice-to-voice", loc="left", fontsize=11)
        _no_data(top, "no live turns")
    _boxes(bottom, report, rows, [row.ttft_samples for row in rows], "LLM time to first token")
    return _png(figure)


def _waterfall(axes: Any, labels: list[str], rows: list[list[Span]]) -> None:
    """One row per turn, one thin bar per stage at its place on the time axis: work done before the
    endpoint (speculative turns) overlaps the endpointing instead of adding to it, and the row ends at
    the turn's voice-to-voice, which is the total printed."""
    positions = list(range(len(labels), 0, -1))
    stripe = 0.7 / len(WATERFALL)
    for k, (stage, _, _) in enumerate(WATERFALL):
        lane = [(pos, span) for pos, spans in zip(positions, rows, strict=True)
                for span in spans if span[0] == stage]
        axes.barh([pos + 0.35 - stripe * (k + 0.5) for pos, _ in lane],
                  [max(end - start, 1.0) for _, (_, start, end) in lane],
                  left=[start for _, (_, start, _) in lane], height=stripe * 0.9, color=STAGE_COLORS[k],
                  label=stage)
    totals = [_total(spans) for spans in rows]
    for pos, total in zip(positions, totals, strict=True):
        axes.text(total, pos, f" {total:.0f} ms", va="center", fontsize=8, color="#1f2933")
    axes.set_yticks(positions, [_label(label) for label in labels])
    axes.set_xlabel("ms after the end of the caller's speech (a row ends at its voice-to-voice)")
    axes.set_xlim(0, max(totals) * 1.15 if totals and max(totals) > 0 else 1)
    axes.ticklabel_format(axis="x", style="plain", useOffset=False)
    axes.grid(axis="x", color="#e4e7eb")
    axes.set_axisbelow(True)
    # above the plot, clear of the axis label
    axes.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=5, fontsize=8, frameon=False)


def _median_turn(turns: list[dict[str, Any]]) -> tuple[dict[str, Any], list[Span]] | None:
    """The turn whose voice-to-voice is the (lower) median of the complete turns'."""
    complete = sorted(((t, parts) for t in turns if (parts := _segments(t)) is not None),
                      key=lambda item: _total(item[1]))
    return complete[(len(complete) - 1) // 2] if complete else None  # the lower median


def _median_waterfall_chart(report: Report, groups: dict[str, list[dict[str, Any]]]) -> bytes:
    labels, segments = [], []
    for vendor, turns in groups.items():
        median = _median_turn(turns)
        if median is not None:
            _, parts = median
            labels.append(f"{vendor} (median of {sum(_segments(t) is not None for t in turns)})")
            segments.append(parts)
    figure = _new_figure(11, 1.6 + 0.45 * max(len(labels), 2))
    axes = figure.subplots()
    axes.set_title("median turn per vendor/model", loc="left", fontsize=11)
    if labels:
        _waterfall(axes, labels, segments)
    else:
        _no_data(axes, "no turn with every stage recorded")
    return _png(figure)


def _latest_waterfall_chart(turns: Sequence[dict[str, Any]]) -> bytes:
    complete = [(t, parts) for t in turns if (parts := _segments(t)) is not None]
    complete.sort(key=lambda item: (item[0].get("created_at") or datetime.min.replace(tzinfo=UTC),
                                    item[0].get("id") or 0))
    latest = complete[-LATEST_TURNS:]
    labels = []
    for turn, _ in latest:
        when = turn.get("created_at")
        stamp = when.strftime("%m-%d %H:%M:%S") if isinstance(when, datetime) else ""
        labels.append(f"{stamp} {llm_of(turn) or '?'} #{turn.get('index', '?')}".strip())
    figure = _new_figure(11, 1.6 + 0.32 * max(len(labels), 3))
    axes = figure.subplots()
    axes.set_title(f"latest {len(latest)} turns", loc="left", fontsize=11)
    if latest:
        _waterfall(axes, labels, [parts for _, parts in latest])
    else:
        _no_data(axes, "no turn with every stage recorded")
    return _png(figure)


def _cost_chart(report: Report) -> bytes:
    rows = [row for row in report.rows if row.cost_per_call is not None]
    figure = _new_figure(11, 1.6 + 0.45 * max(len(rows), 2))
    axes = figure.subplots()
    axes.set_title("estimated cost per call", loc="left", fontsize=11)
    positions = list(range(len(rows), 0, -1))
    lefts = [0.0] * len(rows)
    stages = (("LLM", "cost_llm_per_call"), ("STT", "cost_stt_per_call"), ("TTS", "cost_tts_per_call"))
    for stage, attr in stages:
        widths = [getattr(row, attr) or 0.0 for row in rows]
        axes.barh(positions, widths, left=lefts, color=COST_COLORS[stage], label=stage, height=0.6)
        lefts = [left + width for left, width in zip(lefts, widths, strict=True)]
    for pos, row in zip(positions, rows, strict=True):
        axes.text(row.cost_per_call or 0.0, pos, _label(f" ${format_cost(row)}"), va="center", fontsize=8)
    axes.set_yticks(positions, [_row_label(row) for row in rows])
    axes.set_xlabel("USD per call")
    axes.set_xlim(0, max(lefts) * 1.25 if max(lefts) > 0 else 1)
    axes.grid(axis="x", color="#e4e7eb")
    axes.set_axisbelow(True)
    axes.legend(loc="lower right", fontsize=8)
    return _png(figure)
