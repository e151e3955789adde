"""`switchboard report`: vendors side by side, from the turns in the call store.

One row per LLM vendor/model: live rows from `turns`, shadow rows from `shadow_results` (when there are
any). A live turn belongs to the LLM that answered it or, when none did, to the first LLM its failures
name (the one that failed); turns with no LLM at all (greetings) are left out of the figures and counted
(their STT/TTS cost counts, see below). `--html` writes the same with charts (pipeline/report_html.py).
The store is read PAGE_SIZE rows at a time; long reads show progress on stderr, never on stdout.

Figures, all in milliseconds (see pipeline/metrics.py; every reading is relative to the end of speech):
  voice-to-voice   first audio frame sent − speech end (p50/p90/p99)
  LLM TTFT         LLM first token − STT done: from the request to the first token (p50/p90)
  STT              the STT request's own latency (p50; rows from before speculation: STT done − endpoint)
  TTS first byte   TTS first byte − first speakable chunk (p50)
  errors %         turns that failed (the caller heard the apology)
  timeouts %       turns with a provider timeout in any stage (recovered or not)
  interrupt/undone %
                   turns the caller barged into / replies undone because the caller went on just as
                   the bot started (a cut-in, answered together with the rest of their sentence)
  tokens           mean input / output tokens per turn
  spec drop, bc/turn
                   speculative starts (STT/LLM/TTS begun at a pause) dropped because the caller went
                   on, per turn: the vendor cost of speculation; then the caller's backchannels ("yeah",
                   "uh-huh") the bot went on through, per turn
  tools/turn (invalid/err %)
                   calls of the pipeline's HTTP tools per turn (pipeline/tools.py); in brackets, of
                   those calls the % refused (arguments against the tool's schema, or a tool that does
                   not exist: how well the LLM uses tools) and the % whose request failed or timed out
                   (how well the tools work). Shadow rows: the tool calls of their one request per turn,
                   never run (no err %)
  $/call           estimated USD per call from `pricing:` (see below)
Under the table: requests hedged per stage and vendor (pipeline/hedging.py: a request whose first
result was late, asked again beside it), and how many of them the hedge answered first.
Significance: each row's TTFT against the fastest row's (lowest TTFT p50) with a two-sided
Mann-Whitney U test; p < `alpha` (0.05) is marked `*`. Rows with fewer than 2 samples are not tested.
Percentiles interpolate linearly between samples (numpy's default).

Cost per call (pipeline.yaml's `pricing:`, keyed "vendor/model" or a bare model name): a live row's
calls cost their LLM tokens at the row's LLM prices (`input_per_1m`, `output_per_1m`), plus the STT
audio at each turn's STT vendor's `per_minute`, plus the characters spoken at each turn's TTS vendor's
`per_1m_chars` (a speech-to-speech model's row: its text tokens at `input_per_1m` / `output_per_1m` and
its audio tokens at `audio_input_per_1m` / `audio_output_per_1m`) — so the STT and TTS spend of the
calls an LLM answered counts in that LLM's row, and so do
turns without an LLM stage (the greeting) of those calls. STT minutes are the caller's speech as the
turn records it (`speech_ms`, first to last voiced frame): a slight underestimate, since the pre-roll and
a short tail are sent too. Shadow rows cost their LLM tokens only (they are never transcribed or spoken).
The embedded engines (pocketsphinx, scripted, espeak) cost 0 unless priced. A row none of whose stages
has a price shows `-`; one that has prices for some stages but not for others shows the priced part with
a `+` (a lower bound) and lists what is unpriced (`cost_partial`, `cost_unpriced` in JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from switchboard.core.metrics import hedge_counts

# "vendor/model" or "model" -> prices in USD: input_per_1m / output_per_1m (LLM tokens), per_minute (STT
# audio), per_1m_chars (TTS characters); any subset. pipeline.yaml's `pricing:` (pricing_from_config).
Pricing = dict[str, dict[str, float]]
FREE_VENDORS = frozenset({"pocketsphinx", "scripted", "espeak"})  # embedded engines: 0 unless priced
PAGE_SIZE = 5000  # rows per query when reading the store
PROGRESS_MIN_ROWS = 20_000  # show progress on a non-terminal stderr only for reads bigger than this
PROGRESS_INTERVAL_S = 0.5

ALPHA = 0.05
TEST_NAME = "two-sided Mann-Whitney U on LLM TTFT against the fastest row"
_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass
class Row:
    """One vendor/model's figures (None where there is no sample)."""

    source: str  # "live" or "shadow"
    vendor: str  # "vendor/model"
    calls: int
    turns: int
    v2v_p50_ms: float | None = None
    v2v_p90_ms: float | None = None
    v2v_p99_ms: float | None = None
    v2v_n: int = 0
    ttft_p50_ms: float | None = None
    ttft_p90_ms: float | None = None
    ttft_n: int = 0
    stt_p50_ms: float | None = None
    tts_first_byte_p50_ms: float | None = None
    errors_pct: float = 0.0
    timeouts_pct: float = 0.0
    interruptions_pct: float | None = None  # shadows are never heard
    tokens_in_mean: float | None = None
    tokens_out_mean: float | None = None
    dropped_per_turn: float | None = None  # speculative starts dropped (the caller went on) per turn
    backchannels_per_turn: float | None = None  # the caller's "yeah"s the bot went on through, per turn
    undone_pct: float | None = None  # replies undone because the caller went on as they started
    tool_calls_per_turn: float | None = None  # declared tools called per turn (shadows: None)
    tool_invalid_pct: float | None = None  # of the tool calls: refused (bad arguments, unknown tool)
    tool_error_pct: float | None = None  # of the tool calls: failed or timed out
    cost_per_call: float | None = None  # USD: LLM + STT + TTS (shadows: LLM), None when nothing is priced
    cost_llm_per_call: float | None = None  # the parts of cost_per_call (None likewise)
    cost_stt_per_call: float | None = None
    cost_tts_per_call: float | None = None
    cost_partial: bool = False  # some stage used has no price: cost_per_call is a lower bound
    cost_unpriced: list[str] = field(default_factory=list)  # "stt openai/whisper-1", … without a price
    ttft_p_value: float | None = None  # against the reference row; None for it and untested rows
    significant: bool = False
    reference: bool = False  # the fastest row, the others are tested against
    ttft_samples: list[float] = field(default_factory=list, repr=False)


