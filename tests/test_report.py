"""`switchboard report` on a constructed dataset whose answers are known by hand.

Three LLMs, 10 answered turns each over 5 calls (2 turns a call); every turn: 2 s of speech, endpoint
200 ms after speech end, STT 300 ms, TTFT as listed, first chunk 50 ms after the first token, TTS first
byte 80 ms after that, first audio 20 ms later: voice-to-voice = 650 + TTFT; 1000 tokens in, 50 out,
200 characters spoken (pocketsphinx, espeak). Call 0 of model-a also has a greeting of 3 characters.
  fast/model-a  TTFT 100, 200, … 1000: p50 550, p90 910; v2v p50 1200, p90 1560, p99 1641
                turn 9 failed (error), turns 0 and 1 recovered from an LLM timeout, 3 interrupted
  slow/model-b  TTFT 2100 … 3000: clearly slower than a (Mann-Whitney U p ≈ 1.8e-4 < 0.05)
  same/model-c  TTFT exactly a's: p = 1, not marked
"""

import asyncio
import io
import json
from datetime import UTC, datetime

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from switchboard import report as report_module
from switchboard.config import ConfigError, parse_config
from switchboard.core.metrics import TurnMetrics
from switchboard.report import (
    Progress,
    build_report,
    format_table,
    load,
    load_pricing,
    main_report,
    mann_whitney_p_normal,
    parse_since,
    report_json,
)
from switchboard.store import CallStore, turn_row

TTFT = {
    "fast/model-a": [100 * k for k in range(1, 11)],
    "slow/model-b": [2000 + 100 * k for k in range(1, 11)],
    "same/model-c": [100 * k for k in range(1, 11)],
}
PRICING = {"model-a": {"input_per_1m": 1.0, "output_per_1m": 2.0},
           "slow/model-b": {"input_per_1m": 10.0, "output_per_1m": 30.0}}


def turn(vendor: str, call: int, index: int, ttft_ms: float, **facts) -> TurnMetrics:
    speech_end = 10.0
    stt_done = speech_end + 0.2 + 0.3
    first_token = stt_done + ttft_ms / 1000
    first_chunk = first_token + 0.05
    return TurnMetrics(
        call_id=f"{vendor}-call{call}", index=index, speech_start=8.0, speech_end=speech_end,
        endpoint=speech_end + 0.2, stt_done=stt_done, llm_first_token=first_token, first_chunk=first_chunk,
        tts_first_byte=first_chunk + 0.08, first_audio_sent=first_chunk + 0.1, turn_done=first_chunk + 2,
        vendors={"stt": "pocketsphinx/en-us", "llm": vendor, "tts": "espeak/en-us"},
        tokens_in=1000, tokens_out=50, tts_chars=200, **facts,
    )


