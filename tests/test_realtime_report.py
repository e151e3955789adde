"""A realtime turn in the store and the report: audio tokens kept apart and priced apart, side by side
with a cascade's row."""

from __future__ import annotations

import sqlite3

import pytest

from switchboard.core.metrics import TurnMetrics
from switchboard.report import build_report
from switchboard.store import CallStore


def realtime_turn(call_id: str, index: int) -> TurnMetrics:
    return TurnMetrics(
        call_id=call_id, index=index, kind="reply", speech_start=10.0, speech_end=11.0, endpoint=11.5,
        tts_first_byte=11.8, first_audio_sent=11.85, turn_done=13.0, transcript="what time is it",
        reply_text="It is noon.", reply_heard="It is noon.", vendors={"llm": "openai/gpt-realtime"},
        tokens_in=1000, tokens_out=20, audio_tokens_in=500, audio_tokens_out=100, bot_audio_ms=660)


def cascade_turn(call_id: str, index: int) -> TurnMetrics:
    return TurnMetrics(
        call_id=call_id, index=index, kind="reply", speech_start=10.0, speech_end=11.0, endpoint=11.3,
        stt_done=11.5, llm_first_token=11.9, first_chunk=12.0, tts_first_byte=12.1, first_audio_sent=12.2,
        turn_done=13.0, vendors={"stt": "pocketsphinx/en-us", "llm": "anthropic/claude", "tts": "espeak/x"},
        tokens_in=1000, tokens_out=20)


async def test_audio_tokens_are_stored_and_priced_beside_a_cascade(tmp_path) -> None:
    store = CallStore(str(tmp_path / "calls.db"))
    await store.open()
    for n in range(2):
        await store.add_turn(realtime_turn(f"CArt{n}", 1))
        await store.add_turn(cascade_turn(f"CAc{n}", 1))
    turns = await store.query_turns()
    await store.close()
    stored = [turn for turn in turns if turn["llm_vendor"] == "openai/gpt-realtime"]
    assert [(t["audio_tokens_in"], t["audio_tokens_out"], t["tokens_in"]) for t in stored] == [
        (500, 100, 1000)] * 2

    pricing = {"openai/gpt-realtime": {"input_per_1m": 4, "output_per_1m": 16, "audio_input_per_1m": 32,
                                       "audio_output_per_1m": 64},
               "anthropic/claude": {"input_per_1m": 3, "output_per_1m": 15}}
    rows = {row.vendor: row for row in build_report(turns, pricing=pricing).rows}
    realtime, cascade = rows["openai/gpt-realtime"], rows["anthropic/claude"]
    # per call: 1000 text in at $4, 20 text out at $16, 500 audio in at $32, 100 audio out at $64 (per 1M)
    assert realtime.cost_per_call == pytest.approx((1000 * 4 + 20 * 16 + 500 * 32 + 100 * 64) / 1e6)
    assert cascade.cost_per_call == pytest.approx((1000 * 3 + 20 * 15) / 1e6)
    assert realtime.v2v_p50_ms == pytest.approx(850) and cascade.v2v_p50_ms == pytest.approx(1200)


async def test_a_version_3_database_gets_the_audio_token_columns(tmp_path) -> None:
    path = tmp_path / "v2.db"
    store = CallStore(str(path))
    await store.open()
    await store.add_turn(cascade_turn("CA1", 1))
    await store.close()
    with sqlite3.connect(path) as db:  # what the schema before speech-to-speech wrote
        for column in ("audio_tokens_in", "audio_tokens_out", "tool_calls", "tool_errors", "tool_invalid",
                       "tool_ms", "tools_used", "sounds_finished"):  # and versions 5-6
            db.execute(f"ALTER TABLE turns DROP COLUMN {column}")
        for column in ("tool_calls", "tool_invalid"):
            db.execute(f"ALTER TABLE shadow_results DROP COLUMN {column}")
        for column in ("tool_args", "hedges"):  # versions 7-8
            db.execute(f"ALTER TABLE turns DROP COLUMN {column}")
        for column in ("eval_run", "eval_scenario", "config_version", "config_file"):  # versions 7 and 9
            db.execute(f"ALTER TABLE calls DROP COLUMN {column}")
        db.execute("DROP TABLE eval_results")
        db.execute("DELETE FROM schema_version")
        db.execute("INSERT INTO schema_version VALUES (3, '2026-11-20 00:00:00')")
    upgraded = CallStore(str(path))
    await upgraded.open()
    await upgraded.add_turn(realtime_turn("CA2", 1))
    rows = await upgraded.query_turns()
    await upgraded.close()
    assert [(row["audio_tokens_in"], row["audio_tokens_out"]) for row in rows] == [(None, None), (500, 100)]