@dataclass
class Report:
    rows: list[Row]
    excluded_turns: int = 0  # turns without an LLM stage
    hedges: dict[str, dict[str, int]] = field(default_factory=dict)  # "stage vendor" -> hedged, won
    filters: dict[str, str | None] = field(default_factory=dict)
    alpha: float = ALPHA

    @property
    def reference(self) -> Row | None:
        return next((row for row in self.rows if row.reference), None)


# --- statistics ---------------------------------------------------------------------------------------------


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


# --- building ----------------------------------------------------------------------------------------------


def _diff(later: float | None, earlier: float | None) -> float | None:
    return None if later is None or earlier is None else later - earlier


def _pct(count: int, total: int) -> float:
    return round(100 * count / total, 1) if total else 0.0


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 1) if values else None


def llm_of(turn: dict[str, Any]) -> str | None:
    """The LLM a live turn belongs to: the one that answered, else the first one that failed."""
    if turn.get("llm_vendor"):
        return turn["llm_vendor"]
    for failure in turn.get("failures") or []:
        stage, _, rest = failure.partition(" ")
        if stage == "llm" and rest:
            return rest.split(" ", 1)[0]
    return None


def pricing_from_config(config: Any) -> Pricing:
    """pipeline.yaml's `pricing:` (of a pipeline.config.Config) as Pricing: the prices that are set."""
    return {name: price.model_dump(exclude_none=True) for name, price in config.pricing.items()}


def _unit_price(pricing: Pricing | None, vendor: str, key: str) -> tuple[float | None, bool]:
    """(USD per unit of `key` for "vendor/model", whether `pricing` names it); embedded engines cost 0."""
    for name in (vendor, vendor.split("/", 1)[-1]):
        price = (pricing or {}).get(name)
        if price is not None and price.get(key) is not None:
            return float(price[key]), True
    if vendor.split("/", 1)[0] in FREE_VENDORS:
        return 0.0, False
    return None, False


