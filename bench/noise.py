"""Benchmark: one caller sends loud noise; does anybody else notice?

A real `switchboard serve` process (a subprocess, on 127.0.0.1) runs the bundled pipeline with the chosen
recogniser. Caller A plays 20 s of loud white noise (-15 dBFS, which webrtcvad takes for speech) and then
stays on the line; caller B, on another connection, starts 3 s later and asks a question the script
answers. Meanwhile a probe asks `/healthz` every 50 ms. Printed per run:

  healthz p50 / p99 / max   the server's answer time to the probe while A's noise is recognised: a frozen
                            event loop shows here first
  B's reply delay           B's first bot audio after B stopped talking, as B measured it
  A's turns                 what the server made of the noise (turns recorded, replies spoken)

Runs: each recogniser with the noise gate on (the default) and off (`vad.noise_gate: false`).

    python -m bench.noise                              # pocketsphinx and moonshine, gate on and off
    python -m bench.noise --engines pocketsphinx --noise-s 30
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path

import numpy as np

from bench.serving import probe, server
from switchboard.audio.wav import write_wav
from switchboard.caller import BotAudioStarted, CallerEvent, CallerLine, run_call
from switchboard.config import default_config_path

ROOT = Path(__file__).resolve().parent.parent


def config_text(engine: str, gate: bool) -> str:
    text = default_config_path().read_text()
    text = text.replace("provider: moonshine  #", f"provider: {engine}  #", 1)
    text = text.replace("      model: tiny-en  #", "      # model: tiny-en  #", 1)  # moonshine's only
    if engine != "moonshine":
        text = text.replace("      workers: 1  #", "      # workers: 1  #", 1)
    return text.replace("noise_gate: true", f"noise_gate: {str(gate).lower()}", 1)


async def run(engine: str, gate: bool, noise_wav: Path, folder: Path) -> dict[str, object]:
    async with server(config_text(engine, gate), f"{engine}-{gate}", folder) as served:
        port = served.port
        url = f"ws://127.0.0.1:{port}/media-stream"
        done = asyncio.Event()
        probing = asyncio.create_task(probe(port, done))
        delays: list[float] = []

        def b_event(event: CallerEvent) -> None:
            if isinstance(event, BotAudioStarted) and event.delay_after_caller_ms is not None:
                delays.append(event.delay_after_caller_ms)

        async def caller_b() -> None:
            await asyncio.sleep(3)
            await run_call(url, [CallerLine("what are your opening hours")], on_event=b_event,
                           hangup_timeout_s=3, reply_timeout_s=40)

        a_events: list[CallerEvent] = []
        a = asyncio.create_task(run_call(url, [CallerLine(wav=str(noise_wav))], on_event=a_events.append,
                                         hangup_timeout_s=20, reply_timeout_s=40))
        await caller_b()
        a_result = await a
        done.set()
        healthz = await probing
    a_replies = sum(isinstance(e, BotAudioStarted) for e in a_events) - 1  # minus the greeting
    return {
        "engine": engine, "gate": gate,
        "healthz_p50": statistics.median(healthz), "healthz_p99": float(np.percentile(healthz, 99)),
        "healthz_max": max(healthz), "b_delay_ms": delays[0] if delays else None,
        "a_replies": a_replies, "a_clears": sum(line.clear_received for line in a_result.lines),
    }


def ms(value: float | None) -> str:
    return "  none" if value is None else f"{value:6.0f}"


async def main(engines: list[str], noise_s: float) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-noise-"))
    if True:
        noise = np.random.default_rng(0).normal(0, 32768 * 10 ** (-15 / 20), round(8000 * noise_s))
        noise_wav = folder / "noise.wav"
        write_wav(noise_wav, np.clip(np.round(noise), -32768, 32767).astype(np.int16), 8000)
        print(f"caller A: {noise_s:g} s of white noise at -15 dBFS; caller B asks a question 3 s later\n")
        print("engine        gate  healthz p50   p99    max (ms)  B's reply delay (ms)  replies to A")
        for engine in engines:
            for gate in (True, False):
                r = await run(engine, gate, noise_wav, folder)
                healthz = " ".join(ms(r[key]) for key in ("healthz_p50", "healthz_p99", "healthz_max"))
                print(f"{engine:12s}  {'on ' if gate else 'off'}   {healthz}        {ms(r['b_delay_ms'])}"
                      f"            {r['a_replies']}", flush=True)
        print(f"\nthe servers' logs: {folder}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default="pocketsphinx,moonshine")
    parser.add_argument("--noise-s", type=float, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.engines.split(","), args.noise_s))
