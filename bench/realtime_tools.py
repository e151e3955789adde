"""Benchmark: what a tool round adds to a realtime (speech-to-speech) turn.

Whole calls in the real app (`server.create_app`), the caller a short speech-like line per turn, against
the realtime fakes (tests/fakes/openai_realtime_fake.py, tests/fakes/gemini_live_fake.py over TLS) with
no model latency of their own, and a fake booking API (tests/fakes/tool_server.py) on 127.0.0.1 that
answers at once. Per vendor, two calls of LINES turns each:

  plain   the model answers in words at once
  tool    the model calls book_table, its result goes back (OpenAI: function_call_output items and
          response.create; Gemini: toolResponse), and the model's next response speaks it

Printed per vendor: voice-to-voice p50 / p90 of each call (first audio frame sent − the caller's speech
end by our VAD, as the report measures it), the difference of the medians (what the tool round adds:
our work on the model's call, the HTTP request, the results sent, and the fake's second response), and
the HTTP part alone (`TurnMetrics.tool_ms`: `ToolBox.run`) p50. The Gemini fake holds its answer to a
toolResponse for `AFTER_TOOL_S` (50 ms: a farewell prompt may follow it), which is in Gemini's figure.

    python -m bench.realtime_tools [--lines 8]      # ≈ 1 min
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import statistics
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np

from switchboard.audio.wav import write_wav
from switchboard.caller import CallerLine, run_call
from switchboard.config import parse_config
from switchboard.core.metrics import TurnMetrics
from switchboard.server import create_app, running
from tests.fakes import gemini_live_fake, openai_realtime_fake
from tests.fakes.tool_server import ToolServer
from tests.speech import quiet, speech_like

BOOK = ("book_table", {"party_size": 4, "time": "19:00"})
SPOKEN = "Booked: {output}"
PLAIN = "Booked, reference B-1."
TOOLS = """
    tools:
      - name: book_table
        description: Book a table.
        parameters:
          type: object
          properties: {{party_size: {{type: integer}}, time: {{type: string}}}}
          required: [party_size, time]
        http: {{method: POST, url: "{url}/bookings", body: {{party_size: "{{party_size}}", time: "{{time}}"}},
                result_field: booking}}
"""
PIPELINE = """
pipelines:
  default:
    kind: realtime
    greeting: "Hi."
    realtime: {realtime}
"""


@contextlib.asynccontextmanager
async def vendor(kind: str, replies: list) -> AsyncIterator[str]:
    """The fake's `realtime:` section, serving while in use."""
    if kind == "openai":
        os.environ.setdefault("OPENAI_API_KEY", "bench")
        script = openai_realtime_fake.RealtimeScript(replies=replies, ms_per_char=20)
        async with running(openai_realtime_fake.make_app(script)) as port:
            yield (f"{{provider: openai, base_url: 'http://127.0.0.1:{port}/v1', "
                   "turn_detection: {type: server_vad, silence_duration_ms: 250}}")
        return
    os.environ.setdefault("GEMINI_API_KEY", "bench")
    live = gemini_live_fake.LiveScript(replies=replies, ms_per_char=20)
    async with gemini_live_fake.serving(live) as (port, cert):
        os.environ["SSL_CERT_FILE"] = str(cert)
        yield f'{{provider: gemini, base_url: "https://127.0.0.1:{port}", silence_duration_ms: 250}}'


async def one_call(kind: str, with_tool: bool, lines: int, wav: str, tools_url: str) -> list[TurnMetrics]:
    replies: list = [BOOK, SPOKEN] * lines if with_tool else [PLAIN]
    turns: list[TurnMetrics] = []
    async with vendor(kind, replies) as realtime:
        text = PIPELINE.format(realtime=realtime) + (TOOLS.format(url=tools_url) if with_tool else "")
        app = create_app(parse_config(text), on_turn=turns.append)
        async with running(app) as port:
            await run_call(f"ws://127.0.0.1:{port}/media-stream", [CallerLine(wav=wav)] * lines,
                           on_event=lambda e: None, hangup_timeout_s=1.0)
            await asyncio.wait_for(app.state.host.wait_idle(), 10)
    return [turn for turn in turns if turn.kind == "reply" and turn.voice_to_voice_ms is not None]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def main(lines: int) -> None:
    logging.getLogger("switchboard").setLevel(logging.ERROR)  # the open-dashboard warnings of each app
    server = ToolServer()
    with tempfile.TemporaryDirectory() as directory:
        wav = str(Path(directory) / "line.wav")
        write_wav(wav, np.concatenate([quiet(0.05), speech_like(0.5), quiet(0.05, seed=1)]), 8000)
        async with running(server.app()) as tool_port:
            url = f"http://127.0.0.1:{tool_port}"
            header = ("vendor", "call", "turns", "v2v p50", "v2v p90", "tool http p50")
            print("{:<8} {:<6} {:>5} {:>8} {:>8} {:>14}".format(*header))
            for kind in ("openai", "gemini"):
                medians = {}
                for with_tool in (False, True):
                    turns = await one_call(kind, with_tool, lines, wav, url)
                    v2v = [turn.voice_to_voice_ms or 0.0 for turn in turns]
                    http = [turn.tool_ms for turn in turns if turn.tool_calls]
                    medians[with_tool] = statistics.median(v2v) if v2v else float("nan")
                    name = "tool" if with_tool else "plain"
                    shown = f"{pct(http, 50):.1f} ms" if http else "-"
                    print(f"{kind:<8} {name:<6} {len(turns):>5} {pct(v2v, 50):>6.0f}ms "
                          f"{pct(v2v, 90):>6.0f}ms {shown:>14}")
                print(f"{kind:<8} the tool round adds {medians[True] - medians[False]:.0f} ms to the median "
                      "voice-to-voice")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=8, help="turns per call")
    asyncio.run(main(parser.parse_args().lines))