@dataclass
class _Cost:
    """Adds up what a row's turns cost, stage by stage, remembering what had no price."""

    pricing: Pricing | None
    parts: dict[str, float] = field(default_factory=lambda: {"llm": 0.0, "stt": 0.0, "tts": 0.0})
    unpriced: set[str] = field(default_factory=set)
    named: bool = False  # some price from `pricing` applied

    def add(self, stage: str, vendor: str | None, key: str, quantity: float | None) -> None:
        if not vendor or not quantity:
            return
        price, named = _unit_price(self.pricing, vendor, key)
        if price is None:
            self.unpriced.add(f"{stage} {vendor}")
            return
        self.named |= named
        self.parts[stage] += quantity * price

    def llm(self, vendor: str | None, turn: dict[str, Any]) -> None:
        self.add("llm", vendor, "input_per_1m", (turn.get("tokens_in") or 0) / 1e6)
        self.add("llm", vendor, "output_per_1m", (turn.get("tokens_out") or 0) / 1e6)
        # a speech-to-speech model (kind: realtime) is the row's "LLM"; its audio tokens are priced apart
        self.add("llm", vendor, "audio_input_per_1m", (turn.get("audio_tokens_in") or 0) / 1e6)
        self.add("llm", vendor, "audio_output_per_1m", (turn.get("audio_tokens_out") or 0) / 1e6)

    def speech(self, turn: dict[str, Any]) -> None:
        self.add("stt", turn.get("stt_vendor"), "per_minute", (turn.get("speech_ms") or 0) / 60_000)
        self.add("tts", turn.get("tts_vendor"), "per_1m_chars", (turn.get("tts_chars") or 0) / 1e6)

    def fill(self, row: Row) -> None:
        """Set the row's cost fields, per call."""
        if self.pricing:
            row.cost_unpriced = sorted(self.unpriced)
        if not self.named or not row.calls:
            return
        per_call = {stage: round(total / row.calls, 6) for stage, total in self.parts.items()}
        row.cost_llm_per_call = per_call["llm"]
        if row.source == "live":
            row.cost_stt_per_call, row.cost_tts_per_call = per_call["stt"], per_call["tts"]
        row.cost_per_call = round(sum(self.parts.values()) / row.calls, 6)
        row.cost_partial = bool(self.unpriced)


def _tokens(turns: list[dict[str, Any]], key: str) -> float | None:
    return _mean([t[key] for t in turns if t.get(key) is not None])


def _is_timeout(texts: Iterable[str | None]) -> bool:
    return any(text and "timeout" in text.lower() for text in texts)


def _stt_ms(turn: dict[str, Any]) -> float | None:
    """The STT request's latency; older rows (no stt_ms) had it from the endpoint, before speculation."""
    if turn.get("stt_ms") is not None:
        return turn["stt_ms"]
    return _diff(turn.get("stt_done_ms"), turn.get("endpoint_ms"))


def _live_row(vendor: str, turns: list[dict[str, Any]], pricing: Pricing | None,
              other_turns: Sequence[dict[str, Any]] = ()) -> Row:
    """The row of one LLM; `other_turns` are its calls' turns without an LLM stage (for the cost)."""
    v2v = [t["voice_to_voice_ms"] for t in turns if t.get("voice_to_voice_ms") is not None]
    ttft = [d for t in turns if (d := _diff(t.get("llm_first_token_ms"), t.get("stt_done_ms"))) is not None]
    stt = [d for t in turns if (d := _stt_ms(t)) is not None]
    tts = [d for t in turns if (d := _diff(t.get("tts_first_byte_ms"), t.get("first_chunk_ms"))) is not None]
    calls = len({t["call_id"] for t in turns})
    row = Row(
        source="live", vendor=vendor, calls=calls, turns=len(turns),
        v2v_p50_ms=percentile(v2v, 50), v2v_p90_ms=percentile(v2v, 90), v2v_p99_ms=percentile(v2v, 99),
        v2v_n=len(v2v),
        ttft_p50_ms=percentile(ttft, 50), ttft_p90_ms=percentile(ttft, 90), ttft_n=len(ttft),
        stt_p50_ms=percentile(stt, 50), tts_first_byte_p50_ms=percentile(tts, 50),
        errors_pct=_pct(sum(t.get("error") is not None for t in turns), len(turns)),
        timeouts_pct=_pct(sum(_is_timeout(t.get("failures") or []) for t in turns), len(turns)),
        interruptions_pct=_pct(sum(bool(t.get("interrupted")) for t in turns), len(turns)),
        tokens_in_mean=_tokens(turns, "tokens_in"), tokens_out_mean=_tokens(turns, "tokens_out"),
        dropped_per_turn=round(sum(t.get("speculation_dropped") or 0 for t in turns) / len(turns), 2),
        backchannels_per_turn=round(sum(t.get("backchannels") or 0 for t in turns) / len(turns), 2),
        undone_pct=_pct(sum(bool(t.get("undone")) for t in turns), len(turns)),
        ttft_samples=ttft,
    )
    _tool_figures(row, turns)
    cost = _Cost(pricing)
    for turn in turns:
        cost.llm(vendor, turn)
        cost.speech(turn)
    for turn in other_turns:
        cost.speech(turn)
    cost.fill(row)
    return row


