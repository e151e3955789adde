"""Benchmark: a cascade and OpenAI Realtime side by side, on the same calls, measured the same way.

Both run in the real app (``server.create_app``) against fakes with fixed latencies:

  cascade   the OpenAI adapters on tests/fakes/openai_fake.py, as bench/turns.py: STT 300 ms to the
            transcript, LLM 300 ms to the first token then 15 ms a token, TTS 150 ms to the first byte;
            the pipeline's defaults (speculative turns, our VAD's endpointing)
  realtime  the OpenAI Realtime adapter on tests/fakes/openai_realtime_fake.py: its server VAD (500 ms
            of silence, OpenAI's default) then the model's first audio after REALTIME_FIRST_AUDIO_S
            (0.45 s = the cascade's LLM first token + TTS first byte: no STT step)
  gemini    the Gemini Live adapter on tests/fakes/gemini_live_fake.py (TLS): the same 500 ms and 0.45 s,
            its audio at 24 kHz resampled to 8 kHz, the caller's at 16 kHz

The caller (switchboard/caller/, real time, eSpeak NG voice) asks QUESTIONS, one per line, then, in
separate calls, a question and a line spoken over the bot's long reply 1 s into it. Per kind:

  voice-to-voice   the server's TurnMetrics (first audio frame sent − the caller's speech end by our
                   own VAD: one clock for both kinds), p50 / p90
  first audio      what the caller measured: first bot audio after the line's last word, p50
  barge-in stop    the caller's clear after its onset, p50 / max
  truncation       OpenAI only (Gemini has no truncation): |audio_end_ms sent in
                   conversation.item.truncate − what the caller played of that reply|, max (the
                   cascade truncates nothing: its history keeps the chunks whose marks came back)
  cost / turn      USD per answered turn at list prices (PRICES), from the turns' tokens, minutes and
                   characters as the report counts them; the fakes' token counts, so indicative only

    python -m bench.realtime            # ≈ 2 min
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator

import numpy as np

from switchboard.caller import CallerLine, CallResult, run_call
from switchboard.config import parse_config
from switchboard.core.metrics import TurnMetrics
from switchboard.report import build_report
from switchboard.server import create_app, running
from switchboard.store.calls import turn_row
from tests.fakes.common import Faults
from tests.fakes.gemini_live_fake import LiveScript, serving
from tests.fakes.openai_fake import OpenAIScript
from tests.fakes.openai_fake import make_app as openai_app
from tests.fakes.openai_realtime_fake import RealtimeScript
from tests.fakes.openai_realtime_fake import make_app as realtime_app

STT_S, LLM_FIRST_S, LLM_TOKEN_S, TTS_FIRST_S = 0.3, 0.3, 0.015, 0.15
REALTIME_FIRST_AUDIO_S = LLM_FIRST_S + TTS_FIRST_S
REPLY = "Sure, we are open until ten tonight. Anything else?"
LONG_REPLY = ("We are open from noon until ten at night, Tuesday to Sunday. On Fridays and Saturdays the "
              "kitchen stays open until eleven.")
AFTER_BARGE_IN = "Of course."
QUESTIONS = ["what time do you close", "do you have vegetarian options", "where are you located",
             "can i make a reservation for tonight", "is there parking near the restaurant",
             "are you open on mondays"]
BARGE_INS = ["when are you open", "sorry can you say that again"]
GREETING = "Luigi's, hello."
MS_PER_CHAR = 40.0
PRICES = {  # USD list prices, per the vendors' pages (for the comparison's arithmetic only)
    "openai/gpt-4o-mini": {"input_per_1m": 0.15, "output_per_1m": 0.60},
    "openai/whisper-1": {"per_minute": 0.006},
    "openai/tts-1": {"per_1m_chars": 15.0},
    "openai/gpt-realtime": {"input_per_1m": 4.0, "output_per_1m": 16.0, "audio_input_per_1m": 32.0,
                            "audio_output_per_1m": 64.0},
    "gemini/gemini-2.5-flash-native-audio-preview-09-2025": {
        "input_per_1m": 0.5, "output_per_1m": 2.0, "audio_input_per_1m": 3.0, "audio_output_per_1m": 12.0},
}
CASCADE = """
pipelines:
  default:
    greeting: "{greeting}"
    stt: {{provider: openai, model: whisper-1, base_url: "{stt}"}}
    llm: {{provider: openai, model: gpt-4o-mini, base_url: "{llm}"}}
    tts: {{provider: openai, model: tts-1, voice: alloy, base_url: "{tts}"}}
"""
GEMINI = """
pipelines:
  default:
    kind: realtime
    greeting: "{greeting}"
    realtime: {{provider: gemini, base_url: "{url}", silence_duration_ms: 500}}
"""
REALTIME = """
pipelines:
  default:
    kind: realtime
    greeting: "{greeting}"
    realtime: {{provider: openai, model: gpt-realtime, base_url: "{url}"}}
