"""The report's rows, built from the store's turns: one per LLM vendor/model, live and shadow, with its
latency percentiles, error and tool figures, its cost per call (`pricing:`) and its TTFT's significance
against the fastest row (the figures are defined in the package's docstring)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from switchboard.core.metrics import hedge_counts
from switchboard.report.stats import mann_whitney_p, percentile

# "vendor/model" or "model" -> prices in USD: input_per_1m / output_per_1m (LLM tokens), per_minute (STT
# audio), per_1m_chars (TTS characters); any subset. pipeline.yaml's `pricing:` (pricing_from_config).
Pricing = dict[str, dict[str, float]]
FREE_VENDORS = frozenset({"pocketsphinx", "scripted", "espeak"})  # embedded engines: 0 unless priced
ALPHA = 0.05
TEST_NAME = "two-sided Mann-Whitney U on LLM TTFT against the fastest row"


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