def _tool_figures(row: Row, turns: list[dict[str, Any]]) -> None:
    """Tool calls per turn, and of those the refused and the failed (rates None without a call)."""
    tool_calls = sum(t.get("tool_calls") or 0 for t in turns)
    row.tool_calls_per_turn = round(tool_calls / len(turns), 2)
    if tool_calls:
        row.tool_invalid_pct = _pct(sum(t.get("tool_invalid") or 0 for t in turns), tool_calls)
        row.tool_error_pct = _pct(sum(t.get("tool_errors") or 0 for t in turns), tool_calls)


def _shadow_row(vendor: str, results: list[dict[str, Any]], pricing: Pricing | None) -> Row:
    ttft = [r["ttft_ms"] for r in results if r.get("ttft_ms") is not None]
    calls = len({r["call_id"] for r in results})
    row = Row(
        source="shadow", vendor=vendor, calls=calls, turns=len(results),
        ttft_p50_ms=percentile(ttft, 50), ttft_p90_ms=percentile(ttft, 90), ttft_n=len(ttft),
        errors_pct=_pct(sum(r.get("error") is not None for r in results), len(results)),
        timeouts_pct=_pct(sum(_is_timeout([r.get("error")]) for r in results), len(results)),
        tokens_in_mean=_tokens(results, "tokens_in"), tokens_out_mean=_tokens(results, "tokens_out"),
        ttft_samples=ttft,
    )
    _tool_figures(row, results)
    row.tool_error_pct = None  # a shadow's tool calls are never run
    cost = _Cost(pricing)
    for result in results:
        cost.llm(vendor, result)
    cost.fill(row)
    return row


def build_report(
    turns: Iterable[dict[str, Any]],
    shadows: Iterable[dict[str, Any]] = (),
    pricing: Pricing | None = None,
    alpha: float = ALPHA,
    filters: dict[str, str | None] | None = None,
) -> Report:
    """Rows from `CallStore.query_turns()` / `query_shadows()` dicts (only the columns used are needed)."""
    live: dict[str, list[dict[str, Any]]] = {}
    without_llm: list[dict[str, Any]] = []
    owner: dict[str, tuple[int, str]] = {}  # call -> (index, LLM) of its first turn with an LLM
    hedged: list[list[str]] = []  # every turn's hedges, greetings' too
    for turn in turns:
        if turn.get("hedges"):
            hedged.append(turn["hedges"])
        vendor = llm_of(turn)
        if vendor is None:
            without_llm.append(turn)
            continue
        live.setdefault(vendor, []).append(turn)
        index = turn.get("index") or 0
        if turn["call_id"] not in owner or index < owner[turn["call_id"]][0]:
            owner[turn["call_id"]] = (index, vendor)
    others: dict[str, list[dict[str, Any]]] = {}  # LLM -> its calls' turns without an LLM (greetings)
    for turn in without_llm:
        if turn["call_id"] in owner:
            others.setdefault(owner[turn["call_id"]][1], []).append(turn)
    shadow: dict[str, list[dict[str, Any]]] = {}
    for result in shadows:
        shadow.setdefault(result["vendor"], []).append(result)
    rows = [_live_row(vendor, group, pricing, others.get(vendor, ()))
            for vendor, group in sorted(live.items())]
    rows += [_shadow_row(vendor, group, pricing) for vendor, group in sorted(shadow.items())]
    _mark_significance(rows, alpha)
    return Report(rows=rows, excluded_turns=len(without_llm), filters=filters or {}, alpha=alpha,
                  hedges=hedge_counts(hedged))


def _mark_significance(rows: list[Row], alpha: float) -> None:
    testable = [row for row in rows if row.ttft_n >= 2]
    if len(testable) < 2:
        return
    reference = min(testable, key=lambda row: (row.ttft_p50_ms, row.source != "live", row.vendor))
    reference.reference = True
    for row in testable:
        if row is not reference:
            row.ttft_p_value = mann_whitney_p(row.ttft_samples, reference.ttft_samples)
            row.significant = row.ttft_p_value < alpha


# --- output -------------------------------------------------------------------------------------------------


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


