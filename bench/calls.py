"""Benchmark: N concurrent simulated Twilio calls against one Switchboard server process.

Three kinds of process, so that what is measured is Switchboard's own cost:

* the **server** (``--serve``, spawned by the orchestrator): the real Starlette/uvicorn app from
  ``server.create_app`` served by ``server.running`` on 127.0.0.1, on uvloop like ``switchboard serve``
  (``--server-loop asyncio`` for the stdlib loop), with instant providers: a fixed transcript, an instant
  scripted reply and a 24 kHz tone pre-rendered once per text (variants of ``tests/fakes/instant.py`` that
  keep nothing per turn). It measures, between the orchestrator's ``begin`` and ``end``: its event-loop
  lag (a task sleeping 10 ms records its overshoot), its CPU time (user + system), every TurnMetrics (via
  ``on_turn``) and each call's ``Player.max_lateness_s`` / ``frames_sent`` (read when the player closes).
* one or more **caller** processes (``--callers``; ``--caller-procs``): lightweight Twilio simulators.
  Each call connects, sends ``connected`` and ``start``, then 20 ms μ-law
  ``media`` frames on its own real-time grid (the call's start is random within ``--stagger`` seconds,
  so the calls' 20 ms phases are spread out as with real calls). It waits for the greeting, then per
  turn speaks a line (``tests.speech.speech_like``, which webrtcvad flags as speech) followed by line
  noise until the bot's reply has played out, pauses ``--pause`` seconds and speaks again, until
  ``--duration`` seconds of call (or ``--turns`` lines) are done; then it sends ``stop`` and closes.
  Bot audio plays on a simulated Twilio playback clock (``play_end = max(play_end, arrival) + 20 ms``
  per frame); a ``mark`` is echoed once the audio before it has played: at the caller's first 20 ms
  tick at or after that moment (so up to 20 ms after it), or at once if it has already played.
  A ``clear`` drops the playback and echoes pending marks (the script never barges in, so there
  should be none). Each caller process measures its own loop lag and how late its frames go out,
  to show whether the callers kept pace, and its CPU time (per call-second, the kernel's share, and as a
  fraction of the server's per call), because it runs on the same cores as the server.

  The callers are cheap on purpose (``--caller-client lean``, the default): on a 2-core machine every
  CPU-second a caller spends is one the second server process can't have, so with the ``websockets``
  client (``--caller-client websockets``, kept for cross-checks; it costs ~0.5-0.7 of the server's CPU per
  call) a second server looked like it added far less than it does. The lean client (bench/wsclient.py)
  sends the same messages as real masked WebSocket frames, one per message, written straight to the
  socket from one timer callback per call; a received message that begins like the server's media
  message is counted as a bot frame without decoding its JSON (no caller reads the bot's audio), marks
  and clears are parsed. Each lean caller process also polls: it sleeps to the next ``--caller-poll-ms``
  (2 ms) point, then sends every frame that came due and reads every message that arrived, instead of
  waking for each timer and each packet (wake-ups, not Python, were most of its cost). So a caller frame
  leaves up to 2 ms after its 20 ms slot (the real carrier's network jitters more), and a bot frame is
  timed up to 2 ms after it arrived: the lateness figure errs high by up to 2 ms, never low.
  ``--caller-poll-ms 0`` is event-driven. ``--caller-client c`` runs the same script, messages and
  measurements in C (bench/callers.c, compiled with ``cc`` when the caller process starts; it always
  polls): ~0.08 of the server's CPU per call, most of it the kernel's loopback sends. Use it to compare
  1 and 2 server processes on a 2-core machine. It times each bot frame by the kernel's receive stamp
  (when the data reached its socket), so its own wake-ups don't count as the server's lateness; with
  ``--caller-nice 10`` the callers also yield the cores to the servers.
* the **orchestrator** (the command you run): starts the others, tells the server when the measured
  window begins and ends, collects the JSON each prints and prints the figures against the targets.

Outbound frame lateness is measured at the caller, per frame: the bot's reply to one caller line (or the
greeting) is one continuous stream, because the instant providers produce all of it at once. The
player sends its first ``lead_ms`` of audio at once, then one frame per 20 ms, so frame n of a reply is
due at ``first_arrival + max(0, n·20 ms − lead)``; its lateness is ``arrival − due``. This counts
everything between the player's pacing decision and the caller's receive (server loop lag, send
back-pressure, the kernel, the caller's own loop lag) but not the first frame's own delay, which is the
voice-to-voice latency, reported separately. An "audible gap" is a frame arriving after the simulated
playback ran dry in the middle of a reply. The server-side ``Player.max_lateness_s`` (measured only
after the player's pacing sleeps) is printed beside it.

Pipeline overhead = server-side ``TurnMetrics.voice_to_voice_ms − vad.end_silence_ms``: what the
pipeline adds on top of the endpointing silence it must wait for. Its two parts are printed too:
``endpoint − speech_end − end_silence`` (the endpointer counts its silence from the last frame webrtcvad
flags, which trails the voice by ~100-130 ms, while ``speech_end`` is the refined end of the voice; plus
frame arrival jitter) and ``endpoint → first frame sent`` (STT/LLM/TTS plumbing, resampling, the player's
first frame: the processing cost proper), with a per-stage breakdown.

Server CPU is the server process's user + system time over the measured window, per call-second (the
calls' connected time as the callers saw it) and in all. The orchestrator also reads /proc/stat: CPU
used by other processes during a run is printed, because on a shared 2-vCPU machine it distorts every
figure (``--wait-quiet S`` waits for a quiet machine before each run, ``--retry-noisy N`` reruns a
run that other processes disturbed).

Run from the repository root::

    python -m bench.calls                          # 100 calls, 30 s each (≈ 40 s in all)
    python -m bench.calls --calls 25,50,100        # one fresh server per size, then a summary table
    python -m bench.calls --calls 25,50,100 --wait-quiet 600 --retry-noisy 5   # on a shared machine
    python -m bench.calls --calls 100 --profile py-spy     # top server CPU costs (pip install py-spy)
    python -m bench.calls --calls 100 --profile cprofile   # same with cProfile (slows the server)
    python -m bench.calls --calls 50 --profile tracemalloc # the memory a live call holds, by where
    python -m bench.calls --json results.json      # also write every figure as JSON

    python -m bench.calls --calls 100,200 --servers 2   # two server processes (as --workers 2), calls
                                                        # split between them; figures over both
    python -m bench.calls --servers 1,2 --per-server --calls 60,75,90 --caller-procs 2 --duration 20 \
        --wait-quiet 150 --retry-noisy 2   # 1 vs 2 processes at 60/120, 75/150, 90/180 calls, back to back

Figures from a profiled run are not comparable with an unprofiled one. With ``--servers N`` the calls
are dealt to N server processes in turn (each caller process talks to one of them, so there are at least
N caller processes), as ``switchboard serve --workers N`` spreads connections over its workers; lag and
lateness percentiles are over all of them, CPU is their sum. With several sizes the summary table gives
calls per core (100 % / the servers' CPU per call-second), the callers' CPU per call, and, per process
count, the most calls a run held (server lag p99 <= 20 ms, no outbound frame later than 40 ms, every
line answered) with the ratio of 2 processes to 1. On a 2-core machine that ratio is bounded by what the
callers and other processes take from the second core: read it beside the callers' and others' CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import gc
import itertools
import json
import logging
import math
import os
import random
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MARKER = "@@bench "  # prefix of the one-line JSON messages the child processes print on stdout
FRAME_S = 0.020
FRAME_SAMPLES = 160
LAG_PROBE_S = 0.010

TARGET_LAG_P99_MS = 20.0
TARGET_FRAME_LATE_MAX_MS = 40.0
TARGET_OVERHEAD_P95_MS = 15.0
CALLER_LAG_OK_P99_MS = 10.0  # above this the caller process itself distorts caller-side figures
QUIET_CORES = 0.15  # --wait-quiet: other processes' load under which a run may start
NOISY_PCT = 20.0  # others' load + steal (% of a core) during a run above which it is flagged as noisy
NOISY_PEAK_PCT = 60.0  # ... or other processes' CPU in any one second of it (% of a core)

DEFAULT_GREETING = "Hi there."
DEFAULT_REPLY = "Sure, I can help with that. Anything else?"
DEFAULT_TRANSCRIPT = "what are your opening hours"
EMBEDDED_LINE = "could i book a table please"  # --embedded (the script asks how many and when)


# ============================================================================================ shared


class Histogram:
    """Millisecond values in 0.1 ms buckets: cheap to fill, mergeable across processes, exact max."""

    RES_MS = 0.1

    def __init__(self) -> None:
        self.counts: collections.Counter[int] = collections.Counter()
        self.n = 0
        self.max_ms = -math.inf

    def add(self, ms: float) -> None:
        self.counts[math.floor(ms / self.RES_MS)] += 1
        self.n += 1
        if ms > self.max_ms:
            self.max_ms = ms

    def merge(self, other: Histogram) -> None:
        self.counts.update(other.counts)
        self.n += other.n
        self.max_ms = max(self.max_ms, other.max_ms)

    def percentile(self, p: float) -> float | None:
        """The upper edge of the bucket holding the p-th percentile (nearest rank); None when empty."""
        if not self.n:
            return None
        rank = max(1, math.ceil(p / 100 * self.n))
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                return min((bucket + 1) * self.RES_MS, self.max_ms)
        return self.max_ms

    def to_json(self) -> dict[str, Any]:
        return {"counts": {str(k): v for k, v in self.counts.items()}, "n": self.n, "max": self.max_ms}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Histogram:
        hist = cls()
        hist.counts.update({int(k): v for k, v in data["counts"].items()})
        hist.n = data["n"]
        hist.max_ms = data["max"] if data["max"] is not None else -math.inf
        return hist


class LagProbe:
    """Event-loop lag: sleeps `LAG_PROBE_S` in a loop and records how much longer each sleep took.

    Spikes (lag over `SPIKE_MS`) are also kept, as (monotonic time of the wake-up, lag ms): CLOCK_MONOTONIC
    is shared by the processes, so spikes of the server and of the callers can be matched."""

    SPIKE_MS = 10.0
    MAX_SPIKES = 200

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.hist = Histogram()
        self.spikes: list[tuple[float, float]] = []  # (monotonic time, lag ms)

    async def run(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(LAG_PROBE_S)
            lag_ms = (time.perf_counter() - start - LAG_PROBE_S) * 1000
            self.hist.add(lag_ms)
            if lag_ms > self.SPIKE_MS and len(self.spikes) < self.MAX_SPIKES:
                self.spikes.append((time.monotonic(), round(lag_ms, 1)))


class GcPauses:
    """Garbage-collector pauses per generation (a gc.callbacks hook): count, total and max ms."""

    def __init__(self) -> None:
        self._started = 0.0
        self.reset()

    def reset(self) -> None:
        self.stats = {gen: [0, 0.0, 0.0] for gen in range(3)}

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        ms = (time.perf_counter() - self._started) * 1000
        entry = self.stats[info["generation"]]
        entry[0] += 1
        entry[1] += ms
        entry[2] = max(entry[2], ms)


def _cpu_s() -> float:
    """This process's user + system CPU seconds (what os.times() adds up, at ns instead of 10 ms grain)."""
    return time.process_time()


