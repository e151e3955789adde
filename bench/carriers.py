"""Benchmark: what each carrier's framing adds to a call — voice-to-voice delay and barge-in stop, per
carrier, beside Twilio's, on the same pipeline.

The server is the real app (``server.create_app``, in process, signatures on for every carrier that has
them) with instant providers (tests/fakes/instant.py: a fixed transcript, a fixed reply, a 300 Hz tone
as the voice), so everything measured is endpointing, the player and the carrier's wire. The caller is
the simulated caller (switchboard/caller/, real time) speaking each carrier's protocol: Twilio and
Exotel on their sockets (Telnyx on its socket too, with its stream token), Plivo and Vonage through
their signed answer webhooks first. Per call:

  line 1   1.2 s of speech-like sound, then silence: **voice-to-voice** = the caller's first bot audio
           after the line's last sample (endpointing + reply + the carrier's framing)
  line 2   spoken over the bot's long reply, 1 s into it: **barge-in stop** = when the carrier got the
           `clear` (its buffer dropped: what the caller hears stops), after the line's onset

Prints per carrier the median (min–max) of each over ``--calls`` calls and the difference from Twilio's
median. Run from the repository root:

    python -m bench.carriers [--calls 5] \
        [--carriers twilio,plivo,vonage,vonage16k,exotel,exotel16k,telnyx,telnyx16k]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from switchboard.audio.wav import write_wav
from switchboard.caller import CallerLine, run_call
from switchboard.config import parse_config
from switchboard.pipeline.call import Providers
from switchboard.server import create_app, running
from tests.fakes.instant import InstantLLM, InstantSTT, InstantTTS
from tests.speech import quiet, speech_like

CONFIG = """
vonage: {{sample_rate: {rate}}}
telnyx: {{codec: {telnyx_codec}, sample_rate: {rate}}}
pipelines:
  default:
    greeting: "Hi."
    stt: {{provider: pocketsphinx}}
    llm: {{provider: scripted}}
    tts: {{provider: espeak}}
"""
# carrier -> (the caller's --carrier, the URL path the caller starts at, the Vonage rate)
CARRIERS = {
    "twilio": ("twilio", "ws", "/media-stream", 8000),
    "plivo": ("plivo", "http", "", 8000),
    "vonage": ("vonage", "http", "", 8000),
    "vonage16k": ("vonage", "http", "", 16000),
    "exotel": ("exotel", "ws", "/exotel", 8000),
    "exotel16k": ("exotel", "ws", "/exotel", 16000),  # PCM16 at 16 kHz (start.media_format)
    "telnyx": ("telnyx", "ws", "/telnyx/media-stream", 8000),  # PCMU (the caller brings the stream token)
    "telnyx16k": ("telnyx", "ws", "/telnyx/media-stream", 16000),  # L16 at 16 kHz
}
KEYS = {"PLIVO_AUTH_TOKEN": "bench-plivo-token",
        "VONAGE_SIGNATURE_SECRET": "bench-vonage-signature-secret-32b",
        "TELNYX_STREAM_TOKEN": "bench-telnyx-stream-token"}
REPLY = "Yes, we are open every day from noon. " * 6


@contextlib.contextmanager
def signed_env() -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in KEYS}
    os.environ.update(KEYS)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


async def one_call(carrier: str, lines: list[CallerLine]) -> tuple[float | None, float | None, int]:
    name, scheme, path, rate = CARRIERS[carrier]
    providers = Providers(InstantSTT("what are your hours"), InstantLLM(REPLY), InstantTTS(ms_per_char=50))
    config = CONFIG.format(rate=rate, telnyx_codec="L16" if rate == 16000 else "PCMU")
    app = create_app(parse_config(config), providers={"default": providers})
    async with running(app) as port:
        result = await run_call(f"{scheme}://127.0.0.1:{port}{path}", lines, carrier=name,
                                hangup_timeout_s=1.0, on_event=lambda event: None,
                                sample_rate=rate if name in ("vonage", "telnyx", "exotel") else 8000)
        await asyncio.wait_for(app.state.host.wait_idle(), 10)
    question, barge_in = result.lines
    return question.response_delay_ms, barge_in.clear_after_onset_ms, result.malformed_count


def summary(values: list[float]) -> str:
    if not values:
        return "—"
    return f"{statistics.median(values):6.0f} ({min(values):.0f}–{max(values):.0f})"


async def main_async(carriers: list[str], calls: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        question, interruption = Path(tmp) / "q.wav", Path(tmp) / "b.wav"
        write_wav(question, np.concatenate([quiet(0.1), speech_like(1.2), quiet(0.1, seed=1)]), 8000)
        write_wav(interruption, np.concatenate([speech_like(1.0), quiet(0.1, seed=2)]), 8000)
        lines = [CallerLine(wav=str(question)), CallerLine(wav=str(interruption), barge_in=True)]
        results: dict[str, tuple[list[float], list[float], int]] = {c: ([], [], 0) for c in carriers}
        with signed_env():
            for _ in range(calls):  # interleaved, so a burst of load elsewhere hits every carrier alike
                for carrier in carriers:
                    v2v, stop, malformed = await one_call(carrier, lines)
                    v2vs, stops, bad = results[carrier]
                    v2vs += [v2v] if v2v is not None else []
                    stops += [stop] if stop is not None else []
                    results[carrier] = (v2vs, stops, bad + malformed)
    base_v2v = statistics.median(results["twilio"][0]) if results.get("twilio", ([],))[0] else None
    base_stop = statistics.median(results["twilio"][1]) if results.get("twilio", ([], []))[1] else None
    print(f"{calls} calls per carrier, ms, median (min–max); Δ = median minus Twilio's")
    print(f"{'carrier':10s} {'voice-to-voice':>20s} {'Δ':>6s} {'barge-in stop':>20s} {'Δ':>6s} "
          f"{'malformed':>10s}")
    for carrier, (v2vs, stops, bad) in results.items():
        d_v2v = f"{statistics.median(v2vs) - base_v2v:+6.0f}" if v2vs and base_v2v else "     —"
        d_stop = f"{statistics.median(stops) - base_stop:+6.0f}" if stops and base_stop else "     —"
        print(f"{carrier:10s} {summary(v2vs):>20s} {d_v2v} {summary(stops):>20s} {d_stop} {bad:10d}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--carriers", default=",".join(CARRIERS))
    args = parser.parse_args()
    carriers = [c.strip() for c in args.carriers.split(",") if c.strip()]
    unknown = [c for c in carriers if c not in CARRIERS]
    if unknown:
        parser.error(f"unknown carrier(s) {', '.join(unknown)}; choose from {', '.join(CARRIERS)}")
    if "twilio" not in carriers:
        carriers.insert(0, "twilio")
    asyncio.run(main_async(carriers, args.calls))


if __name__ == "__main__":
    main()