# --- reading the store and the command line --------------------------------------------------------------


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """'24h', '7d', '30m', '2w', '90s' (before now) or an ISO date/time (naive = UTC) -> UTC datetime."""
    now = now or datetime.now(UTC)
    match = _SINCE.match(text)
    if match:
        return now - timedelta(**{_UNITS[match[2]]: float(match[1])})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--since: expected a duration like 24h, 7d, 30m or an ISO date like 2025-01-31, "
                         f"got {text!r}") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


class Progress:
    """Reports how far a long read is, on stderr: "reading turns: 45,000 / 120,000".

    Shown on a terminal for reads of more than one page (one line, rewritten in place), elsewhere (a log
    file, CI) for reads of more than PROGRESS_MIN_ROWS rows (a line each time); at most every
    PROGRESS_INTERVAL_S, and always the last. Never written to stdout, which may carry --json."""

    def __init__(self, stream: TextIO | None = None, *, min_rows: int | None = None,
                 interval_s: float | None = None) -> None:
        self.stream = stream or sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.min_rows = min_rows
        self.interval_s = PROGRESS_INTERVAL_S if interval_s is None else interval_s
        self._last = -math.inf

    def __call__(self, what: str, done: int, total: int) -> None:
        threshold = self.min_rows
        if threshold is None:
            threshold = PAGE_SIZE if self.tty else PROGRESS_MIN_ROWS
        if total <= threshold:
            return
        final = done >= total
        now = time.monotonic()
        if not final and now - self._last < self.interval_s:
            return
        self._last = now
        text = f"reading {what}: {done:,} / {total:,}"
        if self.tty:
            self.stream.write("\r" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


ProgressCallback = Callable[[str, int, int], None]  # (what, rows read, rows in all)


async def _read_paged(query: Any, count: Any, what: str, page_size: int,
                      progress: ProgressCallback | None) -> list[dict[str, Any]]:
    """Every row of a CallStore query, `page_size` at a time (keyset on id), reporting progress."""
    total = await count()
    rows: list[dict[str, Any]] = []
    after: int | None = None
    while True:
        page = await query(after_id=after, limit=page_size)
        rows += page
        last = len(page) < page_size
        if progress is not None and (last or len(rows) < total):  # done == total only once: at the end
            progress(what, len(rows), len(rows) if last else total)
        if last:
            return rows
        after = page[-1]["id"]


async def load(
    db: str | None = None,
    since: datetime | None = None,
    pipeline: str | None = None,
    variant: str | None = None,
    *,
    progress: ProgressCallback | None = None,
    page_size: int | None = None,
    evals: bool = False,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(turns, shadow results), oldest first, from the store at `db` (a URL or an SQLite path; None:
    switchboard.db). Read `page_size` (PAGE_SIZE) rows per query; `progress(what, done, total)` after each.
    The calls `switchboard eval` placed are left out unless `evals`.

    Raises FileNotFoundError for an SQLite file that does not exist (rather than creating one)."""
    from functools import partial

    from sqlalchemy.engine import make_url

    from switchboard.store import CallStore

    store = CallStore(db)
    url = make_url(store.url)
    sqlite_file = url.database if url.get_backend_name() == "sqlite" and url.database != ":memory:" else None
    if sqlite_file and not await asyncio.to_thread(Path(sqlite_file).exists):
        raise FileNotFoundError(f"no call store at {sqlite_file}")
    size = page_size or PAGE_SIZE
    await store.open()
    try:
        filters = (since, pipeline, variant)
        turns = await _read_paged(partial(store.query_turns, *filters, evals=evals),
                                  partial(store.count_turns, *filters, evals=evals), "turns", size, progress)
        shadows = await _read_paged(partial(store.query_shadows, *filters, evals=evals),
                                    partial(store.count_shadows, *filters, evals=evals), "shadow results",
                                    size, progress)
    finally:
        await store.close()
    oldest_first = lambda row: (row["created_at"], row["id"])  # noqa: E731
    return sorted(turns, key=oldest_first), sorted(shadows, key=oldest_first)


def by_config_version(turns: list[dict[str, Any]], shadows: list[dict[str, Any]], pricing: Pricing | None,
                      filters: dict[str, str | None], as_json: bool = False) -> str:
    """One report per configuration version (`calls.config_version`: the pipeline's settings' hash),
    oldest first, each headed by its version, the file's hash and when its turns were."""
    groups: dict[str | None, list[dict[str, Any]]] = {}
    for turn in turns:
        groups.setdefault(turn.get("config_version"), []).append(turn)
    sections = []
    for version, group in groups.items():
        files = sorted({turn.get("config_file") or "?" for turn in group})
        report = build_report(group, [s for s in shadows if s.get("config_version") == version], pricing,
                              filters={**filters, "config_version": version})
        first, last = group[0]["created_at"], group[-1]["created_at"]
        sections.append((version or "unrecorded", files, first, last, report))
    if as_json:
        return json.dumps([{"config_version": version, "config_files": files, "first": first.isoformat(),
                            "last": last.isoformat(), **report_json(report)}
                           for version, files, first, last, report in sections], indent=2) + "\n"
    return "\n".join(f"config {version} (file {', '.join(files)}): turns {first:%Y-%m-%d %H:%M} to "
                     f"{last:%Y-%m-%d %H:%M} UTC\n{format_table(report)}"
                     for version, files, first, last, report in sections) or "no turns\n"


def load_pricing(path: str | Path | None = None, err: TextIO | None = None) -> Pricing:
    """`pricing:` of pipeline.yaml at `path` (default: as `serve` finds it). A missing file is a warning on
    `err` (stderr): the report goes on without prices. A file that is there but broken is an error
    (ConfigError, exit 2): its prices would silently be lost otherwise."""
    from switchboard.config import ConfigError, default_config_path, load_config

    source = path or default_config_path()
    try:
        config = load_config(source)
    except ConfigError as exc:
        if Path(source).is_file():
            raise
        print(f"switchboard report: warning: {source} does not load, so costs are not estimated:\n{exc}",
              file=err or sys.stderr)
        return {}
    return pricing_from_config(config)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The report's options, for the CLI's `report` subcommand."""
    parser.add_argument("--since", help="only turns from this long ago (24h, 7d, 30m) or this ISO date on")
    parser.add_argument("--pipeline", help="only calls on this pipeline")
    parser.add_argument("--variant", help="only calls assigned this A/B variant")
    parser.add_argument("--db", help="database URL or SQLite path (default: switchboard.db)")
    parser.add_argument("--config",
                        help="pipeline.yaml whose `pricing:` prices the calls (default: as for serve)")
    parser.add_argument("--config-version", action="store_true",
                        help="split the figures by the configuration that answered the calls (the hash of "
                             "the pipeline's settings each call recorded; it changes with a reload)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--html", metavar="PATH",
                        help="also write the report with charts to this HTML file (opens offline)")


def run(args: argparse.Namespace, pricing: Pricing | None = None, out: TextIO | None = None) -> int:
    """Run the report for parsed `args` (see add_arguments); `pricing` instead of the config's.
    Returns the exit status. Warnings and progress go to stderr, the table or JSON to `out` (stdout)."""
    out = out or sys.stdout
    try:
        since = parse_since(args.since) if args.since else None
    except ValueError as exc:
        print(f"switchboard report: {exc}", file=sys.stderr)
        return 2
    if pricing is None:
        pricing = load_pricing(getattr(args, "config", None))
    try:
        turns, shadows = asyncio.run(load(args.db, since, args.pipeline, args.variant,
                                          progress=Progress(sys.stderr),
                                          evals=getattr(args, "include_evals", False)))
    except Exception as exc:  # a missing file, an unreachable server, a newer schema
        print(f"switchboard report: cannot read the call store: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    filters = {"since": since.isoformat() if since else None, "pipeline": args.pipeline,
               "variant": args.variant}
    if getattr(args, "config_version", False):
        out.write(by_config_version(turns, shadows, pricing, filters, as_json=args.json))
        return 0
    report = build_report(turns, shadows, pricing, filters=filters)
    if args.json:
        out.write(json.dumps(report_json(report), indent=2) + "\n")
    else:
        out.write(format_table(report))
    html_path = getattr(args, "html", None)
    if html_path:
        from switchboard.report.html import report_page

        try:
            Path(html_path).write_text(report_page(report, turns, shadows), encoding="utf-8")
        except OSError as exc:
            print(f"switchboard report: cannot write {html_path}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        print(f"switchboard report: wrote {html_path}", file=sys.stderr)
    return 0


def main_report(argv: Sequence[str] | None = None, pricing: Pricing | None = None,
                out: TextIO | None = None) -> int:
    """`switchboard report [--since …] [--pipeline …] [--variant …] [--db …] [--config …] [--json]
    [--html PATH]`."""
    parser = argparse.ArgumentParser(prog="switchboard report", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv), pricing, out)