def _machine_jiffies() -> tuple[int, int, int]:
    """(busy, steal, total) clock ticks of all CPUs since boot, from /proc/stat (zeros elsewhere)."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    steal = fields[7] if len(fields) > 7 else 0
    total = sum(fields[:8])  # guest time is already inside user
    return total - idle - steal, steal, total


class OthersSampler(threading.Thread):
    """CPU used by processes outside this benchmark's session (the orchestrator's children and theirs are
    inside it), per second, from /proc/*/stat: a short burst of someone else's work hides in a run's average
    but can stall a server for seconds when no core is spare."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.session = os.getsid(0)
        self.ticks = os.sysconf("SC_CLK_TCK")
        self.pcts: list[float] = []
        self._done = threading.Event()

    def _sample(self) -> dict[int, int]:
        seen: dict[int, int] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as stat:
                    data = stat.read()
            except OSError:
                continue
            fields = data[data.rindex(b")") + 2 :].split()
            if int(fields[3]) != self.session:  # utime + stime (not cutime: a reaped child counted twice)
                seen[int(entry.name)] = int(fields[11]) + int(fields[12])
        return seen

    def run(self) -> None:
        if not os.path.exists("/proc/self/stat"):
            return
        before, t0 = self._sample(), time.monotonic()
        while not self._done.wait(1.0):
            now, t1 = self._sample(), time.monotonic()
            used = sum(ticks - before.get(pid, 0) for pid, ticks in now.items())
            self.pcts.append(100 * used / self.ticks / (t1 - t0))
            before, t0 = now, t1

    def stop(self) -> float | None:
        self._done.set()
        self.join(5)
        return max(self.pcts) if self.pcts else None


def _emit(payload: dict[str, Any]) -> None:
    """One message to the orchestrator: a marked JSON line on stdout."""
    sys.stdout.write(MARKER + json.dumps(payload) + "\n")
    sys.stdout.flush()


def _new_loop_factory(name: str) -> Any:
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


# ============================================================================================ server


def _server_modules() -> dict[str, Any]:
    """What the server process needs from the code under test: this tree's, or with ``--compare REV`` an
    older commit's (run with that commit first on the path; before the package existed, modules sat at
    the top level: ``server``, ``pipeline.config``, ``providers.base``)."""
    try:
        from switchboard.config import parse_config
        from switchboard.core.messages import Transcript
        from switchboard.pipeline import player
        from switchboard.pipeline.call import Providers
        from switchboard.server import create_app, running
    except ImportError:  # 56c47fb and before
        from pipeline import player  # type: ignore[no-redef]
        from pipeline.call import Providers  # type: ignore[no-redef]
        from pipeline.config import parse_config  # type: ignore[no-redef]
        from providers.base import Transcript  # type: ignore[no-redef]

        from server import create_app, running  # type: ignore[no-redef]
    return {"parse_config": parse_config, "Transcript": Transcript, "player": player, "Providers": Providers,
            "create_app": create_app, "running": running}


def _bench_providers(transcript: str, reply: str, tts_rate: int, ms_per_char: float) -> Any:
    """Instant providers (tests/fakes/instant.py) that keep nothing per turn and render each text once."""
    from tests.fakes.instant import InstantLLM, InstantSTT, InstantTTS

    modules = _server_modules()
    Transcript, Providers = modules["Transcript"], modules["Providers"]

    class BenchSTT(InstantSTT):
        """InstantSTT without the `heard` list: a long run must not hoard every utterance."""

        async def transcribe(self, pcm: np.ndarray) -> Transcript:
            await asyncio.sleep(self.delay_s)
            return Transcript(self.text)

    class BenchLLM(InstantLLM):
        """InstantLLM keeping only the last request."""

        def __init__(self, reply: str) -> None:
            super().__init__(reply)
            self.requests = collections.deque(maxlen=1)  # type: ignore[assignment]

    class PrerenderedTTS(InstantTTS):
        """InstantTTS whose tone for each text is rendered once, then served from a cache."""

        def __init__(self, sample_rate: int, ms_per_char: float) -> None:
            super().__init__(sample_rate, ms_per_char)
            self._rendered: dict[str, np.ndarray] = {}

        def render(self, text: str) -> np.ndarray:
            pcm = self._rendered.get(text)
            if pcm is None:
                pcm = self._rendered[text] = super().render(text)
            return pcm

        async def stream(self, text: str) -> AsyncIterator[np.ndarray]:
            pcm = self.render(text)
            step = self.sample_rate // 10
            for start in range(0, len(pcm), step):
                yield pcm[start : start + step]

    return Providers(BenchSTT(transcript), BenchLLM(reply), PrerenderedTTS(tts_rate, ms_per_char))


def _turn_record(metrics: Any) -> dict[str, Any]:
    """The clock readings of a turn that the report needs (monotonic seconds)."""
    keys = ("speech_end", "endpoint", "stt_done", "llm_first_token", "first_chunk", "tts_first_byte",
            "first_audio_sent")
    record: dict[str, Any] = {key: getattr(metrics, key) for key in keys}
    record.update(kind=metrics.kind, error=metrics.error, interrupted=metrics.interrupted,
                  hedges=list(getattr(metrics, "hedges", [])),
                  failures=[failure.split(":")[0] + ": " + failure.split(":")[1].strip()
                            for failure in metrics.failures if ":" in failure])
    return record


def _profile_top(profiler: Any, limit: int = 25) -> str:
    import io
    import pstats

    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(limit)
    return out.getvalue()


OPENAI_STAGES = ("stt", "llm", "tts")  # --vendors openai: one fake per stage, each with its own latency


def _pipeline_config(opts: dict[str, Any]) -> dict[str, Any]:
    """The benchmarked pipeline (the stages are replaced by instant providers unless --vendors openai or
    --embedded)."""
    pipeline: dict[str, Any] = {
        "greeting": opts["greeting"],
        "apology": "Sorry, trouble.",
        "vad": {"end_silence_ms": opts["end_silence_ms"]},
        "turn": {"speculate_after_ms": opts["speculate_after_ms"]},
        "player": {"lead_ms": opts["lead_ms"]},
        "stt": {"provider": "pocketsphinx"},  # replaced by the instant providers
        "llm": {"provider": "scripted"},
        "tts": {"provider": "espeak"},
    }
    vendors = opts.get("vendor_urls")
    if vendors:  # the OpenAI adapters against the fakes of --vendors openai
        pipeline.update(
            system_prompt="You answer the phone.",
            stt={"provider": "openai", "model": "whisper-1", "base_url": vendors["stt"]},
            llm={"provider": "openai", "model": "gpt-4o-mini", "base_url": vendors["llm"]},
            tts={"provider": "openai", "model": "tts-1", "voice": "alloy", "base_url": vendors["tts"]})
        if opts.get("hedging") == "off" or opts.get("hedge_after_ms"):  # (left out: --compare's older code)
            pipeline["hedging"] = {"enabled": opts.get("hedging", "on") == "on",
                                   "hedge_after_ms": opts.get("hedge_after_ms") or {}}
    elif opts.get("embedded"):  # the bundled pipeline's real engines (Moonshine, the script, Piper)
        import yaml

        from switchboard.config import BUNDLED_CONFIG

        bundled = yaml.safe_load(BUNDLED_CONFIG.read_text(encoding="utf-8"))["pipelines"]["default"]
        pipeline.update(stt=bundled["stt"], llm=bundled["llm"], tts=bundled["tts"])
    return pipeline


def _rss_mb() -> float:
    """This process's resident memory now (MiB), from /proc/self/statm (0 elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return 0.0


class RssPeak:
    """The peak resident memory over the measured window, sampled twice a second (ru_maxrss can't be
    reset, so it would keep start-up's peak)."""

    def __init__(self) -> None:
        self.start_mb = self.peak_mb = _rss_mb()

    def reset(self) -> None:
        self.start_mb = self.peak_mb = _rss_mb()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self.peak_mb = max(self.peak_mb, _rss_mb())


class MemoryByCall:
    """--profile tracemalloc: what the live calls hold, by where it was allocated. A snapshot when the
    measured window begins, another each time more calls are live than before (at most every second);
    the difference between the last two, per live call, grouped by the innermost Switchboard line on each
    allocation's stack (else its innermost line: the library's own)."""

    DEPTH = 12  # frames kept per allocation: enough to reach Switchboard's line from inside a library

    def __init__(self, app: Any) -> None:
        import tracemalloc

        self.tracemalloc, self.app = tracemalloc, app
        self.base: Any = None
        self.peak: Any = None
        self.peak_calls = 0

    def begin(self) -> None:
        self.base, self.peak, self.peak_calls = self.tracemalloc.take_snapshot(), None, 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            live = len(self.app.state.calls)
            if self.base is not None and live > self.peak_calls:
                self.peak, self.peak_calls = self.tracemalloc.take_snapshot(), live

    def top(self, limit: int = 25) -> str:
        if self.base is None or self.peak is None or not self.peak_calls:
            return "tracemalloc: no calls were live at a snapshot"
        by_line: dict[str, int] = {}
        for stat in self.peak.compare_to(self.base, "traceback"):
            frames = list(stat.traceback)  # innermost last
            ours = next((f for f in reversed(frames) if "/switchboard/" in f.filename), frames[-1])
            key = f"{ours.filename.split('site-packages/')[-1].split('/switchboard/')[-1]}:{ours.lineno}"
            by_line[key] = by_line.get(key, 0) + stat.size_diff
        total = sum(by_line.values())
        per_call_kib = total / self.peak_calls / 1024
        rows = [f"traced memory held by {self.peak_calls} live calls: {per_call_kib:.0f} KiB per call "
                "(Python and numpy allocations; RSS adds the allocator's own)"]
        for key, size in sorted(by_line.items(), key=lambda item: -item[1])[:limit]:
            rows.append(f"  {size / self.peak_calls / 1024:8.1f} KiB/call  {key}")
        return "\n".join(rows)


async def _serve_main(opts: dict[str, Any]) -> None:
    """The server process: serve, measure between `begin` and `end`, print the figures as JSON."""
    import yaml

    modules = _server_modules()
    player_module, create_app, running = modules["player"], modules["create_app"], modules["running"]

    logging.basicConfig(level=opts["log_level"], format="%(levelname)s %(name)s: %(message)s")
    config = modules["parse_config"](yaml.safe_dump({"pipelines": {"default": _pipeline_config(opts)}}))
    providers: Any = None
    if not opts.get("embedded") and not opts.get("vendor_urls"):
        providers = {"default": _bench_providers(opts["transcript"], opts["reply"], opts["tts_rate"],
                                                 opts["ms_per_char"])}

    players: list[tuple[float, int]] = []
    started = [0]
    original_start, original_close = player_module.Player.start, player_module.Player.close

    def counting_start(self: Any) -> None:
        started[0] += 1
        original_start(self)

    async def recording_close(self: Any) -> None:  # the player's own lateness figure, per call
        players.append((self.max_lateness_s, self.frames_sent))
        await original_close(self)

    player_module.Player.start = counting_start  # type: ignore[method-assign]
    player_module.Player.close = recording_close  # type: ignore[method-assign]

    turns: list[Any] = []
    # The simulated callers sign nothing (as in tests): signature checks off whatever the environment
    # holds, and the loud start-up warning about it is expected here.
    logging.getLogger("switchboard.server").addFilter(
        lambda record: not str(record.msg).startswith("!!! INSECURE"))
    app = create_app(config, on_turn=turns.append, providers=providers, insecure_dev=True)
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[str] = asyncio.Queue()

    def read_commands() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(commands.put_nowait, line.strip())
        loop.call_soon_threadsafe(commands.put_nowait, "eof")

    async def expect(command: str) -> None:
        got = await commands.get()
        if got != command:
            raise SystemExit(f"bench server: expected {command!r}, got {got!r}")

    probe = LagProbe()
    rss = RssPeak()
    gc_pauses = GcPauses()
    gc.callbacks.append(gc_pauses)
    profiler = None
    if opts["profile"] == "cprofile":
        import cProfile

        profiler = cProfile.Profile()
    memory = None
    if opts["profile"] == "tracemalloc":
        import tracemalloc

        tracemalloc.start(MemoryByCall.DEPTH)
        memory = MemoryByCall(app)
    ws = {"ws": opts["ws"]} if opts.get("ws") else {}  # --server-ws (left out: --compare's older code)
    async with running(app, **ws) as port:
        threading.Thread(target=read_commands, daemon=True).start()
        probe_task = asyncio.create_task(probe.run(), name="lag-probe")
        rss_task = asyncio.create_task(rss.run(), name="rss")
        memory_task = asyncio.create_task(memory.run(), name="tracemalloc") if memory else None
        idle_cpu0, idle_wall0 = _cpu_s(), time.monotonic()
        _emit({"port": port, "pid": os.getpid()})
        await expect("begin")
        idle_cpu_pct = 100 * (_cpu_s() - idle_cpu0) / max(1e-9, time.monotonic() - idle_wall0)
        probe.reset()
        rss.reset()
        gc_pauses.reset()
        turns.clear()
        players.clear()
        started[0] = 0
        cpu0, wall0, times0 = _cpu_s(), time.monotonic(), os.times()
        if profiler is not None:
            profiler.enable()
        if memory is not None:
            memory.begin()
        _emit({"begun": True})
        await expect("end")
        deadline = time.monotonic() + 3.0
        # the callers have gone: let their sessions close (a session leaves app.state.calls before
        # its close() runs, so also wait for every player to close; there is no event to wait on)
        while (app.state.calls or len(players) < started[0]) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        if profiler is not None:
            profiler.disable()
        cpu, wall, times1 = _cpu_s() - cpu0, time.monotonic() - wall0, os.times()
        probe_task.cancel()
        rss_task.cancel()
        if memory_task is not None:
            memory_task.cancel()
        rss.peak_mb = max(rss.peak_mb, _rss_mb())
        _emit({
            "lag": probe.hist.to_json(),
            "lag_spikes": probe.spikes,
            "window_start": wall0,
            "cpu_s": cpu,
            "user_s": times1.user - times0.user,
            "system_s": times1.system - times0.system,
            "wall_s": wall,
            "idle_cpu_pct": idle_cpu_pct,
            "gc": gc_pauses.stats,
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_start_mb": rss.start_mb, "rss_peak_mb": rss.peak_mb,
            "turns": [_turn_record(t) for t in turns],
            "players": players,
            "calls_left_open": len(app.state.calls),
            "profile_top": (_profile_top(profiler) if profiler is not None
                            else memory.top() if memory is not None else None),
        })


# ============================================================================================ vendor fakes

# --vendors openai: the latencies of bench/turns.py (a short reply's vendor chain is ~0.85 s)
FAKE_STT_S, FAKE_LLM_FIRST_S, FAKE_LLM_TOKEN_S, FAKE_TTS_FIRST_S = 0.3, 0.3, 0.015, 0.15


def _fake_faults(mix: bool = False) -> dict[str, Any]:
    """Each stage's fixed latency as `tests.fakes.common.Faults`, keeping no record of the requests (a
    long run must not hoard them). `mix` (--faults mix): every 5th LLM request answers 500, every 7th TTS
    request stalls 20 s before its first byte."""
    from tests.fakes.common import Faults

    class Forgetful(list):  # type: ignore[type-arg]
        """Counts what is appended (the fault mix counts requests) and keeps none of it."""

        count = 0

        def append(self, item: Any) -> None:
            self.count += 1

        def __len__(self) -> int:
            return self.count

    def faults(**kwargs: Any) -> Faults:
        made = Faults(**kwargs)
        made.requests, made.paths, made.headers = Forgetful(), Forgetful(), Forgetful()
        return made

    llm_mix = {"fail_every": 5, "status": 500} if mix else {}
    tts_mix = {"stall_every": 7, "stall_s": 20.0} if mix else {}
    return {"stt": faults(first_byte_delay_s=FAKE_STT_S),
            "llm": faults(first_byte_delay_s=FAKE_LLM_FIRST_S, event_delay_s=FAKE_LLM_TOKEN_S, **llm_mix),
            "tts": faults(first_byte_delay_s=FAKE_TTS_FIRST_S, **tts_mix)}


async def _fakes_main(opts: dict[str, Any]) -> None:
    """The vendors process of --vendors openai: three fakes of OpenAI's API (tests/fakes/openai_fake.py),
    one per stage, on 127.0.0.1, each with its fixed latency, until stdin closes. Apart from the server
    so that their CPU is not counted as the server's."""
    from switchboard.server import running
    from tests.fakes.openai_fake import OpenAIScript, make_app

    class Forgetting(OpenAIScript):
        """Renders each text's speech once and records nothing per request (a long run would hoard it)."""

        def __getattribute__(self, name: str) -> Any:
            if name in ("chunks_sent", "uploads", "speech_sent"):
                return []
            return super().__getattribute__(name)

        def speech(self, text: str, speed: float = 1.0) -> np.ndarray:
            rendered: dict[tuple[str, float], np.ndarray] = self.__dict__.setdefault("rendered", {})
            if (text, speed) not in rendered:
                rendered[text, speed] = super().speech(text, speed)
            return rendered[text, speed]

    logging.basicConfig(level=logging.WARNING)
    faults = _fake_faults(opts.get("faults") == "mix")
    script = Forgetting(reply=opts["reply"], transcript=opts["transcript"], ms_per_char=opts["ms_per_char"])
    async with contextlib.AsyncExitStack() as stack:
        urls = {}
        for stage in OPENAI_STAGES:
            port = await stack.enter_async_context(running(make_app(faults[stage], script)))
            urls[stage] = f"http://127.0.0.1:{port}/v1"
        cpu0 = _cpu_s()
        _emit({"urls": urls, "pid": os.getpid()})
        await asyncio.to_thread(sys.stdin.read)  # until the orchestrator closes our stdin
        _emit({"cpu_s": _cpu_s() - cpu0,
               "requests": {stage: len(faults[stage].requests) for stage in OPENAI_STAGES}})


# ============================================================================================ callers


@dataclass
class CallerAudio:
    """Pre-encoded base64 μ-law payloads: the spoken line and a cycle of line-noise frames."""

    line: list[str]
    silence: list[str]

    @classmethod
    def build(cls, line_s: float, text: str | None = None) -> CallerAudio:
        """`text` spoken by the simulated caller's voice (--embedded: the recogniser must hear words),
        else `line_s` seconds of speech-like sound."""
        from switchboard.audio.g711 import ulaw_encode
        from switchboard.audio.resample import resample
        from switchboard.caller import DEFAULT_VOICE, synthesize_line
        from tests.speech import quiet, speech_like

        def frames(pcm: np.ndarray) -> list[str]:
            pcm = np.concatenate([pcm, np.zeros(-len(pcm) % FRAME_SAMPLES, dtype=np.int16)])
            data = ulaw_encode(pcm)
            return [base64.b64encode(data[i : i + FRAME_SAMPLES]).decode("ascii")
                    for i in range(0, len(data), FRAME_SAMPLES)]

        if text:
            pcm, rate = synthesize_line(text, DEFAULT_VOICE)
            return cls(line=frames(resample(pcm, rate, 8000)), silence=frames(quiet(1.0, seed=7)))
        return cls(line=frames(speech_like(line_s)), silence=frames(quiet(1.0, seed=7)))


@dataclass
class CallerStats:
    """What one caller process measured, merged over its calls."""

    send_late: Histogram = field(default_factory=Histogram)  # caller frame send time − its grid slot
    bot_late: Histogram = field(default_factory=Histogram)  # bot frame arrival − its pacing deadline
    response_ms: list[float] = field(default_factory=list)  # end of caller line → first bot frame
    calls: list[dict[str, Any]] = field(default_factory=list)


class SimCaller:
    """One simulated Twilio call: paced caller frames, bot playback clock, marks, a turn script."""

    WAIT_BOT, SPEAKING, DONE = "wait_bot", "speaking", "done"

    def __init__(self, index: int, opts: dict[str, Any], audio: CallerAudio, stats: CallerStats) -> None:
        self.index = index
        self.opts = opts
        self.audio = audio
        self.stats = stats
        self.lead_s = opts["lead_ms"] / 1000
        self.stream_sid = "MZ" + secrets.token_hex(16)
        self.call_sid = "CA" + secrets.token_hex(16)
        self.account_sid = "AC" + secrets.token_hex(16)
        self.ws: Any = None
        self.seq = 0
        self.frame = 0  # frames sent: frame k is the audio of [k·20 ms, (k+1)·20 ms) after t0
        self.t0 = 0.0
        self.phase = self.WAIT_BOT  # for the greeting (without one, the first tick starts the first line)
        self.phase_since = 0.0
        self.line_pos = 0
        self.line_end = 0.0  # when the caller's last line ended (end of its audio)
        self.lines_spoken = 0
        self.last_turn_s = 0.0
        self.turn_started = 0.0
        # bot playback
        self.play_end = 0.0
        self.marks: collections.deque[tuple[float, str]] = collections.deque()  # (plays out at, name)
        self.spurt_start: float | None = None  # arrival of the first frame of the current reply
        self.spurt_frames = 0
        self.bot_frames_in_phase = 0
        # per-call counts
        self.bot_frames = 0
        self.marks_echoed = 0
        self.clears = 0
        self.gaps = 0
        self.max_gap_ms = 0.0
        self.unanswered = 0
        self.answered = 0
        self.hung_up = False
        self.error: str | None = None
        self.connected_at: float | None = None
        self.closed_at: float | None = None
        self.greeting_ms: float | None = None  # start sent -> the greeting's first frame

    # --- wire -------------------------------------------------------------------------------------

    def _seq(self) -> int:
        self.seq += 1
        return self.seq

    def _handshake_messages(self) -> list[str]:
        return [json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}), json.dumps({
            "event": "start",
            "sequenceNumber": str(self._seq()),
            "streamSid": self.stream_sid,
            "start": {
                "streamSid": self.stream_sid,
                "accountSid": self.account_sid,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "customParameters": {"from": "+15550001111", "to": "+15550002222"},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        })]

    async def _handshake(self) -> None:
        for message in self._handshake_messages():
            await self.ws.send(message)

    def _media(self, payload: str) -> str:
        k = self.frame
        return (
            f'{{"event":"media","sequenceNumber":"{self._seq()}","streamSid":"{self.stream_sid}",'
            f'"media":{{"track":"inbound","chunk":"{k + 1}","timestamp":"{k * 20}","payload":"{payload}"}}}}'
        )

    def _mark_message(self, name: str) -> str:
        self.marks_echoed += 1
        return json.dumps({"event": "mark", "sequenceNumber": str(self._seq()), "streamSid": self.stream_sid,
                           "mark": {"name": name}})

    def _stop_message(self) -> str:
        return json.dumps({"event": "stop", "sequenceNumber": str(self._seq()), "streamSid": self.stream_sid,
                           "stop": {"accountSid": self.account_sid, "callSid": self.call_sid}})

    async def _echo_mark(self, name: str) -> None:
        await self.ws.send(self._mark_message(name))

    # --- the call ---------------------------------------------------------------------------------

    async def run(self, start_at: float) -> None:
        import websockets

        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        receiver: asyncio.Task[None] | None = None
        try:
            async with websockets.connect(self.opts["url"], compression=None, ping_interval=None,
                                          max_size=2**22, open_timeout=30) as ws:
                self.ws = ws
                self.connected_at = time.monotonic()
                await self._handshake()
                self.t0 = self.phase_since = time.monotonic()
                receiver = asyncio.create_task(self._receive(), name=f"recv-{self.index}")
                await self._send_loop(receiver)
                if not self.hung_up:
                    await ws.send(self._stop_message())
        except Exception as exc:  # a failed call is reported, it doesn't stop the others
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.closed_at = time.monotonic()
            if receiver is not None:
                receiver.cancel()
                await asyncio.gather(receiver, return_exceptions=True)
            self.stats.calls.append(self.summary())

    async def _send_loop(self, receiver: asyncio.Task[None]) -> None:
        """Frame k goes out at t0 + k·20 ms (all overdue frames at once when this loop runs late)."""
        while self.phase != self.DONE:
            due = self.t0 + self.frame * FRAME_S
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if receiver.done():  # the server hung up
                self.hung_up = True
                return
            now = time.monotonic()
            self.stats.send_late.add((now - due) * 1000)
            while self.t0 + self.frame * FRAME_S <= now and self.phase != self.DONE:
                await self.ws.send(self._media(self._next_payload()))
                self.frame += 1
            while self.marks and self.marks[0][0] <= now:
                await self._echo_mark(self.marks.popleft()[1])
            self._script(now)

    def _next_payload(self) -> str:
        if self.phase == self.SPEAKING:
            payload = self.audio.line[self.line_pos]
            self.line_pos += 1
            if self.line_pos == len(self.audio.line):  # the line's audio ends with this frame
                self.line_end = self.t0 + (self.frame + 1) * FRAME_S
                self._enter(self.WAIT_BOT, self.line_end)
            return payload
        return self.audio.silence[self.frame % len(self.audio.silence)]

    def _enter(self, phase: str, now: float) -> None:
        self.phase, self.phase_since = phase, now
        if phase == self.WAIT_BOT:
            self.spurt_start, self.spurt_frames, self.bot_frames_in_phase = None, 0, 0
        elif phase == self.SPEAKING:
            self.line_pos = 0
            self.lines_spoken += 1

    def _script(self, now: float) -> None:
        """Decide, each tick, whether the bot has finished and the caller speaks again or hangs up."""
        if self.phase != self.WAIT_BOT:
            return
        if self.lines_spoken or self.opts["greeting"]:  # the bot is due to speak: wait until it is done
            if self.bot_frames_in_phase:
                if self.marks or now < self.play_end + self.opts["pause_s"]:
                    return
            elif now - self.phase_since < self.opts["reply_timeout_s"]:
                return
            else:
                self.unanswered += self.lines_spoken > 0
        if self.lines_spoken:
            self.last_turn_s = now - self.turn_started
        turns, duration = self.opts["turns"], self.opts["duration_s"]
        if turns is not None:
            finished = self.lines_spoken >= turns
        else:
            finished = now - self.t0 + self.last_turn_s > duration
        if finished:
            self._enter(self.DONE, now)
        else:
            self.turn_started = now
            self._enter(self.SPEAKING, now)

    async def _receive(self) -> None:
        async for text in self.ws:
            now = time.monotonic()
            msg = json.loads(text)
            event = msg.get("event")
            if event == "media":
                for _ in range(payload_frames(len(msg["media"]["payload"]))):
                    self._on_bot_frame(now)
            elif event == "mark":
                name = msg["mark"]["name"]
                if self.play_end <= now:
                    await self._echo_mark(name)
                else:
                    self.marks.append((self.play_end, name))
            elif event == "clear":
                self.clears += 1
                self.play_end = now
                while self.marks:
                    await self._echo_mark(self.marks.popleft()[1])

    def _on_bot_frame(self, now: float) -> None:
        self.bot_frames += 1
        self.bot_frames_in_phase += 1
        if self.spurt_start is None:
            self.spurt_start, self.spurt_frames = now, 0
            if not self.lines_spoken and self.greeting_ms is None:
                self.greeting_ms = (now - self.t0) * 1000
            if self.phase == self.WAIT_BOT and self.lines_spoken:
                self.answered += 1
                self.stats.response_ms.append((now - self.line_end) * 1000)
        else:
            self.spurt_frames += 1
            due = self.spurt_start + max(0.0, self.spurt_frames * FRAME_S - self.lead_s)
            self.stats.bot_late.add((now - due) * 1000)
            if now > self.play_end:  # the caller's playback ran dry mid-reply: an audible gap
                self.gaps += 1
                self.max_gap_ms = max(self.max_gap_ms, (now - self.play_end) * 1000)
        self.play_end = max(self.play_end, now) + FRAME_S

    def summary(self) -> dict[str, Any]:
        seconds = (self.closed_at or 0) - (self.connected_at or self.closed_at or 0)
        return {
            "index": self.index, "seconds": seconds, "lines": self.lines_spoken, "answered": self.answered,
            "unanswered": self.unanswered, "frames_sent": self.frame, "bot_frames": self.bot_frames,
            "marks_echoed": self.marks_echoed, "clears": self.clears, "gaps": self.gaps,
            "max_gap_ms": self.max_gap_ms, "hung_up": self.hung_up, "error": self.error,
            "greeting_ms": self.greeting_ms,
        }


MEDIA_PREFIX = b'{"event": "media"'  # how the server's Twilio wire (json.dumps) begins a media message
PAYLOAD_KEY = b'"payload": "'
MEDIA_TAIL = 3  # "}} after the payload


def payload_frames(chars: int) -> int:
    """The 20 ms μ-law frames in a base64 payload of `chars` characters (the server sends up to three a
    message; each frame is one 20 ms step of the caller's playback clock)."""
    return max(1, round(chars * 3 / 640))


def media_frames(message: bytes) -> int:
    """The frames in a server media message as the Twilio wire writes it, without decoding its JSON."""
    at = message.find(PAYLOAD_KEY)
    return 1 if at < 0 else payload_frames(len(message) - at - len(PAYLOAD_KEY) - MEDIA_TAIL)


class LeanCaller(SimCaller):
    """The same call and script on bench/wsclient.py (``--caller-client lean``, the default).

    What changes is only the caller's own cost: a timer callback per call per 20 ms instead of a task
    sleeping, each frame written to the socket as one masked WebSocket frame without a library in between,
    and a bot message that begins like a media message is counted as one without decoding its JSON (neither
    client reads the bot's audio payload); anything else (marks, clears) is parsed as JSON. Bot frames are
    timed when their bytes are read, in the same callback that reads them."""

    async def run(self, start_at: float) -> None:
        from bench.wsclient import connect

        loop = self._loop = asyncio.get_running_loop()
        self._finished: asyncio.Future[None] = loop.create_future()
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        try:
            self.ws = await connect(self.opts["url"], self._on_message)
            self.connected_at = time.monotonic()
            for message in self._handshake_messages():
                self.ws.send_text(message.encode())
            self.t0 = self.phase_since = time.monotonic()
            self._tick()
            await self._finished
            if self.error is None and not self.hung_up:
                self.ws.send_text(self._stop_message().encode())
            await self.ws.close()
        except Exception as exc:  # a failed call is reported, it doesn't stop the others
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.closed_at = time.monotonic()
            if self.ws is not None:
                self.ws.abort()
            self.stats.calls.append(self.summary())

    def _finish(self) -> None:
        if not self._finished.done():
            self._finished.set_result(None)

    def _tick(self) -> None:
        """Frame k goes out at t0 + k·20 ms (all overdue frames at once when this runs late)."""
        ws = self.ws
        if ws.close_received or ws.closed.done():  # the server hung up
            self.hung_up = True
            self._finish()
            return
        try:
            now = time.monotonic()
            self.stats.send_late.add((now - (self.t0 + self.frame * FRAME_S)) * 1000)
            while self.t0 + self.frame * FRAME_S <= now and self.phase != self.DONE:
                ws.send_text(self._media(self._next_payload()).encode())
                self.frame += 1
            while self.marks and self.marks[0][0] <= now:
                ws.send_text(self._mark_message(self.marks.popleft()[1]).encode())
            self._script(now)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self.phase = self.DONE
        if self.phase == self.DONE:
            self._finish()
            return
        self._loop.call_later(max(0.0, self.t0 + self.frame * FRAME_S - time.monotonic()), self._tick)

    def _on_message(self, payload: bytes, now: float) -> None:
        if payload.startswith(MEDIA_PREFIX):
            for _ in range(media_frames(payload)):
                self._on_bot_frame(now)
            return
        msg = json.loads(payload)
        event = msg.get("event")
        if event == "media":
            for _ in range(payload_frames(len(msg["media"]["payload"]))):
                self._on_bot_frame(now)
        elif event == "mark":
            name = msg["mark"]["name"]
            if self.play_end <= now:
                self.ws.send_text(self._mark_message(name).encode())
            else:
                self.marks.append((self.play_end, name))
        elif event == "clear":
            self.clears += 1
            self.play_end = now
            while self.marks:
                self.ws.send_text(self._mark_message(self.marks.popleft()[1]).encode())


async def _callers_main(opts: dict[str, Any], audio: CallerAudio, go_at: float) -> dict[str, Any]:
    stats = CallerStats()
    probe = LagProbe()
    probe_task = asyncio.create_task(probe.run(), name="lag-probe")
    cpu0, times0 = _cpu_s(), os.times()
    kind = LeanCaller if opts.get("client", "lean") == "lean" else SimCaller
    poll_s = opts.get("poll_ms", 0) / 1000
    pacing = [bool(poll_s)]
    if poll_s:
        loop = asyncio.get_running_loop()
        next_at = [time.monotonic()]

        def pace() -> None:
            """Sleep to the next poll point, then let the loop run what came due and read what arrived
            (its I/O poll returns at once, since this is queued again): one wake-up per poll period."""
            next_at[0] += poll_s
            now = time.monotonic()
            if next_at[0] > now:
                time.sleep(next_at[0] - now)
            else:
                next_at[0] = now
            if pacing[0]:
                loop.call_soon(pace)

        loop.call_soon(pace)
    callers = [kind(index, opts, audio, stats) for index, _ in opts["calls"]]
    starts = [go_at + offset for _, offset in opts["calls"]]
    await asyncio.gather(*(c.run(start) for c, start in zip(callers, starts, strict=True)))
    pacing[0] = False
    probe_task.cancel()
    times1 = os.times()
    return {
        "cpu_s": _cpu_s() - cpu0,
        "system_s": times1.system - times0.system,
        "lag": probe.hist.to_json(),
        "lag_spikes": probe.spikes,
        "send_late": stats.send_late.to_json(),
        "bot_late": stats.bot_late.to_json(),
        "response_ms": stats.response_ms,
        "calls": stats.calls,
    }


def _run_callers(opts: dict[str, Any]) -> None:
    """The caller process: build audio, say ready, wait for the start time, run the calls, report."""
    import websockets  # noqa: F401  (import cost before `ready`)

    audio = CallerAudio.build(opts["line_s"], opts.get("caller_text"))
    binary = _build_c_callers() if opts.get("client") == "c" else None
    if opts.get("nice"):
        os.nice(opts["nice"])  # the load generator yields the cores to the servers it measures
    _emit({"ready": True})
    go_at = float(sys.stdin.readline())
    if binary is not None:
        _emit(_run_c_callers(binary, opts, audio, go_at))
        return
    with asyncio.Runner(loop_factory=_new_loop_factory(opts["loop"])) as runner:
        _emit(runner.run(_callers_main(opts, audio, go_at)))


C_CALLERS = Path(__file__).resolve().parent / "callers.c"


def _build_c_callers() -> Path:
    """Compile bench/callers.c (--caller-client c) into a temporary directory."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise SystemExit("--caller-client c needs a C compiler (cc or gcc); or use --caller-client lean")
    binary = Path(tempfile.mkdtemp(prefix="bench-callers-")) / "callers"
    subprocess.run([compiler, "-O2", "-o", str(binary), str(C_CALLERS), "-lm"], check=True)
    return binary


def _run_c_callers(binary: Path, opts: dict[str, Any], audio: CallerAudio, go_at: float) -> dict[str, Any]:
    """Run this process's calls in the C caller; its result has the shape of _callers_main's."""
    from urllib.parse import urlsplit

    url = urlsplit(opts["url"])
    if url.path != "/media-stream" or url.hostname != "127.0.0.1":
        raise SystemExit(f"--caller-client c calls ws://127.0.0.1:PORT/media-stream only, not {opts['url']}")
    turns = -1 if opts["turns"] is None else opts["turns"]
    lines = [f"{url.port} {opts.get('poll_ms') or 2.0} {go_at!r} {opts['duration_s']} {turns} "
             f"{opts['pause_s']} {opts['lead_ms']} {opts['reply_timeout_s']} {int(opts['greeting'])}",
             f"{len(audio.line)} {len(audio.silence)}", *audio.line, *audio.silence,
             str(len(opts["calls"])), *(f"{index} {offset!r}" for index, offset in opts["calls"])]
    spec = binary.parent / "input.txt"
    spec.write_text("\n".join(lines) + "\n")
    done = subprocess.run([str(binary), str(spec)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"C callers failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout)


# ============================================================================================ orchestrator


class Child:
    """A child process speaking marked JSON lines on stdout and plain lines on stdin. `code`: run the
    server of this file against another commit's tree (``--compare``): that tree alone on the path."""

    def __init__(self, name: str, argv: list[str], code: Path | None = None) -> None:
        self.name = name
        path = [str(code)] if code is not None else [str(ROOT), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        env.setdefault("OPENAI_API_KEY", "sk-bench-fake")  # --vendors openai: the fakes take any key
        self.proc = subprocess.Popen(argv, cwd=code or ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(MARKER):
                return json.loads(line[len(MARKER):])
            sys.stderr.write(f"[{self.name}] {line}")
        raise RuntimeError(f"{self.name} exited (code {self.proc.wait()}) before reporting")

    def close_stdin(self) -> None:
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.close()

    def finish(self, timeout: float = 10.0) -> None:
        self.close_stdin()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _self_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "bench.calls", *args]


def _server_argv(code: Path | None, opts: dict[str, Any]) -> list[str]:
    """This file's server; against another tree (``--compare``) it is run by path, so that `bench`,
    `tests` and `switchboard` (or the top-level modules of older commits) are that tree's."""
    if code is None:
        return _self_argv("--serve", json.dumps(opts))
    runner = "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    return [sys.executable, "-c", runner, str(Path(__file__).resolve()), "--serve", json.dumps(opts)]


class PySpy:
    """py-spy sampling the server for the measured window (non-blocking, so the server isn't paused)."""

    def __init__(self, pid: int, path: Path) -> None:
        self.path = path
        self.proc = subprocess.Popen(
            [_py_spy(), "record", "--pid", str(pid), "--rate", "250", "--nonblocking", "--format", "raw",
             "-o", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return "py-spy did not stop"
        if not self.path.exists():
            return f"py-spy wrote nothing: {err.strip()[-500:]}"
        top = _collapsed_top(self.path.read_text().splitlines())
        return f"{top}\n(raw collapsed stacks, e.g. for a flame graph: {self.path})"


def _py_spy() -> str:
    """py-spy next to this Python (the venv) if it is there, else from PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else (shutil.which("py-spy") or "py-spy")


def _collapsed_top(lines: Iterable[str], limit: int = 25) -> str:
    """Top functions by self and by inclusive samples from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame_name(frame) for frame in stack.split(";")]
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    if not total:
        return "py-spy: no samples"
    rows = [f"py-spy: {total} samples of the server's busy time (idle excluded)", "", "  self%  function"]
    rows += [f"  {100 * n / total:5.1f}  {name}" for name, n in own.most_common(limit)]
    rows += ["", "  incl%  function"]
    rows += [f"  {100 * n / total:5.1f}  {name}" for name, n in inclusive.most_common(limit)]
    return "\n".join(rows)


def _frame_name(frame: str) -> str:
    """'send (websockets/legacy/protocol.py:123)' -> 'send (websockets/legacy/protocol.py)'."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", str(ROOT) + "/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})" if path else name


def wait_for_quiet(max_busy_cores: float, timeout_s: float) -> float | None:
    """Wait until the machine's load (busy + steal) is under `max_busy_cores` (1 s samples); returns the
    last sample (None without /proc/stat). Gives up after `timeout_s` and runs anyway."""
    deadline = time.monotonic() + timeout_s
    next_note = time.monotonic()
    cpus = os.cpu_count() or 1
    while True:
        busy0, steal0, total0 = _machine_jiffies()
        time.sleep(1.0)
        busy1, steal1, total1 = _machine_jiffies()
        if total1 == total0:
            return None
        busy = cpus * (busy1 - busy0 + steal1 - steal0) / (total1 - total0)
        if busy <= max_busy_cores or time.monotonic() > deadline:
            return busy
        if time.monotonic() >= next_note:
            print(f"(waiting for a quiet machine: others + steal use {100 * busy:.0f} % of a core)",
                  file=sys.stderr, flush=True)
            next_note = time.monotonic() + 30


def run_once(n_calls: int, n_servers: int, args: argparse.Namespace,
             code: Path | None = None) -> dict[str, Any]:
    """One benchmark run: a fresh server (on `code`, another commit's tree, with ``--compare``), `n_calls`
    calls, the raw results from every process."""
    vendors: Child | None = None
    vendor_urls = None
    if args.vendors == "openai":
        vendors = Child("vendors", _self_argv("--fakes", json.dumps(
            {"reply": args.reply, "transcript": DEFAULT_TRANSCRIPT, "ms_per_char": args.ms_per_char,
             "faults": args.faults})))
        vendor_urls = vendors.read()["urls"]
    server_opts = {
        "log_level": args.log_level, "greeting": args.greeting, "transcript": DEFAULT_TRANSCRIPT,
        "reply": args.reply, "end_silence_ms": args.end_silence_ms, "lead_ms": args.lead_ms,
        "tts_rate": 24000, "ms_per_char": args.ms_per_char, "loop": args.server_loop,
        "profile": args.profile if args.profile in ("cprofile", "tracemalloc") else None,
        "embedded": args.embedded,
        "speculate_after_ms": args.speculate_after_ms, "vendor_urls": vendor_urls,
        "hedging": getattr(args, "hedging_mode", "on"), "hedge_after_ms": args.hedge_after,
        "ws": getattr(args, "ws_mode", None),
    }
    servers = [Child(f"server{k}", _server_argv(code, server_opts), code) for k in range(n_servers)]
    callers: list[Child] = []
    spy: PySpy | None = None
    try:
        hellos = [server.read() for server in servers]
        hello = hellos[0]
        rng = random.Random(args.seed)
        offsets = sorted(rng.uniform(0, args.stagger) for _ in range(n_calls))
        procs = max(1, min(max(args.caller_procs, n_servers), n_calls))
        for p in range(procs):
            caller_opts = {
                "url": f"ws://127.0.0.1:{hellos[p % len(hellos)]['port']}/media-stream",
                "calls": [(i, offsets[i]) for i in range(p, n_calls, procs)],
                "duration_s": args.duration, "turns": args.turns, "line_s": args.line_s,
                "pause_s": args.pause, "lead_ms": args.lead_ms, "reply_timeout_s": 10.0,
                "greeting": bool(args.greeting), "loop": args.caller_loop, "client": args.caller_client,
                "poll_ms": args.caller_poll_ms if args.caller_client != "websockets" else 0,
                "caller_text": args.caller_text if args.embedded else None, "nice": args.caller_nice,
            }
            callers.append(Child(f"callers{p}", _self_argv("--callers", json.dumps(caller_opts))))
        for caller in callers:
            caller.read()
        for server in servers:
            server.send("begin")
        for server in servers:
            server.read()
        if args.profile == "py-spy":
            spy = PySpy(hello["pid"], Path(tempfile.mkdtemp()) / "server.collapsed")
        go_at = time.monotonic() + 0.3  # CLOCK_MONOTONIC is shared by all processes on the machine
        jiffies0, machine_t0 = _machine_jiffies(), time.monotonic()
        sampler = OthersSampler()
        sampler.start()
        for caller in callers:
            caller.send(repr(go_at))
        caller_results = [caller.read() for caller in callers]
        jiffies1, machine_wall = _machine_jiffies(), time.monotonic() - machine_t0
        others_peak = sampler.stop()
        profile_top = spy.stop() if spy is not None else None
        for server in servers:
            server.send("end")
        server_result = merge_servers([server.read() for server in servers])
        if profile_top:
            server_result["profile_top"] = profile_top
        vendors_cpu = vendor_requests = None
        if vendors is not None:
            vendors.close_stdin()
            vendors_end = vendors.read()
            vendors_cpu, vendor_requests = vendors_end["cpu_s"], vendors_end.get("requests")
    finally:
        for child in (*callers, *servers, *([vendors] if vendors else [])):
            child.finish()
    busy, steal, total = (b - a for a, b in zip(jiffies0, jiffies1, strict=True))
    cpus = os.cpu_count() or 1
    machine = {"cpus": cpus, "wall_s": machine_wall,  # CPU-seconds used on the whole machine
               "busy_s": cpus * machine_wall * busy / total if total else None,
               "steal_s": cpus * machine_wall * steal / total if total else None,
               "others_peak_pct": others_peak}
    return {"calls": n_calls, "caller_procs": len(callers), "servers": len(servers), "server": server_result,
            "callers": caller_results, "machine": machine, "vendors_cpu_s": vendors_cpu,
            "vendor_requests": vendor_requests}


def merge_servers(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Several server processes' figures as one server's: histograms merged, lists joined, CPU summed."""
    if len(results) == 1:
        return results[0]
    lag = Histogram()
    for result in results:
        lag.merge(Histogram.from_json(result["lag"]))
    gc_stats: dict[str, list[float]] = {}
    for result in results:
        for gen, (n, total, top) in result["gc"].items():
            entry = gc_stats.setdefault(gen, [0, 0.0, 0.0])
            entry[0], entry[1], entry[2] = entry[0] + n, entry[1] + total, max(entry[2], top)
    summed = ("cpu_s", "user_s", "system_s", "idle_cpu_pct", "calls_left_open", "rss_start_mb", "rss_peak_mb")
    joined = ("lag_spikes", "turns", "players")
    return {
        **{key: sum(result[key] for result in results) for key in summed},
        **{key: [item for result in results for item in result[key]] for key in joined},
        "lag": lag.to_json(), "gc": gc_stats,
        "window_start": min(result["window_start"] for result in results),
        "wall_s": max(result["wall_s"] for result in results),
        "maxrss_mb": max(result["maxrss_mb"] for result in results),
        "profile_top": None,
    }


# ============================================================================================ report


def _pct(values: list[float], p: float) -> float | None:
    return float(np.percentile(values, p)) if values else None


def _ms(value: float | None) -> str:
    return "   n/a" if value is None else f"{value:6.1f}"


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _mem_per_call(fig: dict[str, Any]) -> str:
    start, peak = fig.get("server_rss_start_mb"), fig.get("server_rss_peak_mb")
    return "n/a" if start is None or peak is None else f"{(peak - start) / fig['calls']:.2f}"


def _pct2(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _ratio(fig: dict[str, Any]) -> str:
    """Caller CPU per call as a fraction of the server's: what the load generator takes from the cores."""
    server, caller = fig["server_cpu_pct_per_call"], fig["caller_cpu_pct_per_call"]
    return f"{caller / server:.2f}" if server and caller is not None else "n/a"


def _verdict(value: float | None, limit: float) -> str:
    if value is None:
        return "n/a"
    return "met" if value <= limit else "MISSED"


def _shared_stalls(server: list[tuple[float, float]], callers: list[tuple[float, float]]) -> list[float]:
    """Server lag spikes (ms) that overlap a caller-process stall: both processes stopped at once, i.e. the
    machine (other load, the hypervisor) stalled, not Switchboard."""
    shared = []
    for woke, ms in server:
        start = woke - ms / 1000
        if any(c_woke - c_ms / 1000 < woke and start < c_woke for c_woke, c_ms in callers):
            shared.append(ms)
    return shared


def analyse(run: dict[str, Any], end_silence_ms: int) -> dict[str, Any]:
    """Turn one run's raw results into the figures."""
    server, callers = run["server"], run["callers"]
    lag = Histogram.from_json(server["lag"])
    caller_lag, send_late, bot_late = Histogram(), Histogram(), Histogram()
    calls: list[dict[str, Any]] = []
    response: list[float] = []
    caller_cpu = caller_system = 0.0
    caller_spikes: list[tuple[float, float]] = []
    for result in callers:
        caller_spikes += result["lag_spikes"]
        caller_lag.merge(Histogram.from_json(result["lag"]))
        send_late.merge(Histogram.from_json(result["send_late"]))
        bot_late.merge(Histogram.from_json(result["bot_late"]))
        calls += result["calls"]
        response += result["response_ms"]
        caller_cpu += result["cpu_s"]
        caller_system += result.get("system_s", 0.0)
    replies = [t for t in server["turns"]
               if t["kind"] == "reply" and t["first_audio_sent"] and t["speech_end"]]
    overhead = [(t["first_audio_sent"] - t["speech_end"]) * 1000 - end_silence_ms for t in replies]
    endpointing = [(t["endpoint"] - t["speech_end"]) * 1000 - end_silence_ms for t in replies]
    processing = [(t["first_audio_sent"] - t["endpoint"]) * 1000 for t in replies]
    stage_names = ("endpoint", "stt_done", "llm_first_token", "first_chunk", "tts_first_byte",
                   "first_audio_sent")
    stages = {}
    for before, after in itertools.pairwise(stage_names):
        gaps = [(t[after] - t[before]) * 1000 for t in replies if t[after] and t[before]]
        stages[f"{before}->{after}"] = (_pct(gaps, 50), _pct(gaps, 95))
    call_seconds = sum(c["seconds"] for c in calls)
    player_late = [late * 1000 for late, _ in server["players"]]
    kernel_s, user_s = server["system_s"], server["user_s"]
    machine = run["machine"]
    other = steal = None
    vendors_cpu = run.get("vendors_cpu_s") or 0.0  # --vendors openai: the fakes' process
    if machine["busy_s"] is not None:  # loopback TCP work in softirq context also lands here
        other = (machine["busy_s"] - server["cpu_s"] - caller_cpu - vendors_cpu) / machine["wall_s"]
        steal = machine["steal_s"] / machine["wall_s"]
    return {
        "calls": run["calls"],
        "servers": run.get("servers", 1),
        "caller_procs": run["caller_procs"],
        "wall_s": server["wall_s"],
        "call_seconds": call_seconds,
        "lag_spikes": [(round(t - server["window_start"], 2), ms) for t, ms in server["lag_spikes"]],
        "shared_stalls": _shared_stalls(server["lag_spikes"], caller_spikes),
        "caller_stall_max_ms": max((ms for _, ms in caller_spikes), default=0.0),
        "lag_p50_ms": lag.percentile(50), "lag_p99_ms": lag.percentile(99), "lag_max_ms": lag.max_ms,
        "frame_late_p99_ms": bot_late.percentile(99),
        "frame_late_max_ms": bot_late.max_ms if bot_late.n else None,
        "frames_measured": bot_late.n,
        "player_max_lateness_ms": max(player_late) if player_late else None,
        "player_lateness_p99_of_calls_ms": _pct(player_late, 99),
        "audible_gaps": sum(c["gaps"] for c in calls),
        "max_gap_ms": max((c["max_gap_ms"] for c in calls), default=0.0),
        "server_cpu_s": server["cpu_s"],
        "server_cpu_pct_total": 100 * server["cpu_s"] / server["wall_s"],
        "server_system_share_pct": 100 * kernel_s / max(1e-9, user_s + kernel_s),
        "server_cpu_pct_per_call": 100 * server["cpu_s"] / call_seconds if call_seconds else None,
        "server_idle_cpu_pct": server["idle_cpu_pct"],
        "server_maxrss_mb": server["maxrss_mb"],
        "server_rss_start_mb": server.get("rss_start_mb"), "server_rss_peak_mb": server.get("rss_peak_mb"),
        "vendors_cpu_pct": (100 * vendors_cpu / server["wall_s"]
                            if run.get("vendors_cpu_s") is not None else None),
        "server_gc": server["gc"],
        "overhead_p50_ms": _pct(overhead, 50), "overhead_p95_ms": _pct(overhead, 95),
        "overhead_max_ms": max(overhead) if overhead else None,
        "endpointing_p50_ms": _pct(endpointing, 50), "endpointing_p95_ms": _pct(endpointing, 95),
        "processing_p50_ms": _pct(processing, 50), "processing_p95_ms": _pct(processing, 95),
        "processing_p90_ms": _pct(processing, 90),
        "stages_p50_p95_ms": stages,
        "reply_turns": len(replies),
        "turn_errors": sum(t["error"] is not None for t in server["turns"]),
        "interrupted": sum(bool(t["interrupted"]) for t in server["turns"]),
        "caller_response_p50_ms": _pct(response, 50), "caller_response_p95_ms": _pct(response, 95),
        "caller_lag_p99_ms": caller_lag.percentile(99), "caller_lag_max_ms": caller_lag.max_ms,
        "caller_send_late_p99_ms": send_late.percentile(99), "caller_send_late_max_ms": send_late.max_ms,
        "caller_cpu_pct": 100 * caller_cpu / server["wall_s"],
        "caller_cpu_pct_per_call": 100 * caller_cpu / call_seconds if call_seconds else None,
        "caller_system_share_pct": 100 * caller_system / max(1e-9, caller_cpu),
        "cpus": machine["cpus"],
        "other_load_pct": 100 * other if other is not None else None,
        "steal_pct": 100 * steal if steal is not None else None,
        "others_peak_pct": machine.get("others_peak_pct"),
        "lines": sum(c["lines"] for c in calls), "answered": sum(c["answered"] for c in calls),
        "unanswered": sum(c["unanswered"] for c in calls),
        "bot_frames_received": sum(c["bot_frames"] for c in calls),
        "bot_frames_sent": sum(frames for _, frames in server["players"]),
        "marks_echoed": sum(c["marks_echoed"] for c in calls), "clears": sum(c["clears"] for c in calls),
        "call_errors": [c["error"] for c in calls if c["error"]],
        "hung_up_by_server": sum(c["hung_up"] for c in calls),
        "calls_left_open": server["calls_left_open"],
        "profile_top": server.get("profile_top"),
        **_fault_figures(run, calls, response),
    }


TARGET_GREETING_MS = 1000.0  # --faults mix: every greeting heard within 1 s
TARGET_REPLY_P90_MS, TARGET_REPLY_MAX_MS = 2500.0, 6000.0


def _fault_figures(run: dict[str, Any], calls: list[dict[str, Any]], response: list[float]) -> dict[str, Any]:
    """Under vendor faults: when each caller heard the greeting (the caller's clock from its start message;
    the C callers don't time it: then the server's, greeting committed -> first frame sent), the reply
    delays the callers measured, the hedges the server made and the requests each fake vendor got."""
    greetings = [c["greeting_ms"] for c in calls if c.get("greeting_ms") is not None]
    clock = "caller"
    turns = run["server"]["turns"]
    if not greetings and not any("greeting_ms" in c for c in calls):
        clock = "server"
        greetings = [(t["first_audio_sent"] - t["endpoint"]) * 1000 for t in turns
                     if t["kind"] == "greeting" and t["first_audio_sent"] and t["endpoint"]]
    hedges = [h for t in turns for h in t.get("hedges") or []]
    replies = [t for t in turns if t["kind"] == "reply" and t["first_audio_sent"] and t["speech_end"]]
    return {
        "greeting_clock": clock, "greetings_heard": len(greetings),
        "greetings_within_1s": sum(ms <= TARGET_GREETING_MS for ms in greetings),
        "greeting_p50_ms": _pct(greetings, 50), "greeting_max_ms": max(greetings) if greetings else None,
        "caller_response_p90_ms": _pct(response, 90), "caller_response_max_ms": max(response, default=None),
        "hedges": len(hedges),
        "hedges_by_stage": {stage: sum(h.startswith(stage + " ") for h in hedges) for stage in OPENAI_STAGES},
        "hedges_won": sum(h.endswith(": won") for h in hedges),
        "turns_with_failures": sum(bool(t.get("failures")) for t in turns),
        "vendor_requests": run.get("vendor_requests"),
        "slowest_replies": [  # what held up the three slowest replies (server clock: speech end -> audio)
            {"ms": round((t["first_audio_sent"] - t["speech_end"]) * 1000), "failures": t.get("failures"),
             "hedges": t.get("hedges")}
            for t in sorted(replies, key=lambda t: t["speech_end"] - t["first_audio_sent"])[:3]],
    }


def report(fig: dict[str, Any], args: argparse.Namespace) -> str:
    """The figures of one run as text, each beside its target."""
    callers_ok = (fig["caller_lag_p99_ms"] or 0) <= CALLER_LAG_OK_P99_MS
    rows = [
        f"== {fig['calls']} calls, {fig['wall_s']:.1f} s window, {fig['call_seconds']:.0f} call-seconds; "
        f"{fig.get('servers', 1)} server process(es) on {args.server_loop}, {fig['caller_procs']} caller "
        "process(es) ==",
        f"server event-loop lag (10 ms probe)  p50 {_ms(fig['lag_p50_ms'])}  p99 {_ms(fig['lag_p99_ms'])}"
        f"  max {_ms(fig['lag_max_ms'])} ms   target p99 <= {TARGET_LAG_P99_MS:.0f} ms: "
        f"{_verdict(fig['lag_p99_ms'], TARGET_LAG_P99_MS)}",
        f"  lag over {LagProbe.SPIKE_MS:.0f} ms: {len(fig['lag_spikes'])} samples"
        + (f" ({len(fig['shared_stalls'])} while a caller process stalled too: machine-wide, longest "
           f"{max(fig['shared_stalls'], default=0):.0f} ms)" if fig["shared_stalls"] else "")
        + (", at (s into the run, ms): " + " ".join(f"{t}:{ms}" for t, ms in fig["lag_spikes"][:12])
           if fig["lag_spikes"] else ""),
        f"outbound frame lateness (caller)     p99 {_ms(fig['frame_late_p99_ms'])}  max "
        f"{_ms(fig['frame_late_max_ms'])} ms   target max <= {TARGET_FRAME_LATE_MAX_MS:.0f} ms: "
        f"{_verdict(fig['frame_late_max_ms'], TARGET_FRAME_LATE_MAX_MS)}"
        f"   ({fig['frames_measured']} frames)",
        f"  server Player.max_lateness_s       max {_ms(fig['player_max_lateness_ms'])} ms, p99 over calls "
        f"{_ms(fig['player_lateness_p99_of_calls_ms'])} ms; audible gaps at the caller: {fig['audible_gaps']}"
        f" (longest {fig['max_gap_ms']:.1f} ms)",
        f"server CPU                           {fig['server_cpu_pct_per_call']:.2f} % of one core per call "
        f"({fig['server_cpu_pct_total']:.0f} % in all, {fig['server_system_share_pct']:.0f} % of it in the "
        f"kernel; idle server {fig['server_idle_cpu_pct']:.1f} %; max RSS {fig['server_maxrss_mb']:.0f} MB)",
        f"server memory                        RSS {_mb(fig.get('server_rss_start_mb'))} MiB before the "
        "calls, "
        f"peak {_mb(fig.get('server_rss_peak_mb'))} MiB: {_mem_per_call(fig)} MiB per call"
        + (f"; the vendor fakes' process used {fig['vendors_cpu_pct']:.0f} % of a core"
           if fig.get("vendors_cpu_pct") is not None else ""),
        "  GC pauses (count/total/max ms): " + ", ".join(
            f"gen{gen} {n}/{total:.0f}/{top:.1f}" for gen, (n, total, top) in fig["server_gc"].items()),
        f"pipeline overhead (v2v - {args.end_silence_ms} ms)   p50 {_ms(fig['overhead_p50_ms'])}  p95 "
        f"{_ms(fig['overhead_p95_ms'])}  max {_ms(fig['overhead_max_ms'])} ms   target p95 <= "
        f"{TARGET_OVERHEAD_P95_MS:.0f} ms: {_verdict(fig['overhead_p95_ms'], TARGET_OVERHEAD_P95_MS)}"
        f"   ({fig['reply_turns']} turns)",
        f"  = endpoint - speech end - silence  p50 {_ms(fig['endpointing_p50_ms'])}  p95 "
        f"{_ms(fig['endpointing_p95_ms'])} ms   (VAD hangover inside the silence + frame jitter)",
        f"  + endpoint -> first frame sent     p50 {_ms(fig['processing_p50_ms'])}  p90 "
        f"{_ms(fig['processing_p90_ms'])}  p95 {_ms(fig['processing_p95_ms'])} ms   "
        f"(the processing part alone vs p95 <= "
        f"{TARGET_OVERHEAD_P95_MS:.0f} ms: {_verdict(fig['processing_p95_ms'], TARGET_OVERHEAD_P95_MS)})",
        "    by stage (p50/p95 ms; negative = done before the endpoint, by a speculative turn): " + ", ".join(
            f"{name} {_ms(p50).strip()}/{_ms(p95).strip()}"
            for name, (p50, p95) in fig["stages_p50_p95_ms"].items()),
        f"caller-measured response (line end -> first bot frame)  p50 {_ms(fig['caller_response_p50_ms'])}"
        f"  p95 {_ms(fig['caller_response_p95_ms'])} ms",
        f"callers: loop lag p99 {_ms(fig['caller_lag_p99_ms'])} max {_ms(fig['caller_lag_max_ms'])} ms; "
        f"frame send lateness p99 {_ms(fig['caller_send_late_p99_ms'])} max "
        f"{_ms(fig['caller_send_late_max_ms'])} ms; CPU {fig['caller_cpu_pct']:.0f} % of one core "
        f"({_pct2(fig['caller_cpu_pct_per_call'])} % per call, {fig['caller_system_share_pct']:.0f} % of it "
        f"in the kernel; {_ratio(fig)} of the server's per call) -> "
        + ("kept pace" if callers_ok else "THE CALLERS ARE A BOTTLENECK: caller-side figures are inflated")
        + (f" (but they stalled for up to {fig['caller_stall_max_ms']:.0f} ms at least once: the caller-side"
           " lateness max includes that)" if fig["caller_stall_max_ms"] > TARGET_FRAME_LATE_MAX_MS else ""),
        _machine_line(fig),
        f"sanity: lines {fig['lines']}, answered {fig['answered']}, unanswered {fig['unanswered']}, "
        f"turn errors {fig['turn_errors']}, interrupted {fig['interrupted']}, clears {fig['clears']}, "
        f"bot frames sent/received {fig['bot_frames_sent']}/{fig['bot_frames_received']}, "
        f"call errors {len(fig['call_errors'])}, calls left open {fig['calls_left_open']}",
    ]
    if fig["call_errors"]:
        rows.append(f"  first call error: {fig['call_errors'][0]}")
    if args.vendors == "openai":
        rows += fault_lines(fig)
    if fig["profile_top"]:
        rows += ["", "server profile (measured window):", fig["profile_top"]]
    return "\n".join(rows)


def fault_lines(fig: dict[str, Any]) -> list[str]:
    """--vendors openai: the figures that matter when vendors misbehave, beside the targets."""
    requests = fig.get("vendor_requests") or {}
    within, heard = fig["greetings_within_1s"], fig["greetings_heard"]
    return [
        f"vendor faults: {fig.get('faults', 'none')}; hedging {fig.get('hedging', 'on')}"
        + (f" (hedge_after_ms {fig['hedge_after_ms']})" if fig.get("hedge_after_ms") else ""),
        f"  greeting heard within 1 s ({fig['greeting_clock']} clock): {within} of {fig['calls']} calls "
        f"(heard {heard}; p50 {_ms(fig['greeting_p50_ms'])}, worst {_ms(fig['greeting_max_ms'])} ms)   "
        f"target every call: {'met' if within == fig['calls'] else 'MISSED'}",
        f"  reply (end of line -> first bot frame, caller) p50 {_ms(fig['caller_response_p50_ms'])}  "
        f"p90 {_ms(fig['caller_response_p90_ms'])}  worst {_ms(fig['caller_response_max_ms'])} ms   targets "
        f"p90 <= {TARGET_REPLY_P90_MS:.0f}: {_verdict(fig['caller_response_p90_ms'], TARGET_REPLY_P90_MS)}, "
        f"worst <= {TARGET_REPLY_MAX_MS:.0f}: {_verdict(fig['caller_response_max_ms'], TARGET_REPLY_MAX_MS)}",
        f"  lines answered {fig['answered']} of {fig['lines']} (unanswered {fig['unanswered']}); turns with "
        f"a vendor failure {fig['turns_with_failures']}, turn errors (apology) {fig['turn_errors']}",
        f"  hedges {fig['hedges']} ({', '.join(f'{k} {v}' for k, v in fig['hedges_by_stage'].items())}; "
        f"the hedge answered first {fig['hedges_won']}); requests the fake vendors got: "
        + (", ".join(f"{stage} {n}" for stage, n in requests.items()) or "n/a"),
        *(f"  slow reply {turn['ms']} ms (server clock): failures {turn['failures'] or 'none'}; hedges "
          f"{turn['hedges'] or 'none'}" for turn in fig.get("slowest_replies") or []),
    ]


def fault_table(figures: list[dict[str, Any]]) -> str:
    """--hedging off,on: the fault figures of each run side by side."""
    head = (f"{'calls':>5} {'faults':>6} {'hedging':>7}  {'greet<=1s':>9} {'greet max':>9}  {'reply p50':>9} "
            f"{'p90':>7} {'worst':>7}  {'answered':>9}  {'hedges':>6}  requests stt/llm/tts")
    rows = [head, "-" * len(head)]
    for fig in figures:
        requests = fig.get("vendor_requests") or {}
        rows.append(
            f"{fig['calls']:>5} {fig.get('faults', 'none'):>6} {fig.get('hedging', 'on'):>7}  "
            f"{fig['greetings_within_1s']:>4}/{fig['calls']:<4} {_ms(fig['greeting_max_ms']):>9}  "
            f"{_ms(fig['caller_response_p50_ms']):>9} {_ms(fig['caller_response_p90_ms']):>7} "
            f"{_ms(fig['caller_response_max_ms']):>7}  {fig['answered']:>4}/{fig['lines']:<4}  "
            f"{fig['hedges']:>6}  " + "/".join(str(requests.get(stage, "?")) for stage in OPENAI_STAGES))
    rows.append(f"targets (--faults mix, 100 calls): every greeting within 1 s, reply p90 <= "
                f"{TARGET_REPLY_P90_MS:.0f} ms, worst <= {TARGET_REPLY_MAX_MS:.0f} ms, every line answered; "
                "with no faults, hedging makes no extra request")
    return "\n".join(rows)


def _quiet(fig: dict[str, Any]) -> bool:
    """Did other processes and the hypervisor (steal) leave this run alone?"""
    if fig["other_load_pct"] is None:
        return True
    peak = fig.get("others_peak_pct")
    return fig["other_load_pct"] + (fig["steal_pct"] or 0) <= NOISY_PCT and (peak is None
                                                                              or peak <= NOISY_PEAK_PCT)


def _machine_line(fig: dict[str, Any]) -> str:
    if fig["other_load_pct"] is None:
        return f"machine: {fig['cpus']} CPUs (no /proc/stat: other load unknown)"
    peak = fig.get("others_peak_pct")
    line = (f"machine: {fig['cpus']} CPUs; other processes used {fig['other_load_pct']:.0f} % of a core, "
            f"steal {fig['steal_pct']:.0f} %"
            + (f"; other processes' busiest second: {peak:.0f} % of a core" if peak is not None else ""))
    if not _quiet(fig):
        line += (" -> NOT A QUIET MACHINE: other processes or the hypervisor (steal) took CPU from the server"
                 " and callers; rerun when it is idle")
    return line


def summary_table(figures: list[dict[str, Any]]) -> str:
    head = (f"{'srv':>3} {'calls':>5}"
            f"  {'lag p50':>7} {'lag p99':>7} {'lag max':>7}  {'late p99':>8} {'late max':>8}"
            f"  {'gaps':>4}  {'CPU/call':>8} {'CPU all':>7}  {'calls/core':>9}"
            f"  {'ovh p50':>7} {'ovh p95':>7} {'proc p95':>8}"
            f"  {'callers':>7} {'CPU/call':>7}"
            f"  {'others+steal /peak':>18}")
    rows = [head, "-" * len(head)]
    for f in figures:
        callers = "ok" if (f["caller_lag_p99_ms"] or 0) <= CALLER_LAG_OK_P99_MS else "SLOW"
        other = "?" if f["other_load_pct"] is None else f"{f['other_load_pct'] + (f['steal_pct'] or 0):.0f}%"
        if f.get("others_peak_pct") is not None:
            other += f" /{f['others_peak_pct']:3.0f}%"
        rows.append(
            f"{f.get('servers', 1):>3} {f['calls']:>5}"
            f"  {_ms(f['lag_p50_ms']):>7} {_ms(f['lag_p99_ms']):>7} {_ms(f['lag_max_ms']):>7}"
            f"  {_ms(f['frame_late_p99_ms']):>8} {_ms(f['frame_late_max_ms']):>8}  {f['audible_gaps']:>4}"
            f"  {f['server_cpu_pct_per_call']:>7.2f}% {f['server_cpu_pct_total']:>6.0f}%"
            f"  {_calls_per_core(f):>9}"
            f"  {_ms(f['overhead_p50_ms']):>7} {_ms(f['overhead_p95_ms']):>7}"
            f" {_ms(f['processing_p95_ms']):>8}"
            f"  {callers:>7} {_pct2(f.get('caller_cpu_pct_per_call')):>6}%"
            f"  {other:>18}"
        )
    rows.append(f"targets: lag p99 <= {TARGET_LAG_P99_MS:.0f} ms at 100 calls, no outbound frame later than "
                f"{TARGET_FRAME_LATE_MAX_MS:.0f} ms, overhead p95 <= {TARGET_OVERHEAD_P95_MS:.0f} ms "
                "(all times ms; ovh = v2v - end_silence_ms, proc = endpoint -> first frame sent)")
    rows.append("calls/core = 100 % / the servers' CPU per call-second; the callers' CPU/call is the load "
                "generator's, on the same cores; peak = other processes' busiest second")
    rows += _capacity_lines(figures)
    return "\n".join(rows)


def _calls_per_core(fig: dict[str, Any]) -> str:
    per_call = fig["server_cpu_pct_per_call"]
    return f"{100 / per_call:.0f}" if per_call else "n/a"


def _held(fig: dict[str, Any]) -> bool:
    """Did this run hold its calls: lag p99 and the latest outbound frame within the targets, every call
    answered, no call errors?"""
    lag, late = fig["lag_p99_ms"], fig["frame_late_max_ms"]
    return (lag is not None and lag <= TARGET_LAG_P99_MS and late is not None
            and late <= TARGET_FRAME_LATE_MAX_MS and not fig["call_errors"] and not fig["unanswered"])


def _capacity_lines(figures: list[dict[str, Any]]) -> list[str]:
    """Per process count: the most calls held, and 2+ processes vs one. With several runs of a size
    (--repeat, or --summarize over several files) a size holds when more than half of its runs did, and
    the capacity is the largest size that held with every smaller size tried also holding: one lucky
    run near the limit doesn't count, nor does one unlucky one below it."""
    runs: dict[int, dict[int, list[bool]]] = {}
    for fig in figures:
        runs.setdefault(fig.get("servers", 1), {}).setdefault(fig["calls"], []).append(_held(fig))
    held: dict[int, int] = {}
    tallies, below = [], {}
    for servers, by_size in sorted(runs.items()):
        for calls, outcomes in sorted(by_size.items()):
            if sum(outcomes) * 2 <= len(outcomes):
                break
            held[servers] = calls
        if servers not in held:
            below[servers] = min(by_size)
        tallies.append(f"{servers} server(s): " + ", ".join(
            f"{calls} {sum(outcomes)}/{len(outcomes)}" for calls, outcomes in sorted(by_size.items())))
    lines = []
    if any(len(outcomes) > 1 for by_size in runs.values() for outcomes in by_size.values()):
        lines.append("runs that held, per size: " + "; ".join(tallies))
    line = ("held (lag p99 <= 20 ms and late max <= 40 ms, every line answered), most calls: "
            + ", ".join([*(f"{n} server(s) {calls}" for n, calls in sorted(held.items())),
                         *(f"{n} server(s) below {calls}" for n, calls in sorted(below.items()))]))
    if 1 in held:
        line += "".join(f"; {n} vs 1: {calls / held[1]:.2f}x" for n, calls in sorted(held.items()) if n > 1)
    noisy = sum(not _quiet(fig) for fig in figures)
    if noisy:
        line += f" ({noisy} of {len(figures)} runs on a machine other processes disturbed)"
    return [*lines, line]


# ============================================================================================ CLI


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.calls", description=__doc__.split("\n")[0])
    parser.add_argument("--calls", default="100", help="concurrent calls; a comma list runs each (25,50,100)")
    parser.add_argument("--duration", type=float, default=30.0,
                        help="seconds per call: no new line is started that would end after it (default 30)")
    parser.add_argument("--turns", type=int, default=None, help="a fixed script: this many lines per call")
    parser.add_argument("--stagger", type=float, default=1.5, help="call starts spread over this many s")
    parser.add_argument("--caller-procs", type=int, default=1, help="caller processes (default 1)")
    parser.add_argument("--servers", "--workers", default="1",
                        help="server processes, calls dealt to them in turn (as --workers N; default 1); a "
                             "comma list (1,2) runs each size with each count, back to back")
    parser.add_argument("--per-server", action="store_true",
                        help="--calls counts calls per server process (--servers 1,2 --calls 90: 90 and 180)")
    parser.add_argument("--server-loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--caller-loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--caller-poll-ms", type=float, default=2.0, metavar="MS",
                        help="lean callers wake every MS ms to send what is due and read what arrived, "
                             "instead of on every timer and packet (0 = event-driven; default 2)")
    parser.add_argument("--caller-client", choices=("lean", "c", "websockets"), default="lean",
                        help="the callers: lean (Python, bench/wsclient.py; default), c (bench/callers.c, "
                             "compiled with cc at start) or websockets (the library; several times the CPU)")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="run every size N times (seeds --seed, --seed+1, ...); a size holds when more "
                             "than half its runs did")
    parser.add_argument("--summarize", nargs="+", metavar="JSON",
                        help="print the summary of earlier runs' --json files together, and exit")
    parser.add_argument("--caller-nice", type=int, default=0, metavar="N",
                        help="run the callers at this nice level (10: the servers get the cores first, as "
                             "on a machine where the load comes from elsewhere; with --caller-client c the "
                             "bot's frames are still timed by the kernel's receive stamps; default 0)")
    parser.add_argument("--line-s", type=float, default=1.2, help="length of the caller's spoken line")
    parser.add_argument("--pause", type=float, default=0.3, help="caller's pause after the bot finished")
    parser.add_argument("--greeting", default=DEFAULT_GREETING)
    parser.add_argument("--reply", default=DEFAULT_REPLY, help="the instant LLM's reply")
    parser.add_argument("--ms-per-char", type=float, default=60.0, help="instant TTS: audio ms per character")
    parser.add_argument("--end-silence-ms", type=int, default=600, help="vad.end_silence_ms")
    parser.add_argument("--lead-ms", type=int, default=160, help="player.lead_ms")
    parser.add_argument("--profile", choices=("py-spy", "cprofile", "tracemalloc"), default=None,
                        help="profile the server over the measured window and print its top costs "
                             "(tracemalloc: the memory the live calls hold, by where it was allocated)")
    parser.add_argument("--log-level", default="WARNING", help="server log level (default WARNING)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the call start offsets")
    parser.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                        help="before each run wait up to S s for others + steal to use < 15 %% of a core")
    parser.add_argument("--retry-noisy", type=int, default=0, metavar="N",
                        help="rerun a run (up to N times) when others + steal took > 20 %% of a core")
    parser.add_argument("--json", default=None, help="also write all figures to this JSON file")
    parser.add_argument("--embedded", action="store_true",
                        help="the bundled pipeline's real engines (Moonshine, the script, Piper) instead of "
                             "instant providers; callers speak --caller-text in the simulated caller's voice")
    parser.add_argument("--speculate-after-ms", type=int, default=120,
                        help="turn.speculate_after_ms (0 = no speculative turns; default 120, as bundled)")
    parser.add_argument("--caller-text", default=EMBEDDED_LINE, help="--embedded: what every caller says")
    parser.add_argument("--vendors", choices=("instant", "openai"), default="instant",
                        help="instant: providers inside the server that answer at once (default); openai: "
                             "the OpenAI adapters against fakes of its API in a process of their own (STT "
                             "300 ms, "
                             "LLM 300 ms + 15 ms a word, TTS 150 ms to the first byte)")
    parser.add_argument("--compare", default=None, metavar="REV[,REV]",
                        help="also run the same bench on these commits' code (git archive into a temporary "
                             "folder; the server runs there, the callers and fakes stay this tree's), "
                             "alternating with this tree's run by run, and print the figures side by side "
                             "with ratios")
    parser.add_argument("--serve", default=None, help=argparse.SUPPRESS)  # internal: server process
    parser.add_argument("--faults", choices=("none", "mix"), default="none",
                        help="--vendors openai: mix = every 5th LLM request answers 500 and every 7th TTS "
                             "request stalls 20 s before its first byte (default none)")
    parser.add_argument("--server-ws", default="", metavar="IMPL[,IMPL]",
                        help="the server's uvicorn WebSocket implementation (websockets-sansio, websockets, "
                             "wsproto); a comma list runs each side by side, as --compare does commits "
                             "(default: what switchboard.server.running uses)")
    parser.add_argument("--hedging", default="on", metavar="on|off[,...]",
                        help="--vendors openai: the pipeline's hedging (pipelines.<name>.hedging.enabled); "
                             "a comma list (off,on) runs each size with each, side by side (default on)")
    parser.add_argument("--hedge-after-ms", default=None, metavar="STAGE=MS[,...]",
                        help="--vendors openai: hedging.hedge_after_ms per stage (llm=1200,tts=600); "
                             "unset: twice each vendor's p95 so far")
    parser.add_argument("--fakes", default=None, help=argparse.SUPPRESS)  # internal: --vendors openai
    parser.add_argument("--callers", default=None, help=argparse.SUPPRESS)  # internal: caller process
    args = parser.parse_args(argv)
    args.server_ws = [ws.strip() for ws in args.server_ws.split(",") if ws.strip()]
    args.hedging_modes = [mode.strip() for mode in args.hedging.split(",") if mode.strip()]
    if not args.hedging_modes or any(mode not in ("on", "off") for mode in args.hedging_modes):
        parser.error("--hedging takes on, off or both (off,on)")
    try:
        args.hedge_after = {stage.strip(): int(ms) for stage, _, ms in
                            (item.partition("=") for item in (args.hedge_after_ms or "").split(",") if item)}
    except ValueError:
        parser.error("--hedge-after-ms takes stage=ms pairs, e.g. llm=1200,tts=600")
    if set(args.hedge_after) - set(OPENAI_STAGES):
        parser.error(f"--hedge-after-ms: stages are {', '.join(OPENAI_STAGES)}")
    if args.repeat < 1:
        parser.error("--repeat must be 1 or more")
    if args.caller_nice < 0:
        parser.error("--caller-nice must be 0 or more (a process may lower its priority, not raise it)")
    return args


def _code_version() -> str:
    """The commit the figures were measured on (+ "dirty" when the work tree has changes)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{' + uncommitted changes' if dirty else ''}" if head else "unknown"


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    if args.serve is not None:
        opts = json.loads(args.serve)
        with asyncio.Runner(loop_factory=_new_loop_factory(opts["loop"])) as runner:
            runner.run(_serve_main(opts))
        return
    if args.callers is not None:
        _run_callers(json.loads(args.callers))
        return
    if args.fakes is not None:
        asyncio.run(_fakes_main(json.loads(args.fakes)))
        return
    if args.summarize:
        figures = [fig for path in args.summarize for fig in json.loads(Path(path).read_text())]
        print(summary_table(sorted(figures, key=lambda fig: (fig["calls"] // fig.get("servers", 1),
                                                              fig.get("servers", 1)))))
        return
    sizes = [int(n) for n in args.calls.split(",") if n.strip()]
    print(f"Switchboard call benchmark on {_code_version()}, {os.cpu_count()} CPUs, Python "
          f"{sys.version.split()[0]}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
          flush=True)
    if args.embedded:
        engines = (f"the bundled pipeline's real engines (Moonshine, the script, Piper); callers say "
                   f"{args.caller_text!r}")
    elif args.vendors == "openai":
        engines = ("the OpenAI adapters against fakes of its API (STT 300 ms, LLM 300 ms + 15 ms/word, "
                   "TTS 150 ms)")
    else:
        engines = "instant providers (no recognition/synthesis)"
    print(f"providers: {engines}; speculative turns "
          f"{f'after {args.speculate_after_ms} ms' if args.speculate_after_ms else 'off'}", flush=True)
    polling = args.caller_client != "websockets" and args.caller_poll_ms
    print(f"callers: {args.caller_client} client"
          + (f", polling every {args.caller_poll_ms:g} ms" if polling else ", event-driven")
          + f"; {args.caller_procs} caller process(es) at least (one per server)", flush=True)
    with contextlib.ExitStack() as stack:
        codes: list[tuple[str, Path | None]] = [("this", None)]
        for rev in (args.compare or "").split(","):
            if rev.strip():
                codes.append((rev.strip(), stack.enter_context(_checkout(rev.strip()))))
        codes = _with_ws(args, codes)
        figures = _run_all(args, sizes, codes)
    if args.vendors == "openai" and (len(args.hedging_modes) > 1 or args.faults != "none"):
        print(fault_table(figures))
    if args.compare or len(args.server_ws) > 1:
        print(compare_table(figures, [name for name, _ in codes]))
    elif len(figures) > 1:
        print(summary_table(figures))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


@contextlib.contextmanager
def _checkout(rev: str) -> Iterator[Path]:
    """Commit `rev`'s tree in a temporary folder (git archive: nothing is added to the repository)."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{rev}-") as folder:
        archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=False)
        if archive.returncode != 0:
            raise SystemExit(f"--compare {rev}: git archive failed: {archive.stderr.decode().strip()}")
        subprocess.run(["tar", "-x", "-C", folder], input=archive.stdout, check=True)
        yield Path(folder)


def _with_ws(args: argparse.Namespace, codes: list[tuple[str, Path | None]]) -> list[tuple[str, Path | None]]:
    """--server-ws A,B: each code once per uvicorn WebSocket implementation, side by side like commits
    (the first implementation keeps the code's own name, so "this" stays the tree the ratios are of)."""
    args.ws_of = {}
    if not args.server_ws:
        return codes
    out = []
    for name, code in codes:
        for k, ws in enumerate(args.server_ws):
            label = name if k == 0 else f"{name} ws={ws}"
            args.ws_of[label] = ws
            out.append((label, code))
    return out


def _run_all(args: argparse.Namespace, sizes: list[int], codes: list[tuple[str, Path | None]]) -> list[dict]:
    """Every size (x server count x repeat), each on every code in turn; with several codes the order
    alternates from one repeat to the next (A B, then B A), so that drift in the machine's load hits
    both alike."""
    server_counts = [int(n) for n in args.servers.split(",") if n.strip()]
    figures, base_seed = [], args.seed
    for repeat, size, n_servers in itertools.product(range(args.repeat), sizes, server_counts):
        n_calls = size * n_servers if args.per_server else size
        args.seed = base_seed + repeat  # each repeat starts its calls at other moments
        order = codes if repeat % 2 == 0 else codes[::-1]
        modes = args.hedging_modes if repeat % 2 == 0 else args.hedging_modes[::-1]  # side by side
        for (name, code), hedging in itertools.product(order, modes):
            args.hedging_mode = hedging
            args.ws_mode = args.ws_of.get(name)
            for attempt in range(1 + args.retry_noisy):
                if args.wait_quiet:
                    wait_for_quiet(QUIET_CORES, args.wait_quiet)
                fig = analyse(run_once(n_calls, n_servers, args, code), args.end_silence_ms)
                fig["seed"], fig["code"] = args.seed, name
                fig.update(hedging=hedging, faults=args.faults, hedge_after_ms=args.hedge_after)
                if _quiet(fig) or attempt == args.retry_noisy:
                    break
                print(f"(discarded a {n_calls}-call run: other processes used {fig['other_load_pct']:.0f} % "
                      f"of a core during it (busiest second {fig.get('others_peak_pct') or 0:.0f} %), steal "
                      f"{fig['steal_pct']:.0f} %; running it again)", file=sys.stderr, flush=True)
            figures.append(fig)
            if len(codes) > 1 or len(modes) > 1:
                print(f"-- code: {name}, hedging {hedging} --", flush=True)
            print(report(fig, args), flush=True)
            print(flush=True)
    return figures


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.median(known)) if known else None


def compare_table(figures: list[dict[str, Any]], names: list[str]) -> str:
    """Per size and code, the median over repeats of: server CPU, loop lag, memory per extra call, the
    caller-measured reply delay and its ratio to the smallest size's; then this tree's figures as ratios
    to each other commit's (below 1: this tree is better). Memory per extra call is the slope of the peak
    RSS between the smallest size and this one (the first size: the peak's growth over the run / calls)."""
    by: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for fig in figures:
        by.setdefault((fig["code"], fig["calls"]), []).append(fig)
    sizes = sorted({fig["calls"] for fig in figures})

    def med(name: str, size: int, key: str) -> float | None:
        return _median([fig.get(key) for fig in by.get((name, size), [])])

    def mem_per_call(name: str, size: int) -> float | None:
        peak = med(name, size, "server_rss_peak_mb")
        if size == sizes[0] or peak is None:
            start = med(name, size, "server_rss_start_mb")
            return None if start is None or peak is None else (peak - start) / size
        base = med(name, sizes[0], "server_rss_peak_mb")
        return None if base is None else (peak - base) / (size - sizes[0])

    def fmt(value: float | None, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    head = (f"{'code':>10} {'calls':>5}  {'CPU all':>7} {'CPU/call':>8}  {'lag p50':>7} {'lag p99':>7}"
            f"  {'MiB/call':>8}  {'reply p50':>9} {'x smallest':>10}  {'answered':>9}  {'others':>6}")
    rows = ["side by side (medians over repeats; CPU in % of one core, times in ms):", head, "-" * len(head)]
    stats: dict[tuple[str, int], dict[str, float | None]] = {}
    for size in sizes:
        for name in names:
            runs = by.get((name, size), [])
            if not runs:
                continue
            reply = med(name, size, "caller_response_p50_ms")
            smallest = med(name, sizes[0], "caller_response_p50_ms")
            stats[name, size] = entry = {
                "cpu": med(name, size, "server_cpu_pct_total"), "lag99": med(name, size, "lag_p99_ms"),
                "mem": mem_per_call(name, size), "reply": reply,
                "growth": reply / smallest if reply and smallest else None}
            answered = f"{sum(f['answered'] for f in runs)}/{sum(f['lines'] for f in runs)}"
            others = _median([(f["other_load_pct"] or 0) + (f["steal_pct"] or 0) for f in runs])
            rows.append(
                f"{name:>10} {size:>5}  {fmt(entry['cpu'], '6.0f')}%"
                f" {fmt(med(name, size, 'server_cpu_pct_per_call'), '7.2f')}%"
                f"  {fmt(med(name, size, 'lag_p50_ms'), '7.1f')} {fmt(entry['lag99'], '7.1f')}"
                f"  {fmt(entry['mem'], '8.2f')}  {fmt(reply, '9.0f')} {fmt(entry['growth'], '9.2f')}x"
                f"  {answered:>9}  {fmt(others, '5.0f')}%")
    rows += ["", "this tree / other commit (CPU, lag p99, MiB per call, reply p50; below 1: this tree is "
                 "better):"]
    for other in names[1:]:
        for size in sizes:
            mine, theirs = stats.get(("this", size)), stats.get((other, size))
            if not mine or not theirs:
                continue
            ratios = []
            for key, label in (("cpu", "CPU"), ("lag99", "lag p99"), ("mem", "MiB/call"),
                               ("reply", "reply p50")):
                a, b = mine[key], theirs[key]
                ratios.append(f"{label} {a / b:.2f}x" if a is not None and b else f"{label} n/a")
            rows.append(f"  vs {other} at {size} calls: " + ", ".join(ratios))
    rows.append("others = other processes' + steal CPU during the runs (% of a core): the machine's noise")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
