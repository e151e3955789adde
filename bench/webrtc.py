"""Benchmark: browser calls (WebRTC, telephony/webrtc) beside phone calls (Twilio Media Streams).

Three parts (all by default; pick with --parts):

* **v2v**: voice-to-voice of the same caller lines on the bundled offline pipeline (Moonshine, the
  script, Piper), over the Twilio path (the simulated caller, μ-law over a WebSocket) and over WebRTC
  (an aiortc peer, as a browser: Opus both ways, the bot's audio through aiortc's jitter buffer and
  decoder), alternating call by call against one `switchboard serve` process. Per line: the caller's
  delay (first audible bot audio after the true end of its line, as the caller hears it) and the
  server's voice_to_voice_ms (from the call store).
* **cpu**: the server's CPU per call-second with N concurrent calls of each kind whose callers are
  silent after the greeting (so the pipeline does nothing but its per-frame work: the VAD, and the
  carrier's audio path: Opus decode + resample in, encode out, SRTP and the RTP stack for WebRTC;
  JSON + base64 + μ-law for Twilio), read from /proc for the server process only. Also the Opus codec
  alone (aiortc's encoder and decoder) in µs per 20 ms frame.
* **recognition**: what narrowing wideband audio to 8 kHz does to Moonshine: word error rate on the
  real recordings in ../shared/speech/ (if present) and on the script's phrases spoken by the caller
  voices, at 16 kHz as recorded, through 8 kHz PCM, and through 8 kHz μ-law (the phone path). A browser
  call's recogniser now gets its 16 kHz copy: `python -m bench.stt_accuracy --browser` measures the two
  ways through the real browser path (Opus, the carrier's own conversion), for every embedded engine.

Run from the repository root:  python -m bench.webrtc [--parts v2v cpu recognition] [--rounds 3]
[--calls 8] [--seconds 20]. The machine's other load shows in every wall-clock figure: compare the two
carriers' figures from the same run, not across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import fractions
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from switchboard.caller import CallerLine, run_call, synthesize_line

ROOT = Path(__file__).resolve().parent.parent
LINES = ["where are you located", "do you have vegetarian options", "are you a robot"]
TICKS = os.sysconf("SC_CLK_TCK")


# --- a server in a process of its own ---------------------------------------------------------------


class Server:
    """`switchboard serve` on 127.0.0.1 with the bundled pipeline and overrides, in its own process."""

    def __init__(self, workdir: Path, changes: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        bundled = (ROOT / "switchboard" / "pipeline.yaml").read_text()
        for old, new in (changes or {}).items():
            assert old in bundled, old
            bundled = bundled.replace(old, new, 1)
        config = workdir / "pipeline.yaml"
        config.write_text(f"database_url: {workdir / 'calls.db'}\n" + bundled)
        self.port = _free_port()
        env = {**os.environ, "SWITCHBOARD_CONFIG": str(config), "PYTHONPATH": str(ROOT)}
        env.pop("SWITCHBOARD_API_TOKEN", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "switchboard", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=open(workdir / "server.log", "w"))
        self.base = f"http://127.0.0.1:{self.port}"

    async def ready(self, timeout_s: float = 120) -> None:
        async with httpx.AsyncClient() as client:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the server exited: see {self.workdir / 'server.log'}")
                try:
                    if (await client.get(f"{self.base}/readyz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        raise TimeoutError("the server did not start")

    async def idle(self) -> None:
        """Until the server has no call (it records a call's last turn before it lets it go)."""
        async with httpx.AsyncClient() as client:
            for _ in range(600):
                if not (await client.get(f"{self.base}/healthz")).json()["active_calls"]:
                    return
                await asyncio.sleep(0.2)

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime (every thread)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def server_v2v(workdir: Path, call_id: str) -> list[float]:
    from switchboard.store import CallStore

    store = CallStore(str(workdir / "calls.db"))
    await store.open()
    try:
        call = await store.get_call(call_id)
    finally:
        await store.close()
    return [turn["voice_to_voice_ms"] for turn in (call or {}).get("turns", [])
            if turn["voice_to_voice_ms"] is not None]


# --- voice-to-voice ---------------------------------------------------------------------------------


async def twilio_call(server: Server) -> tuple[list[float], str]:
    result = await run_call(f"ws://127.0.0.1:{server.port}/media-stream", [CallerLine(text=t) for t in LINES],
                            on_event=lambda event: None, hangup_timeout_s=2, reply_timeout_s=30)
    return [line.response_delay_ms for line in result.lines if line.response_delay_ms is not None], \
        result.call_sid


async def webrtc_call(server: Server) -> tuple[list[float], str]:
    from tests.webrtc_client import BrowserCaller

    caller = BrowserCaller(server.base)
    call_id = await caller.call("default")
    delays = []
    try:
        await caller.bot_spoke(after=0, timeout_s=30)
        await caller.bot_quiet(0.7, timeout_s=60)
        for text in LINES:
            await asyncio.sleep(0.3)
            pcm, rate = synthesize_line(text, "piper")
            ended = await caller.mic.say(pcm, rate)
            spoke = await caller.bot_spoke(after=ended, timeout_s=30)
            delays.append((spoke - ended) * 1000)
            await caller.bot_quiet(0.7, timeout_s=60)
    finally:
        await caller.hang_up()
    return delays, call_id


async def voice_to_voice(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp))
        try:
            await server.ready()
            await twilio_call(server)  # warm-up: the first call loads what the later ones reuse
            await server.idle()
            heard: dict[str, list[float]] = {"twilio": [], "webrtc": []}
            measured: dict[str, list[float]] = {"twilio": [], "webrtc": []}
            for n in range(rounds):
                order = ("twilio", "webrtc") if n % 2 == 0 else ("webrtc", "twilio")
                for kind in order:
                    delays, call_id = await (twilio_call if kind == "twilio" else webrtc_call)(server)
                    await server.idle()
                    heard[kind] += delays
                    measured[kind] += (await server_v2v(Path(tmp), call_id))[-len(LINES):]
                    print(f"  round {n + 1} {kind:>6}: caller heard the reply after "
                          + ", ".join(f"{d:.0f}" for d in delays) + " ms", flush=True)
        finally:
            server.stop()
    print(f"\nvoice-to-voice, bundled pipeline, {rounds} calls x {len(LINES)} lines per carrier (median ms)")
    print(f"{'carrier':<10}{'caller hears':>14}{'server v2v':>12}{'n':>5}")
    for kind in ("twilio", "webrtc"):
        print(f"{kind:<10}{statistics.median(heard[kind]):>14.0f}{statistics.median(measured[kind]):>12.0f}"
              f"{len(heard[kind]):>5}")
    hears = statistics.median(heard["webrtc"]) - statistics.median(heard["twilio"])
    v2v = statistics.median(measured["webrtc"]) - statistics.median(measured["twilio"])
    print(f"webrtc - twilio: caller hears {hears:+.0f} ms, server v2v {v2v:+.0f} ms")