def fixture_turns() -> list[TurnMetrics]:
    turns = []
    for vendor, ttfts in TTFT.items():
        for k, ttft in enumerate(ttfts):
            facts = {}
            if vendor == "fast/model-a":
                if k == 9:
                    facts["error"] = "ProviderError: espeak: synthesis failed"
                if k in (0, 1):
                    facts["failures"] = [f"llm {vendor} attempt 1: timeout: no first token within 2 s"]
                facts["interrupted"] = k in (2, 3, 4)
            turns.append(turn(vendor, call=k // 2, index=k % 2 + 1, ttft_ms=ttft, **facts))
    turns.append(TurnMetrics(call_id="fast/model-a-call0", index=0, kind="greeting", reply_text="Hi!",
                             vendors={"tts": "espeak/en-us"}, tts_chars=3))
    return turns


def rows_of(turns: list[TurnMetrics]) -> list[dict]:
    return [turn_row(t) for t in turns]


def test_known_answers():
    report = build_report(rows_of(fixture_turns()), pricing=PRICING)
    rows = {row.vendor: row for row in report.rows}
    assert list(rows) == ["fast/model-a", "same/model-c", "slow/model-b"]
    assert report.excluded_turns == 1  # the greeting
    a = rows["fast/model-a"]
    assert (a.calls, a.turns, a.ttft_n, a.v2v_n) == (5, 10, 10, 10)
    assert a.ttft_p50_ms == pytest.approx(550) and a.ttft_p90_ms == pytest.approx(910)
    assert (a.v2v_p50_ms, a.v2v_p90_ms, a.v2v_p99_ms) == pytest.approx((1200, 1560, 1641))
    assert a.stt_p50_ms == pytest.approx(300) and a.tts_first_byte_p50_ms == pytest.approx(80)
    assert (a.errors_pct, a.timeouts_pct, a.interruptions_pct) == (10.0, 20.0, 30.0)
    assert (a.tokens_in_mean, a.tokens_out_mean) == (1000, 50)
    # 2 turns a call, each 1000 in × $1/M + 50 out × $2/M = $0.0011
    assert a.cost_per_call == pytest.approx(0.0022)
    b = rows["slow/model-b"]
    assert b.ttft_p50_ms == pytest.approx(2550) and b.ttft_p90_ms == pytest.approx(2910)
    assert b.errors_pct == b.timeouts_pct == b.interruptions_pct == 0.0
    assert b.cost_per_call == pytest.approx(2 * (1000 * 10 + 50 * 30) / 1e6)
    assert rows["same/model-c"].cost_per_call is None  # no pricing for it

    assert a.reference and not a.significant and a.ttft_p_value is None
    assert b.significant and b.ttft_p_value == pytest.approx(
        mannwhitneyu(TTFT["slow/model-b"], TTFT["fast/model-a"]).pvalue) and b.ttft_p_value < 0.001
    c = rows["same/model-c"]
    assert not c.significant and c.ttft_p_value == pytest.approx(1.0)


def test_table_marks_the_significant_row_and_states_the_test():
    table = format_table(build_report(rows_of(fixture_turns()), pricing=PRICING))
    lines = {line.split()[1]: line for line in table.splitlines()[1:4]}
    assert "550/910 ref" in lines["fast/model-a"]
    assert "2550/2910 *" in lines["slow/model-b"]
    assert "550/910" in lines["same/model-c"] and "*" not in lines["same/model-c"]
    assert "1200/1560/1641" in lines["fast/model-a"] and "0.0022" in lines["fast/model-a"]
    assert "Mann-Whitney U" in table and "p < 0.05" in table
    assert "slow/model-b (live) n=10" in table and "fast/model-a (live) n=10" in table
    assert "1 turns without an LLM stage" in table


def test_json_fields():
    data = report_json(build_report(rows_of(fixture_turns()), pricing=PRICING))
    json.dumps(data)  # serialisable as is
    assert data["alpha"] == 0.05 and "Mann-Whitney U" in data["test"]
    assert data["reference"] == {"source": "live", "vendor": "fast/model-a"}
    row = next(r for r in data["rows"] if r["vendor"] == "slow/model-b")
    assert set(row) == {
        "source", "vendor", "calls", "turns", "v2v_p50_ms", "v2v_p90_ms", "v2v_p99_ms", "v2v_n",
        "ttft_p50_ms", "ttft_p90_ms", "ttft_n", "stt_p50_ms", "tts_first_byte_p50_ms", "errors_pct",
        "timeouts_pct", "interruptions_pct", "tokens_in_mean", "tokens_out_mean", "dropped_per_turn",
        "backchannels_per_turn", "undone_pct", "tool_calls_per_turn", "tool_invalid_pct", "tool_error_pct",
        "cost_per_call",
        "cost_llm_per_call", "cost_stt_per_call", "cost_tts_per_call", "cost_partial", "cost_unpriced",
        "ttft_p_value", "significant", "reference",
    }
    assert (row["source"], row["calls"], row["turns"], row["ttft_n"], row["significant"]) == (
        "live", 5, 10, 10, True)


def test_a_turn_whose_llm_failed_counts_against_that_llm():
    failed = TurnMetrics(call_id="x", index=1, error="ProviderError: openai: 503",
                         failures=["stt pocketsphinx/en-us attempt 1: internal: boom",
                                   "llm openai/gpt-4o attempt 1: server: 503",
                                   "llm openai/gpt-4o attempt 2: server: 503"])
    answered = turn("openai/gpt-4o", call=0, index=2, ttft_ms=400)
    [row] = build_report(rows_of([failed, answered])).rows
    assert (row.vendor, row.turns, row.calls, row.errors_pct, row.ttft_n) == ("openai/gpt-4o", 2, 2, 50.0, 1)


def test_shadow_rows_and_empty_reports():
    shadows = [{"call_id": "c1", "vendor": "groq/llama", "ttft_ms": ms, "error": None, "tokens_in": 10,
                "tokens_out": 5} for ms in (90, 110)]
    shadows.append({"call_id": "c2", "vendor": "groq/llama", "ttft_ms": None,
                    "error": "timeout after 5 s", "tokens_in": None, "tokens_out": None})
    report = build_report(rows_of(fixture_turns()), shadows)
    shadow = next(row for row in report.rows if row.source == "shadow")
    assert (shadow.calls, shadow.turns, shadow.ttft_p50_ms, shadow.errors_pct) == (2, 3, 100, 33.3)
    assert shadow.timeouts_pct == 33.3 and shadow.reference  # the fastest row of all
    assert shadow.interruptions_pct is None and shadow.v2v_p50_ms is None
    assert format_table(build_report([])) == "no turns match\n"
    lone = build_report(rows_of([turn("a/b", 0, 1, 100)]))
    assert "not tested" in format_table(lone) and not lone.rows[0].reference


def test_normal_approximation_matches_scipy():
    rng = np.random.default_rng(4)
    x = rng.integers(100, 400, 40).tolist()  # integers: plenty of ties
    y = rng.integers(150, 450, 35).tolist()
    expected = mannwhitneyu(x, y, alternative="two-sided", method="asymptotic").pvalue
    assert mann_whitney_p_normal(x, y) == pytest.approx(expected, rel=1e-9)
    assert mann_whitney_p_normal([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)


def test_parse_since():
    now = datetime(2025, 3, 8, 12, 0, tzinfo=UTC)
    assert parse_since("24h", now) == datetime(2025, 3, 7, 12, 0, tzinfo=UTC)
    assert parse_since("7d", now) == datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    assert parse_since("30m", now) == datetime(2025, 3, 8, 11, 30, tzinfo=UTC)
    assert parse_since("2025-03-01", now) == datetime(2025, 3, 1, tzinfo=UTC)
    assert parse_since("2025-03-01T10:00:00+02:00", now) == datetime(2025, 3, 1, 8, tzinfo=UTC)
    with pytest.raises(ValueError, match="24h"):
        parse_since("yesterday", now)


async def write_fixture(path) -> None:
    store = CallStore(str(path))
    await store.open()
    for vendor in TTFT:
        for call in range(5):
            await store.start_call(f"{vendor}-call{call}", "support" if vendor != "same/model-c" else "sales",
                                   started_at=datetime(2025, 3, 1, tzinfo=UTC), variant=vendor.split("/")[1])
    for metrics in fixture_turns():
        await store.add_turn(metrics, created_at=datetime(2025, 3, 1, 0, 1, tzinfo=UTC))
    await store.add_turn(turn("fast/model-a", 0, 3, 5000), created_at=datetime(2025, 2, 1, tzinfo=UTC))
    await store.close()


def report_from(argv: list[str]) -> dict:
    out = io.StringIO()
    assert main_report([*argv, "--json"], pricing=PRICING, out=out) == 0
    return json.loads(out.getvalue())


async def test_the_command_reads_the_store(tmp_path):
    path = tmp_path / "switchboard.db"
    await write_fixture(path)
    loop_free = asyncio.to_thread  # main_report runs its own event loop
    data = await loop_free(report_from, ["--db", str(path), "--since", "2025-02-15"])
    rows = {row["vendor"]: row for row in data["rows"]}
    assert rows["fast/model-a"]["ttft_p50_ms"] == pytest.approx(550)  # the February turn is too old
    assert rows["slow/model-b"]["significant"] and not rows["same/model-c"]["significant"]
    assert data["filters"]["since"] == "2025-02-15T00:00:00+00:00"

    everything = await loop_free(report_from, ["--db", f"sqlite:///{path}"])
    assert next(r for r in everything["rows"] if r["vendor"] == "fast/model-a")["turns"] == 11
    support = await loop_free(report_from, ["--db", str(path), "--since", "2025-02-15",
                                            "--pipeline", "support"])
    assert [r["vendor"] for r in support["rows"]] == ["fast/model-a", "slow/model-b"]
    variant = await loop_free(report_from, ["--db", str(path), "--variant", "model-b"])
    assert [r["vendor"] for r in variant["rows"]] == ["slow/model-b"]

    table = io.StringIO()
    assert await loop_free(main_report, ["--db", str(path)], None, table) == 0
    assert "slow/model-b" in table.getvalue() and " *" in table.getvalue()


def test_the_command_reports_a_missing_database(tmp_path, capsys):
    assert main_report(["--db", str(tmp_path / "nope.db")]) == 1
    assert "no call store" in capsys.readouterr().err
    assert not (tmp_path / "nope.db").exists()
    assert main_report(["--since", "soon", "--db", str(tmp_path / "nope.db")]) == 2


# --- cost per call ------------------------------------------------------------------------------------------

ALL_PRICES = {
    "model-a": {"input_per_1m": 1.0, "output_per_1m": 2.0},  # a bare model name
    "pocketsphinx/en-us": {"per_minute": 0.006},  # priced: the embedded engines are free only by default
    "espeak/en-us": {"per_1m_chars": 15.0},
    "groq/llama": {"input_per_1m": 0.5, "output_per_1m": 1.0},
}


def test_cost_per_call_counts_llm_stt_and_tts():
    shadows = [{"call_id": f"c{k}", "vendor": "groq/llama", "ttft_ms": 100, "error": None, "tokens_in": 10,
                "tokens_out": 5, "speech_ms": 9999, "tts_chars": 9999} for k in (1, 2)]
    report = build_report(rows_of(fixture_turns()), shadows, pricing=ALL_PRICES)
    rows = {(row.source, row.vendor): row for row in report.rows}
    a = rows["live", "fast/model-a"]
    # a turn: LLM 1000 × $1/M + 50 × $2/M = $0.0011; STT 2 s = 1/30 min × $0.006 = $0.0002;
    # TTS 200 chars × $15/M = $0.003. 2 turns a call, + call 0's 3-character greeting over 5 calls.
    assert a.cost_llm_per_call == pytest.approx(0.0022)
    assert a.cost_stt_per_call == pytest.approx(0.0004)
    assert a.cost_tts_per_call == pytest.approx(0.006 + 3 * 15 / 1e6 / 5)
    assert a.cost_per_call == pytest.approx(0.0022 + 0.0004 + 0.006009)
    assert not a.cost_partial and a.cost_unpriced == []
    b = rows["live", "slow/model-b"]  # its LLM has no price: the STT and TTS part, marked partial
    assert b.cost_per_call == pytest.approx(0.0004 + 0.006) and b.cost_llm_per_call == 0
    assert b.cost_partial and b.cost_unpriced == ["llm slow/model-b"]
    shadow = rows["shadow", "groq/llama"]  # LLM tokens only, never transcribed or spoken
    assert shadow.cost_per_call == pytest.approx((10 * 0.5 + 5 * 1.0) / 1e6)
    assert shadow.cost_stt_per_call is None and shadow.cost_tts_per_call is None

    table = format_table(report)
    line_b = next(line for line in table.splitlines() if line.startswith("live    slow/model-b"))
    assert line_b.endswith("0.0064+")
    assert ("+ partial (a lower bound), no price for: same/model-c (live): llm same/model-c; "
            "slow/model-b (live): llm slow/model-b") in table
    assert "STT minutes of speech + TTS characters" in table


def test_cost_is_unknown_without_a_price_for_the_row():
    report = build_report(rows_of(fixture_turns()), pricing={"openai/whisper-1": {"per_minute": 0.006}})
    for row in report.rows:  # only free embedded engines and unpriced LLMs: nothing to estimate
        assert row.cost_per_call is None and not row.cost_partial
        assert row.cost_unpriced == [f"llm {row.vendor}"]
    assert "-" == format_table(report).splitlines()[1].split()[-1]
    bare = build_report(rows_of(fixture_turns()))
    assert all(row.cost_per_call is None and row.cost_unpriced == [] for row in bare.rows)


def test_pricing_from_pipeline_yaml(tmp_path, capsys):
    config = tmp_path / "pipeline.yaml"
    config.write_text(PIPELINE + "pricing:\n  openai/gpt-4o-mini: {input_per_1m: 0.15, output_per_1m: 0.6}\n"
                      "  whisper-1: {per_minute: 0.006}\n")
    assert load_pricing(config) == {"openai/gpt-4o-mini": {"input_per_1m": 0.15, "output_per_1m": 0.6},
                                    "whisper-1": {"per_minute": 0.006}}
    with pytest.raises(ConfigError) as caught:
        parse_config(PIPELINE + "pricing:\n  openai/tts-1: {per_1m_char: 15, per_minute: -1}\n")
    assert caught.value.problems == [
        "pricing['openai/tts-1'].per_1m_char: unknown key; allowed keys: audio_input_per_1m, "
        "audio_output_per_1m, input_per_1m, output_per_1m, "
        "per_1m_chars, per_minute; did you mean 'per_1m_chars'?",
        "pricing['openai/tts-1'].per_minute: must be at least 0, got -1",
    ]
    broken = tmp_path / "broken.yaml"
    broken.write_text(PIPELINE + "pricing:\n  gpt-4o: {input: 1}\n")
    with pytest.raises(ConfigError) as caught:  # there but broken: an error, its prices would be lost
        load_pricing(broken)
    assert "pricing.gpt-4o.input: unknown key" in str(caught.value)
    assert load_pricing(tmp_path / "missing.yaml") == {}  # no file at all: a warning, no prices
    err = capsys.readouterr().err
    assert "warning" in err and "costs are not estimated" in err


PIPELINE = ("pipelines:\n  default:\n    stt: {provider: pocketsphinx}\n    llm: {provider: scripted}\n"
            "    tts: {provider: espeak}\n")


# --- reading in pages, with progress ------------------------------------------------------------------------


def test_progress_goes_to_stderr_and_json_stays_clean(tmp_path, monkeypatch, capsys):
    path = tmp_path / "switchboard.db"
    asyncio.run(write_fixture(path))  # 32 turns
    monkeypatch.setattr(report_module.reading, "PAGE_SIZE", 5)
    monkeypatch.setattr(report_module.reading, "PROGRESS_MIN_ROWS", 10)
    monkeypatch.setattr(report_module.reading, "PROGRESS_INTERVAL_S", 0)
    assert main_report(["--db", str(path), "--json"], pricing=PRICING) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)  # nothing but the JSON
    assert next(r for r in data["rows"] if r["vendor"] == "fast/model-a")["turns"] == 11  # every page read
    assert sum(r["turns"] for r in data["rows"]) + data["excluded_turns"] == 32
    assert err.splitlines() == [f"reading turns: {n} / 32" for n in (5, 10, 15, 20, 25, 30, 32)]

    monkeypatch.setattr(report_module.reading, "PROGRESS_MIN_ROWS", 100)  # a small read: no progress, no tty
    assert main_report(["--db", str(path), "--json"], pricing=PRICING) == 0
    assert capsys.readouterr().err == ""


def test_progress_on_a_terminal_rewrites_one_line():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    progress = Progress(stream, interval_s=0)
    progress("turns", 10, 10)  # one page or less: nothing
    for done in (5000, 10000, 12000):
        progress("turns", done, 12000)
    assert stream.getvalue() == ("\rreading turns: 5,000 / 12,000\rreading turns: 10,000 / 12,000"
                                 "\rreading turns: 12,000 / 12,000\n")


async def test_paged_reads_match_one_query(tmp_path):
    path = tmp_path / "switchboard.db"
    await write_fixture(path)
    seen: list[tuple[str, int, int]] = []
    turns, shadows = await load(str(path), None, "support", None, page_size=3,
                                progress=lambda what, done, total: seen.append((what, done, total)))
    store = CallStore(str(path))
    await store.open()
    try:
        expected = await store.query_turns(None, "support", None)
        assert await store.count_turns(None, "support", None) == len(expected) == 22  # a, b, greeting, Feb.
    finally:
        await store.close()
    assert turns == expected and shadows == []  # same rows, oldest first
    assert seen[0] == ("turns", 3, 22) and seen[-2:] == [("turns", 22, 22), ("shadow results", 0, 0)]


def test_speculative_starts_dropped_per_turn_and_the_stt_requests_own_latency():
    turns = rows_of(fixture_turns())
    fast = [t for t in turns if t["llm_vendor"] == "fast/model-a"]
    for n, turn in enumerate(fast):
        turn["speculation_dropped"] = 1 if n % 4 == 0 else 0  # 3 of 10 turns had a dropped start
        turn["stt_ms"] = 300.0  # a speculative STT finished before the endpoint: its own latency counts
        turn["stt_done_ms"] = -100.0
    rows = {r.vendor: r for r in build_report(turns).rows}
    assert rows["fast/model-a"].dropped_per_turn == 0.3
    assert rows["fast/model-a"].stt_p50_ms == 300.0
    assert rows["slow/model-b"].dropped_per_turn == 0.0
    assert "spec drop, bc/turn" in format_table(build_report(turns))


def test_backchannels_per_turn_and_undone_replies():
    turns = rows_of(fixture_turns())
    fast = [t for t in turns if t["llm_vendor"] == "fast/model-a"]
    for n, turn in enumerate(fast):
        turn["backchannels"] = 2 if n < 3 else 0  # 6 backchannels over 10 turns
        turn["undone"] = n == 0
    rows = {r.vendor: r for r in build_report(turns).rows}
    assert rows["fast/model-a"].backchannels_per_turn == 0.6
    assert rows["fast/model-a"].undone_pct == 10.0
    assert rows["slow/model-b"].backchannels_per_turn == 0.0 and rows["slow/model-b"].undone_pct == 0.0
    table = format_table(build_report(turns))  # shown beside the speculation drops and interruptions
    fast_line = next(line for line in table.splitlines() if "fast/model-a" in line)
    assert "interrupt/undone %" in table and "/10.0" in fast_line and ", 0.60" in fast_line


def test_tool_columns_show_how_each_llm_uses_tools():
    turns = fixture_turns()
    for metrics in turns:
        if metrics.vendors.get("llm") == "fast/model-a" and metrics.index == 1:  # 5 of its 10 turns
            metrics.note_tool("book_table", "ok", 120.0)
            metrics.note_tool("book_table", "invalid", 0.5)
        elif metrics.vendors.get("llm") == "slow/model-b" and metrics.index == 1:
            metrics.note_tool("book_table", "timeout", 5000.0)
    rows = {r.vendor: r for r in build_report(rows_of(turns)).rows}
    fast, slow, same = rows["fast/model-a"], rows["slow/model-b"], rows["same/model-c"]
    assert (fast.tool_calls_per_turn, fast.tool_invalid_pct, fast.tool_error_pct) == (1.0, 50.0, 0.0)
    assert (slow.tool_calls_per_turn, slow.tool_invalid_pct, slow.tool_error_pct) == (0.5, 0.0, 100.0)
    assert (same.tool_calls_per_turn, same.tool_invalid_pct, same.tool_error_pct) == (0.0, None, None)
    table = format_table(build_report(rows_of(turns)))
    header, fast_line = table.splitlines()[0], next(line for line in table.splitlines() if "model-a" in line)
    assert "tools/turn (invalid/err %)" in header
    assert "1.00 (50.0/0.0)" in fast_line
