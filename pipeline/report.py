"""`switchboard report`: vendors side by side, from the turns in the call store.

One row per LLM vendor/model: live rows from `turns`, shadow rows from `shadow_results` (when there are
any). A live turn belongs to the LLM that answered it or, when none did, to the first LLM its failures
name (the one that failed); turns with no LLM at all (greetings) are left out and counted.

Figures, all in milliseconds (see pipeline/metrics.py; every reading is relative to the end of speech):
  voice-to-voice   first audio frame sent − speech end (p50/p90/p99)
  LLM TTFT         LLM first token − STT done: from the request to the first token (p50/p90)
  STT              STT done − endpoint (p50)
  TTS first byte   TTS first byte − first speakable chunk (p50)
  errors %         turns that failed (the caller heard the apology)
  timeouts %       turns with a provider timeout in any stage (recovered or not)
  interruptions %  turns the caller barged into
  tokens           mean input / output tokens per turn
  $/call           LLM tokens × `pricing` (USD per 1M input / output tokens), per call
Significance: each row's TTFT against the fastest row's (lowest TTFT p50) with a two-sided
Mann-Whitney U test; p < `alpha` (0.05) is marked `*`. Rows with fewer than 2 samples are not tested.
Percentiles interpolate linearly between samples (numpy's default).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import numpy as np

Pricing = dict[str, dict[str, float]]  # "vendor/model" or "model" -> {"input": $/1M, "output": $/1M}

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
    cost_per_call: float | None = None  # USD, with pricing for this model
    ttft_p_value: float | None = None  # against the reference row; None for it and untested rows
    significant: bool = False
    reference: bool = False  # the fastest row, the others are tested against
    ttft_samples: list[float] = field(default_factory=list, repr=False)


@dataclass
class Report:
    rows: list[Row]
    excluded_turns: int = 0  # turns without an LLM stage
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


def _llm_of(turn: dict[str, Any]) -> str | None:
    """The LLM a live turn belongs to: the one that answered, else the first one that failed."""
    if turn.get("llm_vendor"):
        return turn["llm_vendor"]
    for failure in turn.get("failures") or []:
        stage, _, rest = failure.partition(" ")
        if stage == "llm" and rest:
            return rest.split(" ", 1)[0]
    return None


def _price(pricing: Pricing | None, vendor: str) -> dict[str, float] | None:
    if not pricing:
        return None
    return pricing.get(vendor) or pricing.get(vendor.split("/", 1)[-1])


def _cost_per_call(turns: list[dict[str, Any]], price: dict[str, float] | None, calls: int) -> float | None:
    if price is None or not calls:
        return None
    total = sum((t.get("tokens_in") or 0) * price.get("input", 0.0)
                + (t.get("tokens_out") or 0) * price.get("output", 0.0) for t in turns) / 1e6
    return round(total / calls, 6)


def _tokens(turns: list[dict[str, Any]], key: str) -> float | None:
    return _mean([t[key] for t in turns if t.get(key) is not None])


def _is_timeout(texts: Iterable[str | None]) -> bool:
    return any(text and "timeout" in text.lower() for text in texts)


def _live_row(vendor: str, turns: list[dict[str, Any]], pricing: Pricing | None) -> Row:
    v2v = [t["voice_to_voice_ms"] for t in turns if t.get("voice_to_voice_ms") is not None]
    ttft = [d for t in turns if (d := _diff(t.get("llm_first_token_ms"), t.get("stt_done_ms"))) is not None]
    stt = [d for t in turns if (d := _diff(t.get("stt_done_ms"), t.get("endpoint_ms"))) is not None]
    tts = [d for t in turns if (d := _diff(t.get("tts_first_byte_ms"), t.get("first_chunk_ms"))) is not None]
    calls = len({t["call_id"] for t in turns})
    return Row(
        source="live", vendor=vendor, calls=calls, turns=len(turns),
        v2v_p50_ms=percentile(v2v, 50), v2v_p90_ms=percentile(v2v, 90), v2v_p99_ms=percentile(v2v, 99),
        v2v_n=len(v2v),
        ttft_p50_ms=percentile(ttft, 50), ttft_p90_ms=percentile(ttft, 90), ttft_n=len(ttft),
        stt_p50_ms=percentile(stt, 50), tts_first_byte_p50_ms=percentile(tts, 50),
        errors_pct=_pct(sum(t.get("error") is not None for t in turns), len(turns)),
        timeouts_pct=_pct(sum(_is_timeout(t.get("failures") or []) for t in turns), len(turns)),
        interruptions_pct=_pct(sum(bool(t.get("interrupted")) for t in turns), len(turns)),
        tokens_in_mean=_tokens(turns, "tokens_in"), tokens_out_mean=_tokens(turns, "tokens_out"),
        cost_per_call=_cost_per_call(turns, _price(pricing, vendor), calls),
        ttft_samples=ttft,
    )


def _shadow_row(vendor: str, results: list[dict[str, Any]], pricing: Pricing | None) -> Row:
    ttft = [r["ttft_ms"] for r in results if r.get("ttft_ms") is not None]
    calls = len({r["call_id"] for r in results})
    return Row(
        source="shadow", vendor=vendor, calls=calls, turns=len(results),
        ttft_p50_ms=percentile(ttft, 50), ttft_p90_ms=percentile(ttft, 90), ttft_n=len(ttft),
        errors_pct=_pct(sum(r.get("error") is not None for r in results), len(results)),
        timeouts_pct=_pct(sum(_is_timeout([r.get("error")]) for r in results), len(results)),
        tokens_in_mean=_tokens(results, "tokens_in"), tokens_out_mean=_tokens(results, "tokens_out"),
        cost_per_call=_cost_per_call(results, _price(pricing, vendor), calls),
        ttft_samples=ttft,
    )


def build_report(
    turns: Iterable[dict[str, Any]],
    shadows: Iterable[dict[str, Any]] = (),
    pricing: Pricing | None = None,
    alpha: float = ALPHA,
    filters: dict[str, str | None] | None = None,
) -> Report:
    """Rows from `CallStore.query_turns()` / `query_shadows()` dicts (only the columns used are needed)."""
    live: dict[str, list[dict[str, Any]]] = {}
    excluded = 0
    for turn in turns:
        vendor = _llm_of(turn)
        if vendor is None:
            excluded += 1
        else:
            live.setdefault(vendor, []).append(turn)
    shadow: dict[str, list[dict[str, Any]]] = {}
    for result in shadows:
        shadow.setdefault(result["vendor"], []).append(result)
    rows = [_live_row(vendor, group, pricing) for vendor, group in sorted(live.items())]
    rows += [_shadow_row(vendor, group, pricing) for vendor, group in sorted(shadow.items())]
    _mark_significance(rows, alpha)
    return Report(rows=rows, excluded_turns=excluded, filters=filters or {}, alpha=alpha)


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
        "rows": [{k: v for k, v in asdict(row).items() if k != "ttft_samples"} for row in report.rows],
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(report: Report) -> str:
    """The report as a text table with its legend."""
    if not report.rows:
        return "no turns match" + (f" ({report.excluded_turns} without an LLM stage)"
                                   if report.excluded_turns else "") + "\n"
    header = ["source", "LLM vendor/model", "calls", "turns", "v2v p50/p90/p99", "TTFT p50/p90",
              "STT p50", "TTS 1st byte p50", "err %", "timeout %", "interrupt %", "tokens in/out", "$/call"]
    lines = [header]
    for row in report.rows:
        mark = " ref" if row.reference else " *" if row.significant else ""
        lines.append([
            row.source, row.vendor, str(row.calls), str(row.turns),
            f"{_ms(row.v2v_p50_ms)}/{_ms(row.v2v_p90_ms)}/{_ms(row.v2v_p99_ms)}",
            f"{_ms(row.ttft_p50_ms)}/{_ms(row.ttft_p90_ms)}{mark}",
            _ms(row.stt_p50_ms), _ms(row.tts_first_byte_p50_ms),
            _num(row.errors_pct), _num(row.timeouts_pct), _num(row.interruptions_pct),
            f"{_num(row.tokens_in_mean)}/{_num(row.tokens_out_mean)}",
            "-" if row.cost_per_call is None else f"{row.cost_per_call:.4f}",
        ])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(width) if i < 2 else cell.rjust(width)
                      for i, (cell, width) in enumerate(zip(line, widths, strict=True))).rstrip()
            for line in lines]
    text += ["", "times in ms; TTFT = LLM first token − STT done, STT = STT done − endpoint, "
             "TTS 1st byte = TTS first byte − first chunk, v2v = first audio sent − speech end"]
    reference = report.reference
    if reference is not None:
        samples = ", ".join(f"{row.vendor} ({row.source}) n={row.ttft_n}" + (
            "" if row.ttft_p_value is None else f" p={row.ttft_p_value:.3g}") for row in report.rows)
        text.append(f"* TTFT differs from ref ({reference.vendor}, {reference.source}): {TEST_NAME}, "
                    f"p < {report.alpha:g}; TTFT samples: {samples}")
    else:
        text.append("significance: not tested (fewer than two rows with 2+ TTFT samples)")
    if report.excluded_turns:
        text.append(f"{report.excluded_turns} turns without an LLM stage (greetings) are not counted")
    return "\n".join(text) + "\n"


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


async def load(
    db: str | None = None,
    since: datetime | None = None,
    pipeline: str | None = None,
    variant: str | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(turns, shadow results) from the store at `db` (a URL or an SQLite path; None: switchboard.db).

    Raises FileNotFoundError for an SQLite file that does not exist (rather than creating one)."""
    from sqlalchemy.engine import make_url

    from store import CallStore

    store = CallStore(db)
    url = make_url(store.url)
    sqlite_file = url.database if url.get_backend_name() == "sqlite" and url.database != ":memory:" else None
    if sqlite_file and not await asyncio.to_thread(Path(sqlite_file).exists):
        raise FileNotFoundError(f"no call store at {sqlite_file}")
    await store.open()
    try:
        turns = await store.query_turns(since, pipeline, variant)
        shadows = await store.query_shadows(since, pipeline, variant)
    finally:
        await store.close()
    return turns, shadows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The report's options, for the CLI's `report` subcommand."""
    parser.add_argument("--since", help="only turns from this long ago (24h, 7d, 30m) or this ISO date on")
    parser.add_argument("--pipeline", help="only calls on this pipeline")
    parser.add_argument("--variant", help="only calls assigned this A/B variant")
    parser.add_argument("--db", help="database URL or SQLite path (default: switchboard.db)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace, pricing: Pricing | None = None, out: TextIO | None = None) -> int:
    """Run the report for parsed `args` (see add_arguments). Returns the exit status."""
    out = out or sys.stdout
    try:
        since = parse_since(args.since) if args.since else None
    except ValueError as exc:
        print(f"switchboard report: {exc}", file=sys.stderr)
        return 2
    try:
        turns, shadows = asyncio.run(load(args.db, since, args.pipeline, args.variant))
    except Exception as exc:  # a missing file, an unreachable server, a newer schema
        print(f"switchboard report: cannot read the call store: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    filters = {"since": since.isoformat() if since else None, "pipeline": args.pipeline,
               "variant": args.variant}
    report = build_report(turns, shadows, pricing, filters=filters)
    if args.json:
        out.write(json.dumps(report_json(report), indent=2) + "\n")
    else:
        out.write(format_table(report))
    return 0


def main_report(argv: Sequence[str] | None = None, pricing: Pricing | None = None,
                out: TextIO | None = None) -> int:
    """`switchboard report [--since …] [--pipeline …] [--variant …] [--db …] [--json]`."""
    parser = argparse.ArgumentParser(prog="switchboard report", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv), pricing, out)