# --- CPU ----------------------------------------------------------------------------------------------


async def cpu_per_call(calls: int, seconds: float) -> None:
    from tests.webrtc_client import BrowserCaller

    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        # no idle reminders: the callers stay silent on purpose, so the pipeline only does per-frame work
        server = Server(Path(tmp), {"reminder_after_s: 10": "reminder_after_s: 0"})
        try:
            await server.ready()
            for kind in ("twilio", "webrtc", "twilio", "webrtc"):
                if kind == "webrtc":
                    cpu, wall = await _measure_webrtc(server, calls, seconds, BrowserCaller)
                else:
                    cpu, wall = await _measure_twilio(server, calls, seconds)
                await server.idle()
                results.setdefault(kind, []).append(cpu / (wall * calls))
                print(f"  {kind:>6}: {calls} silent calls, server CPU {100 * cpu / wall:.1f} % of a core "
                      f"over {wall:.0f} s", flush=True)
        finally:
            server.stop()
    print(f"\nserver CPU per call (callers silent after the greeting; {calls} at once, "
          f"{seconds:.0f} s windows)")
    for kind, shares in results.items():
        share = statistics.mean(shares)
        print(f"{kind:<10}{100 * share:>7.2f} % of a core per call  -> {1 / share:>5.0f} such calls per core")
    print(f"webrtc / twilio: {statistics.mean(results['webrtc']) / statistics.mean(results['twilio']):.2f}x")
    opus_cost()


async def _measure_webrtc(server: Server, calls: int, seconds: float, caller_type) -> tuple[float, float]:
    """`calls` browser callers silent after the greeting; the server's CPU over `seconds` once all greeted."""
    peers = [caller_type(server.base) for _ in range(calls)]
    try:
        for peer in peers:
            await peer.call("default")
        await asyncio.gather(*(peer.bot_spoke(after=0, timeout_s=90) for peer in peers))
        await asyncio.gather(*(peer.bot_quiet(1.0, timeout_s=90) for peer in peers))
        cpu0, wall0 = server.cpu_s(), time.monotonic()
        await asyncio.sleep(seconds)
        return server.cpu_s() - cpu0, time.monotonic() - wall0
    finally:
        for peer in peers:
            await peer.hang_up()