"""


@contextlib.asynccontextmanager
async def cascade_vendors(reply: str) -> AsyncIterator[str]:
    scripts = {"stt": OpenAIScript(transcript="What time do you close?"), "llm": OpenAIScript(reply=reply),
               "tts": OpenAIScript(ms_per_char=MS_PER_CHAR)}
    faults = {"stt": Faults(first_byte_delay_s=STT_S),
              "llm": Faults(first_byte_delay_s=LLM_FIRST_S, event_delay_s=LLM_TOKEN_S),
              "tts": Faults(first_byte_delay_s=TTS_FIRST_S)}
    async with contextlib.AsyncExitStack() as stack:
        urls = {}
        for stage, script in scripts.items():
            port = await stack.enter_async_context(running(openai_app(faults[stage], script)))
            urls[stage] = f"http://127.0.0.1:{port}/v1"
        yield CASCADE.format(greeting=GREETING, **urls)


@contextlib.asynccontextmanager
async def realtime_vendor(replies: list[str], script: RealtimeScript) -> AsyncIterator[str]:
    script.replies, script.ms_per_char = replies, MS_PER_CHAR
    script.reply_delay_s, script.transcripts = REALTIME_FIRST_AUDIO_S, ["what time do you close"]
    async with running(realtime_app(script)) as port:
        yield REALTIME.format(greeting=GREETING, url=f"http://127.0.0.1:{port}/v1")


@contextlib.asynccontextmanager
async def gemini_vendor(replies: list[str], script: LiveScript) -> AsyncIterator[str]:
    script.replies, script.ms_per_char = replies, MS_PER_CHAR
    script.reply_delay_s, script.transcripts = REALTIME_FIRST_AUDIO_S, ["what time do you close"]
    async with serving(script) as (port, cert):
        os.environ["SSL_CERT_FILE"] = str(cert)  # read when the SDK client is built (at create_app)
        os.environ.setdefault("GEMINI_API_KEY", "bench")
        yield GEMINI.format(greeting=GREETING, url=f"https://127.0.0.1:{port}")


async def call(config_text: str, lines: list[CallerLine]) -> tuple[CallResult, list[TurnMetrics]]:
    turns: list[TurnMetrics] = []
    app = create_app(parse_config(config_text), on_turn=turns.append)
    async with running(app) as port:
        result = await run_call(f"ws://127.0.0.1:{port}/media-stream", lines, on_event=lambda e: None,
                                hangup_timeout_s=1.0)
        await asyncio.wait_for(app.state.host.wait_idle(), 10)
    return result, turns


def p(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q):.0f}" if values else "-"


def cost_per_turn(turns: list[TurnMetrics]) -> str:
    rows = [turn_row(turn) for turn in turns]
    answered = [row for row in rows if row["voice_to_voice_ms"] is not None]
    report = build_report(rows, pricing=PRICES)
    total = sum((row.cost_per_call or 0) * row.calls for row in report.rows)
    return f"{total / len(answered):.5f}" if answered else "-"


async def measure(kind: str) -> dict[str, str]:
    questions = [CallerLine(text=line) for line in QUESTIONS]
    barge = [CallerLine(text=BARGE_INS[0]), CallerLine(text=BARGE_INS[1], barge_in=True)]
    truncation_errors: list[float] = []
    if kind == "cascade":
        async with cascade_vendors(REPLY) as config_text:
            asked, turns = await call(config_text, questions)
        cuts = []
        for _ in range(3):
            async with cascade_vendors(LONG_REPLY) as config_text:
                cuts.append(await call(config_text, barge))
    elif kind == "gemini":
        async with gemini_vendor([REPLY], LiveScript()) as config_text:
            asked, turns = await call(config_text, questions)
        cuts = []
        for _ in range(3):
            async with gemini_vendor([LONG_REPLY, AFTER_BARGE_IN], LiveScript()) as config_text:
                cuts.append(await call(config_text, barge))
    else:
        script = RealtimeScript()
        async with realtime_vendor([REPLY], script) as config_text:
            asked, turns = await call(config_text, questions)
        cuts = []
        for _ in range(3):
            script = RealtimeScript()
            async with realtime_vendor([LONG_REPLY, AFTER_BARGE_IN], script) as config_text:
                result, cut_turns = await call(config_text, barge)
            cuts.append((result, cut_turns))
            for truncation in script.truncations:
                answered = len(AFTER_BARGE_IN) * MS_PER_CHAR if AFTER_BARGE_IN in script.spoken else 0
                greeting_ms = round(len(GREETING) * MS_PER_CHAR / 20) * 20
                heard = result.bot_audio_played_s * 1000 - greeting_ms - answered
                truncation_errors.append(abs(truncation["audio_end_ms"] - heard))
    v2v = [t.voice_to_voice_ms for t in turns if t.kind == "reply" and t.voice_to_voice_ms is not None]
    first = [line.response_delay_ms for line in asked.lines if line.response_delay_ms is not None]
    clears = [line.clear_after_onset_ms for result, _ in cuts for line in result.lines
              if line.barge_in and line.clear_after_onset_ms is not None]
    return {
        "voice-to-voice p50 / p90 ms": f"{p(v2v, 50)} / {p(v2v, 90)} (n={len(v2v)})",
        "first audio after last word p50 ms": p(first, 50),
        "barge-in stop p50 / max ms": f"{p(clears, 50)} / {max(clears):.0f}" if clears else "-",
        "truncation error max ms": f"{max(truncation_errors):.0f} (n={len(truncation_errors)})"
                                   if truncation_errors else "n/a",
        "cost per answered turn USD": cost_per_turn(turns),
    }


async def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    os.environ.setdefault("OPENAI_API_KEY", "bench")
    results = {kind: await measure(kind) for kind in ("cascade", "realtime", "gemini")}
    keys = list(results["cascade"])
    width = max(len(key) for key in keys)
    print(f"| {'':<{width}} | cascade (OpenAI STT+LLM+TTS fakes) | OpenAI Realtime fake | Gemini Live fake |")
    print(f"|{'-' * (width + 2)}|---|---|---|")
    for key in keys:
        row = " | ".join(results[kind][key] for kind in results)
        print(f"| {key:<{width}} | {row} |")
    print(f"\nfixed latencies: STT {STT_S}s, LLM {LLM_FIRST_S}s + {LLM_TOKEN_S}s/token, TTS {TTS_FIRST_S}s; "
          f"realtime first audio {REALTIME_FIRST_AUDIO_S:.2f}s after its VAD's 500 ms of silence")


if __name__ == "__main__":
    asyncio.run(main())