async def _measure_twilio(server: Server, calls: int, seconds: float) -> tuple[float, float]:
    """`calls` Twilio callers silent after the greeting; the server's CPU over `seconds` once all greeted."""
    greeted = asyncio.Semaphore(0)
    release = asyncio.Event()

    async def one() -> None:
        async def script(call) -> None:
            await call.wait_for_reply(0.0)  # the greeting
            greeted.release()
            await release.wait()

        await run_call(f"ws://127.0.0.1:{server.port}/media-stream", [CallerLine(text="hello")],
                       on_event=lambda event: None, script=script, hangup_timeout_s=1)

    tasks = [asyncio.create_task(one()) for _ in range(calls)]
    for _ in range(calls):
        await greeted.acquire()
    cpu0, wall0 = server.cpu_s(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu, wall = server.cpu_s() - cpu0, time.monotonic() - wall0
    release.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return cpu, wall


def opus_cost(frames: int = 2000) -> None:
    """The Opus encoders and decoder alone, µs per 20 ms frame (speech-like audio)."""
    from aiortc.codecs import get_decoder, get_encoder
    from aiortc.jitterbuffer import JitterFrame
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters
    from av import AudioFrame

    from switchboard.audio.resample import resample
    from switchboard.telephony.webrtc.media import OpusEncoder
    from tests.speech import speech_like

    codec = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2)
    encoder, decoder = get_encoder(codec), get_decoder(codec)
    pcm = speech_like(frames * 0.02, rate=48000)
    made = []
    for n in range(frames):
        frame = AudioFrame.from_ndarray(np.repeat(pcm[n * 960:(n + 1) * 960], 2).reshape(1, -1),
                                        format="s16", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = 48000, n * 960, fractions.Fraction(1, 48000)
        made.append(frame)
    start = time.process_time()
    payloads = [encoder.encode(frame)[0] for frame in made]
    encode_us = (time.process_time() - start) / frames * 1e6
    start = time.process_time()
    for n, packets in enumerate(payloads):
        for payload in packets:
            decoder.decode(JitterFrame(data=payload, timestamp=n * 960))
    decode_us = (time.process_time() - start) / frames * 1e6
    bot = OpusEncoder()  # what the bot's track does: mono, at the pipeline's 8 kHz
    line = resample(pcm, 48000, 8000)
    start = time.process_time()
    for n in range(frames):
        bot.encode(line[n * 160:(n + 1) * 160], n * 160)
    bot_us = (time.process_time() - start) / frames * 1e6
    print(f"Opus alone (libopus via PyAV, 20 ms frames): aiortc's encoder (48 kHz stereo, what the track "
          f"used) {encode_us:.0f} µs, the bot track's own (8 kHz mono) {bot_us:.0f} µs; aiortc's decoder "
          f"(48 kHz stereo) {decode_us:.0f} µs per frame = {(bot_us + decode_us) / 200:.2f} % of a core per "
          "call as the server runs them")


# --- recognition at 8 kHz ------------------------------------------------------------------------------


async def recognition() -> None:
    from bench.stt_accuracy import SPEECH, normalise, telephone, word_errors
    from switchboard.audio.resample import resample
    from switchboard.audio.wav import read_wav
    from switchboard.config import BUNDLED_CONFIG, load_config
    from switchboard.providers.moonshine import MoonshineSTT, MoonshineSTTConfig
    from switchboard.providers.scripted import ScriptedLLM

    def wideband(pcm: np.ndarray, rate: int) -> np.ndarray:
        return resample(np.asarray(pcm, np.int16), rate, 16000)

    def narrowband(pcm: np.ndarray, rate: int) -> np.ndarray:  # the WebRTC path: 8 kHz PCM16, no μ-law
        return resample(resample(np.asarray(pcm, np.int16), rate, 8000), 8000, 16000)

    paths = {"16 kHz as recorded": wideband, "8 kHz PCM (WebRTC)": narrowband,
             "8 kHz u-law (phone)": telephone}
    stt = MoonshineSTT(MoonshineSTTConfig(provider="moonshine"))
    await stt.warm()
    llm = ScriptedLLM(load_config(BUNDLED_CONFIG).pipeline(None).llm)
    sets: dict[str, list[tuple[str, np.ndarray, int]]] = {}
    if (SPEECH / "MANIFEST.tsv").is_file():
        rows = list(csv.DictReader((SPEECH / "MANIFEST.tsv").open(encoding="utf-8"), delimiter="\t"))
        sets["real recordings"] = [(row["transcript"], *read_wav(SPEECH / row["file"])) for row in rows]
    for voice in ("piper", "en-us+klatt4"):
        sets[f"script phrases, {voice}"] = [(p, *synthesize_line(p, voice)) for p in llm.phrases()]
    print("\nMoonshine word error rate (%) by what reaches it (and how often the scripted rule it picks is "
          "the words' own)")
    print(f"{'set':<30}" + "".join(f"{name:>22}" for name in paths))
    for label, cases in sets.items():
        cells = []
        for convert in paths.values():
            errors = words = same = 0
            for text, pcm, rate in cases:
                heard = (await stt.transcribe(convert(pcm, rate))).text
                errors += word_errors(normalise(text), normalise(heard))
                words += len(normalise(text))
                same += llm.respond(heard) == llm.respond(text)
            cells.append(f"{100 * errors / words:.1f} ({same}/{len(cases)})")
        print(f"{label:<30}" + "".join(f"{cell:>22}" for cell in cells), flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", default=["v2v", "cpu", "recognition"],
                        choices=["v2v", "cpu", "recognition"])
    parser.add_argument("--rounds", type=int, default=3, help="calls per carrier for v2v")
    parser.add_argument("--calls", type=int, default=8, help="concurrent calls for cpu")
    parser.add_argument("--seconds", type=float, default=20, help="the cpu window")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
    if "v2v" in args.parts:
        await voice_to_voice(args.rounds)
    if "cpu" in args.parts:
        await cpu_per_call(args.calls, args.seconds)
    if "recognition" in args.parts:
        await recognition()


if __name__ == "__main__":
    asyncio.run(main())
