r"""Benchmark: turn-taking side by side with Pipecat 1.14 (Smart Turn v3), run here, not quoted — on the
same fakes of OpenAI's API, the same caller script and the same real recordings, over Twilio's wire.

Rows (each one server, the same calls placed by the same simulated Twilio caller, switchboard/caller.py):

  pipecat    Pipecat 1.14.0 in its own virtual environment, which this bench installs from PyPI into
             .bench-venvs/pipecat (``pipecat-ai[silero,openai,websocket]==1.14.0`` and uvicorn; Smart
             Turn v3 and Silero ship as ONNX files inside the wheel, nothing is downloaded at run time):
             bench/pipecat_bot.py, its FastAPI WebSocket transport with TwilioFrameSerializer, Silero
             VAD, LocalSmartTurnAnalyzerV3 and the OpenAI STT (whisper-1) / LLM / TTS services
  openai     Switchboard with its OpenAI adapters on the same fakes (the pipeline's turn defaults)
  embedded   Switchboard's bundled default pipeline (Moonshine hears the caller for real, the bundled
             script answers, Piper speaks): no fakes

The fakes (tests/fakes/openai_fake.py) have bench/turns.py's fixed latencies: STT 300 ms, LLM 300 ms +
15 ms a token, TTS 150 ms to the first byte. The fake STT cannot recognise speech; it finds which part of
the line being spoken an upload holds (its loudness contour matched against the line's, 20 ms frames)
and answers those words of the line's transcript, as Whisper writes a fragment (capitalised, a full
stop at the end) — so a pause's upload reads "I would like to book a table." on both sides, and
Pipecat's per-VAD-segment uploads read as the segment's words.

Scenarios:

  pauses   one call: the scripted "I would like to book a table [0.45 s] for two people tonight at
           eight" (the caller's synthetic voice), then the real recordings of ../shared/speech whose
           MANIFEST category is ``pauses`` or ``accent`` (trimmed after the last word, as
           bench/real_turns.py does), each line once the bot has finished its short answer. Per line:
           talk-over (bot audio heard while the caller was mid-line, to the clear that stopped it or
           the line's end), false starts (bot audio starting mid-line), the reply delay (first bot
           audio after the line's end, as the caller hears it)
  over     one call per sound: the caller asks for the opening hours (a 7 s answer) and about a second
           into the answer plays a real listener sound ("mm-hmm", "mm", "oh yeah", "yeah" x2, the AMI
           meeting clips at -20 dBFS) or a real short interruption ("no", "it's not fair", "now it's
           all right", "five five"); plus one call without a sound, whose answer length is the
           reference. A listener sound is *kept* when the answer's audio that played is within 0.5 s of
           the reference and the bot's pause (clear to going on) was at most 1 s; an interruption
           *stops* the bot when a clear came and the answer did not go on. Stop latency: the clear's
           delay after the interruption's onset. ``--synthetic`` adds bench/backchannels.py's
           synthetic hums as listener sounds.

Everything is measured by the caller (and the same code for every row); the machine is shared, so read
the ratios to Pipecat's row of the same run.

    python -m bench.pipecat_turns                          # install Pipecat if needed, all rows (≈ 12 min)
    python -m bench.pipecat_turns --rows pipecat,openai --scenarios pauses -v
    python -m bench.pipecat_turns --install-only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import logging
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.backchannels import QUESTION, REAL_INTERRUPTIONS, REAL_LISTENER_SOUNDS, real_lines
from bench.real_turns import config_text, talk_over, trimmed
from bench.turns import LLM_FIRST_S, LLM_TOKEN_S, LONG_REPLY, STT_S, TTS_FIRST_S
from switchboard.audio.wav import write_wav
from switchboard.caller import (
    DEFAULT_VOICE,
    BotAudioStarted,
    CallerEvent,
    CallerLine,
    CallResult,
    ClearReceived,
    LineEnded,
    LineStarted,
    prepare_audio,
    run_call,
)
from switchboard.config import default_config_path, parse_config
from switchboard.core.metrics import TurnMetrics
from switchboard.server import create_app, running
from tests.calls import answered_then_quiet
from tests.fakes.common import Faults
from tests.fakes.openai_fake import TRANSCRIBE_RATE, OpenAIScript, make_app

ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT.parent / "shared" / "speech"
VENV = ROOT / ".bench-venvs" / "pipecat"
PIPECAT = "pipecat-ai[silero,openai,websocket]==1.14.0"
SCRIPTED = "i would like to book a table [0.45s] for two people tonight at eight"
SCRIPTED_HEARD = "I would like to book a table for two people tonight at eight."
QUESTION_HEARD = "What are your opening hours?"
SHORT_REPLY = "Sure, I can help with that."
FRAME_S = 0.02  # the loudness contour's frame
FLOOR_DB = 45.0  # contours are floored this far below their loudest frame
VOICED_DB = 30.0  # a line's frame within this of its loudest is speech (for placing its words)
KEPT_TOLERANCE_S = 0.5  # a kept answer played within this of the reference answer
MAX_PAUSE_S = 1.0  # a listener sound may pause the answer this long

SWITCHBOARD_OPENAI = """
pipelines:
  default:
    greeting: "Luigi's, hello."
    system_prompt: "You answer the phone."
    stt: {{provider: openai, model: whisper-1, base_url: "{stt}"}}
    llm: {{provider: openai, model: gpt-4o-mini, base_url: "{llm}"}}
    tts: {{provider: openai, model: tts-1, voice: alloy, base_url: "{tts}"}}
"""


# ------------------------------------------------------------------------------------- the fake's ears


def contour(pcm: np.ndarray, rate: int) -> np.ndarray:
    """Loudness per 20 ms frame in dB, floored FLOOR_DB below the loudest frame."""
    frame = round(rate * FRAME_S)
    n = len(pcm) // frame
    if n == 0:
        return np.zeros(0)
    x = pcm[: n * frame].astype(np.float64).reshape(n, frame)
    db = 10 * np.log10(np.mean(x**2, axis=1) + 1.0)
    return np.maximum(db, db.max() - FLOOR_DB)


@dataclass
class HeardLine:
    """A line the fake STT can hear: its words and where each falls in its audio."""

    transcript: str
    shape: np.ndarray  # contour, normalised to its loudest frame
    word_frames: np.ndarray  # the frame each word's middle falls on

    @classmethod
    def of(cls, transcript: str, pcm: np.ndarray, rate: int) -> HeardLine:
        shape = contour(pcm, rate)
        if len(shape) == 0:
            raise ValueError(f"no audio for {transcript!r}")
        shape = shape - shape.max()
        voiced = np.cumsum(shape >= -VOICED_DB)  # speech so far, in frames, at each frame
        words = transcript.split()
        centres = (np.arange(len(words)) + 0.5) / len(words) * voiced[-1]
        return cls(transcript, shape, np.searchsorted(voiced, centres))


def fit(upload: np.ndarray, line: HeardLine) -> tuple[float, int]:
    """Where the upload's contour fits the line's best: (the variance of their difference in dB², the
    line's frame where the upload starts, negative when it starts before the line)."""
    u = upload - upload.max()
    n = len(u)
    padded = np.concatenate([np.full(n, -FLOOR_DB), line.shape, np.full(n, -FLOOR_DB)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, n)  # every offset from -n to m
    diff = windows - u
    errors = np.var(diff, axis=1)  # the shapes, not the levels: a fragment's loudest is not the line's
    best = int(np.argmin(errors))
    return float(errors[best]), best - n


def fragment(words: list[str], whole: bool, transcript: str) -> str:
    """The words as Whisper writes them: the transcript as punctuated when whole, else a fragment
    capitalised with a full stop at its end."""
    if not words:
        return ""
    text = transcript if whole else re.sub(r"[.,?!;:]+$", "", " ".join(words))
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".?!" else text + "."


def hear(upload: np.ndarray, rate: int, lines: list[HeardLine]) -> str:
    """What the fake STT answers for an upload: the words of the best-fitting line that its speech (from
    its first to its last loud frame: the silence around it says nothing about where it fits) covers."""
    u = contour(upload, rate)
    loud = np.nonzero(u >= u.max() - VOICED_DB)[0] if len(u) else u
    if len(loud) == 0 or not lines:
        return ""
    u = u[loud[0] : loud[-1] + 1]
    fits = [(fit(u, line), line) for line in lines]
    (_, start), line = min(fits, key=lambda f: f[0][0])
    covered = (line.word_frames >= start) & (line.word_frames < start + len(u))
    words = [w for w, c in zip(line.transcript.split(), covered, strict=True) if c]
    return fragment(words, bool(covered.all()), line.transcript)


# ------------------------------------------------------------------------------------- the fakes


class Vendors:
    """The three OpenAI fakes, with the lines of the call being placed (for the STT's transcripts)."""

    def __init__(self) -> None:
        self.lines: list[HeardLine] = []
        self.current = 0  # the line the caller is speaking (or spoke last)
        self.stt = OpenAIScript(transcribe=self._transcribe)
        self.llm = OpenAIScript(respond=self._respond)
        self.tts = OpenAIScript(ms_per_char=40.0)
        self.faults = {"stt": Faults(first_byte_delay_s=STT_S),
                       "llm": Faults(first_byte_delay_s=LLM_FIRST_S, event_delay_s=LLM_TOKEN_S),
                       "tts": Faults(first_byte_delay_s=TTS_FIRST_S)}

    def _transcribe(self, pcm: np.ndarray) -> str:
        return hear(pcm, TRANSCRIBE_RATE, self.lines[self.current : self.current + 1])

    @staticmethod
    def _respond(body: dict[str, Any]) -> str:
        """The long answer to the opening-hours question, a short one to anything else."""
        users = [m for m in body.get("messages", []) if m.get("role") == "user"]
        last = str(users[-1].get("content") or "") if users else ""
        return LONG_REPLY if "opening hours" in last.lower() else SHORT_REPLY

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[dict[str, str]]:
        async with contextlib.AsyncExitStack() as stack:
            urls = {}
            for stage, script in (("stt", self.stt), ("llm", self.llm), ("tts", self.tts)):
                port = await stack.enter_async_context(running(make_app(self.faults[stage], script)))
                urls[stage] = f"http://127.0.0.1:{port}/v1"
            yield urls


# ------------------------------------------------------------------------------------- Pipecat's venv


def pipecat_python() -> Path:
    """The Pipecat venv's interpreter, creating the venv and installing Pipecat 1.14.0 when missing."""
    python = VENV / "bin" / "python"
    check = [str(python), "-c", "import pipecat, fastapi, uvicorn; print(pipecat.__version__)"]
    if python.exists():
        found = subprocess.run(check, capture_output=True, text=True)
        if found.returncode == 0 and found.stdout.strip() == "1.14.0":
            return python
    print(f"installing {PIPECAT} into {VENV} (from PyPI) …", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = subprocess.run([str(python), "-m", "pip", "install", "-q", PIPECAT, "uvicorn"],
                         capture_output=True, text=True)
    if pip.returncode != 0:
        raise SystemExit(f"pip could not install {PIPECAT}:\n{pip.stdout}{pip.stderr}")
    found = subprocess.run(check, capture_output=True, text=True, check=True)
    print(f"pipecat {found.stdout.strip()} ready", flush=True)
    return python


@contextlib.asynccontextmanager
async def pipecat_server(urls: dict[str, str]) -> AsyncIterator[int]:
    """bench/pipecat_bot.py in Pipecat's venv on a free port, until the block ends."""
    python = pipecat_python()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONWARNINGS"] = "ignore::DeprecationWarning"  # Pipecat 1.x's own notices of its 2.0 renames
    process = await asyncio.create_subprocess_exec(
        str(python), str(ROOT / "bench" / "pipecat_bot.py"), "--port", str(port),
        "--stt", urls["stt"], "--llm", urls["llm"], "--tts", urls["tts"], env=env)
    try:
        deadline = time.monotonic() + 120
        async with httpx.AsyncClient() as client:
            while True:
                if process.returncode is not None:
                    raise RuntimeError(f"the Pipecat bot exited ({process.returncode}) before serving")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"http://127.0.0.1:{port}/health")).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("the Pipecat bot did not serve within 120 s")
                await asyncio.sleep(0.3)
        yield port
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


@contextlib.asynccontextmanager
async def server(row: str, urls: dict[str, str], scenario: str,
                 log: Callable[[str], None] = print) -> AsyncIterator[str]:
    """The row's server for one scenario: its media-stream URL (Switchboard's turns go to `log`)."""
    if row == "pipecat":
        async with pipecat_server(urls) as port:
            yield f"ws://127.0.0.1:{port}/media-stream"
        return
    if row == "openai":
        config = parse_config(SWITCHBOARD_OPENAI.format(**urls))
    else:  # the bundled default; for the pauses, a short answer to anything (as bench/real_turns.py)
        config = parse_config(config_text("default", []) if scenario == "pauses"
                              else default_config_path().read_text())
    app = create_app(config, on_turn=lambda t: log(_turn_line(row, t)))
    async with running(app) as port:
        yield f"ws://127.0.0.1:{port}/media-stream"
        await app.state.host.wait_idle()


def _turn_line(row: str, t: TurnMetrics) -> str:
    def ms(a: float | None, b: float | None) -> str:
        return "-" if a is None or b is None else f"{(b - a) * 1000:.0f}"

    return (f"    {row} turn {t.index} {t.kind}: {t.transcript!r} reads {t.reads}; speech end to endpoint "
            f"{ms(t.speech_end, t.endpoint)} ms, to first audio {ms(t.speech_end, t.first_audio_sent)} ms, "
            f"stt {ms(t.stt_start, t.stt_done)} ms; undone {t.undone}, interrupted {t.interrupted}, "
            f"backchannels {t.backchannels}")


# ------------------------------------------------------------------------------------- scenarios


@dataclass
class Line:
    name: str
    caller: CallerLine
    heard: str  # what the fake STT reads for the whole line


@dataclass
class Row:
    """One row's measurements."""

    over: list[float] = field(default_factory=list)  # per paused line: talk-over, s
    false_starts: list[int] = field(default_factory=list)  # per paused line
    delays: list[float | None] = field(default_factory=list)  # per paused line, ms
    reference_s: float | None = None  # the answer's audio with nothing said over it (the last run's)
    sounds: list[Sound] = field(default_factory=list)
    runs: int = 1  # the lists hold this many runs, one after the other

    def merge(self, other: Row) -> Row:
        return Row(self.over + other.over, self.false_starts + other.false_starts,
                   self.delays + other.delays, other.reference_s, self.sounds + other.sounds,
                   self.runs + other.runs)


@dataclass
class Sound:
    name: str
    kind: str  # "listener" / "synthetic" / "interruption"
    played_s: float  # the call's bot audio that played
    clear_ms: float | None  # the first clear after the sound's onset
    pause_s: float | None  # from that clear to the bot's audio going on
    reference_s: float  # the answer's audio in the same run with nothing said over it


def manifest_rows(categories: tuple[str, ...] = ("pauses", "accent")) -> list[tuple[str, str]]:
    with open(SPEECH / "MANIFEST.tsv", newline="") as f:
        return [(r["file"], r["transcript"]) for r in csv.DictReader(f, delimiter="\t")
                if r["category"] in categories]


def paused_lines(folder: Path) -> list[Line]:
    scripted = folder / "scripted_book_a_table.wav"
    write_wav(str(scripted), prepare_audio(CallerLine(text=SCRIPTED), DEFAULT_VOICE), 8000)
    lines = [Line("scripted: book a table [0.45 s] for two", CallerLine(wav=str(scripted)), SCRIPTED_HEARD)]
    for clip, transcript in manifest_rows():
        lines.append(Line(clip.rsplit(".", 1)[0], CallerLine(wav=trimmed(clip, folder)), transcript))
    return lines


def over_calls(folder: Path, synthetic: bool) -> list[tuple[str, str, list[Line]]]:
    """(name, kind, the call's lines) per call: the reference, then one per sound."""
    transcripts = {clip: text for clip, text in manifest_rows(("backchannel", "short", "noisy"))}
    question = Line("question", CallerLine(text=QUESTION), QUESTION_HEARD)
    calls = [("(nothing said over the answer)", "reference", [question])]
    for name, kind, line in real_lines(folder):
        clip = Path(line.wav or "").name
        if clip in REAL_LISTENER_SOUNDS or clip in REAL_INTERRUPTIONS:
            kind = "listener" if clip in REAL_LISTENER_SOUNDS else "interruption"
        elif not synthetic:
            continue
        else:
            kind = "synthetic"
        heard = transcripts.get(clip, "Mm-hmm.")
        sound = Line(name, CallerLine(wav=line.wav, barge_in=True), heard)
        calls.append((name, kind, [question, sound]))
    return calls


_HEARD: dict[tuple[str, CallerLine], HeardLine] = {}


def heard_lines(lines: list[Line]) -> list[HeardLine]:
    """The lines as the fake STT knows them (each line's audio made once, as the caller makes it)."""
    for line in lines:
        if (line.heard, line.caller) not in _HEARD:
            pcm = prepare_audio(line.caller, DEFAULT_VOICE)
            _HEARD[line.heard, line.caller] = HeardLine.of(line.heard, pcm, 8000)
    return [_HEARD[line.heard, line.caller] for line in lines]


def false_starts(events: list[CallerEvent]) -> list[int]:
    """Per caller line: how often the bot's audio started while the line was playing."""
    out, speaking = [], False
    for event in events:
        if isinstance(event, LineStarted):
            speaking = True
            out.append(0)
        elif isinstance(event, LineEnded):
            speaking = False
        elif isinstance(event, BotAudioStarted) and speaking:
            out[-1] += 1
    return out


def sound_outcome(name: str, kind: str, result: CallResult, events: list[CallerEvent],
                  reference_s: float) -> Sound:
    onset = next((e.t for e in events if isinstance(e, LineStarted) and e.index == 1), None)
    clear = next((e.t for e in events if isinstance(e, ClearReceived) and onset is not None
                  and e.t >= onset), None)
    resumed = next((e.t for e in events if isinstance(e, BotAudioStarted) and clear is not None
                    and e.t > clear), None)
    clear_ms = (clear - onset) * 1000 if clear is not None and onset is not None else None
    pause = resumed - clear if clear is not None and resumed is not None else None
    return Sound(name, kind, result.bot_audio_played_s, clear_ms, pause, reference_s)


def kept(sound: Sound) -> bool:
    """The answer went on: all of it played (within the tolerance; a few words said again are fine) after
    a pause of at most 1 s. (A new answer in its place is the short one: far less audio.)"""
    whole = sound.played_s >= sound.reference_s - KEPT_TOLERANCE_S
    return whole and (sound.clear_ms is None or (sound.pause_s is not None and sound.pause_s <= MAX_PAUSE_S))


def stopped(sound: Sound) -> bool:
    """A clear came and the answer did not go on to its end."""
    return sound.clear_ms is not None and sound.played_s < sound.reference_s - KEPT_TOLERANCE_S


async def call(url: str, vendors: Vendors, lines: list[Line]) -> tuple[CallResult, list]:
    """Place one call: every line, then the caller waits for the bot's answer to the last (or the answer
    it goes on with; at most 20 s) and hangs up after 1.5 s of quiet (no idle reminder comes into it)."""
    vendors.lines, vendors.current = heard_lines(lines), 0
    events: list[CallerEvent] = []

    def on_event(event: CallerEvent) -> None:
        events.append(event)
        if isinstance(event, LineStarted):
            vendors.current = event.index

    result = await run_call(url, [line.caller for line in lines], on_event=on_event,
                            hangup_timeout_s=1.5, reply_timeout_s=20, script=answered_then_quiet)
    return result, events


async def run_row(row: str, vendors: Vendors, urls: dict[str, str], scenarios: list[str],
                  synthetic: bool, log: Callable[[str], None]) -> Row:
    out = Row()
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        if "pauses" in scenarios:
            lines = paused_lines(folder)
            async with server(row, urls, "pauses", log) as url:
                result, events = await call(url, vendors, lines)
            out.over, out.false_starts = talk_over(events), false_starts(events)
            out.delays = [line.response_delay_ms for line in result.lines]
            log(f"  {row}: pauses done")
        if "over" in scenarios:
            async with server(row, urls, "over", log) as url:
                for name, kind, lines in over_calls(folder, synthetic):
                    result, events = await call(url, vendors, lines)
                    if kind == "reference":
                        out.reference_s = result.bot_audio_played_s
                    else:
                        assert out.reference_s is not None  # the first call
                        out.sounds.append(sound_outcome(name, kind, result, events, out.reference_s))
                    log(f"  {row}: {name}: {result.bot_audio_played_s:.2f} s of bot audio played")
    return out


# ------------------------------------------------------------------------------------- the table


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _n(value: float | None, scale: float = 1, digits: int = 2) -> str:
    return "-" if value is None else f"{value / scale:.{digits}f}"


def _ratio(value: float | None, base: float | None) -> str:
    return "" if value is None or not base else f" ({value / base:.2f}x)"


def summary(rows: dict[str, Row]) -> list[tuple[str, list[str]]]:
    """The side-by-side figures: (what, one cell per row); ratios are to the pipecat row's."""
    base = rows.get("pipecat")
    out: list[tuple[str, list[str]]] = []

    def figure(what: str, value: Callable[[Row], float | None]) -> None:
        ref = value(base) if base is not None else None
        out.append((what, [_s(value(r)) + ("" if r is base else _ratio(value(r), ref))
                           for r in rows.values()]))

    def scripted(r: Row) -> float:  # the first line of each run
        per_run = len(r.over) // r.runs
        return sum(r.over[::per_run])

    def median_delay(r: Row) -> float | None:
        known = [d / 1000 for d in r.delays if d is not None]
        return statistics.median(known) if known else None

    if any(r.over for r in rows.values()):
        figure("median reply delay (paused lines)", median_delay)
        figure("talk-over, all paused lines (per run)", lambda r: sum(r.over) / r.runs if r.over else None)
        figure("talk-over, real recordings only (per run)",
               lambda r: (sum(r.over) - scripted(r)) / r.runs if r.over else None)
        figure("talk-over, scripted 450 ms pause (per run)",
               lambda r: scripted(r) / r.runs if r.over else None)
        figure("talk-over per line, mean", lambda r: statistics.mean(r.over) if r.over else None)
        figure("talk-over per line, worst", lambda r: max(r.over) if r.over else None)
        out.append(("false starts (lines with one)", [
            f"{sum(r.false_starts)} ({sum(f > 0 for f in r.false_starts)} of {len(r.false_starts)})"
            for r in rows.values()]))
    if any(r.sounds for r in rows.values()):
        def stops(r: Row) -> list[float]:
            return [s.clear_ms / 1000 for s in r.sounds
                    if s.kind == "interruption" and s.clear_ms is not None and stopped(s)]

        figure("stop after a real interruption, median",
               lambda r: statistics.median(stops(r)) if stops(r) else None)
        figure("stop after a real interruption, max", lambda r: max(stops(r)) if stops(r) else None)
        for kind, what in (("interruption", "real interruptions that stopped the bot"),
                           ("listener", "real listener sounds kept (pause <= 1 s)"),
                           ("synthetic", "synthetic hums kept (pause <= 1 s)")):
            cells = []
            for r in rows.values():
                these = [s for s in r.sounds if s.kind == kind]
                test = stopped if kind == "interruption" else kept
                good = sum(test(s) for s in these)
                cells.append(f"{good} of {len(these)}" if these else "-")
            if any(c != "-" for c in cells):
                out.append((what, cells))
        out.append(("longest listener-sound pause", [
            _s(max((s.pause_s for s in r.sounds if s.kind != "interruption" and s.pause_s is not None),
                   default=None)) for r in rows.values()]))
    return out


def print_tables(rows: dict[str, Row], names: list[str]) -> None:
    width = 20
    if any(r.over for r in rows.values()):
        print("\nper paused line: talk-over (s) / reply delay (s) / false starts")
        print(f"{'line':44s}" + "".join(f"{row:>{width}s}" for row in rows))
        for i, name in enumerate(names):
            cells = ""
            for r in rows.values():
                if i < len(r.over):
                    delay = r.delays[i] if i < len(r.delays) else None
                    cell = f"{r.over[i]:.2f} / {_n(delay, 1000)} / {r.false_starts[i]}"
                else:
                    cell = "-"
                cells += f"{cell:>{width}s}"
            print(f"{name[:44]:44s}{cells}")
    if any(r.sounds for r in rows.values()):
        print("\nper sound over the answer: bot audio played (s) / audio stop after onset (ms) / pause (s)")
        print(f"{'sound':44s}" + "".join(f"{row:>{width}s}" for row in rows))
        print(f"{'(reference: nothing said over it)':44s}"
              + "".join(f"{_s(r.reference_s):>{width}s}" for r in rows.values()))
        first = next(r for r in rows.values() if r.sounds)
        for i, sound in enumerate(first.sounds):
            cells = ""
            for r in rows.values():
                s = r.sounds[i] if i < len(r.sounds) else None
                cell = "-" if s is None else f"{s.played_s:.2f} / {_n(s.clear_ms, 1, 0)} / {_n(s.pause_s)}"
                cells += f"{cell:>{width}s}"
            print(f"{sound.kind[:5]} {sound.name[:38]:38s}{cells}")
    print_summary(rows)


def print_summary(rows: dict[str, Row]) -> None:
    width = 26
    print(f"\n{'side by side (ratios: to pipecat)':44s}" + "".join(f"{row:>{width}s}" for row in rows))
    for what, cells in summary(rows):
        print(f"{what:44s}" + "".join(f"{cell:>{width}s}" for cell in cells))


async def main(rows: list[str], scenarios: list[str], synthetic: bool, verbose: bool, repeat: int) -> None:
    if not SPEECH.is_dir():
        raise SystemExit(f"the real recordings are not at {SPEECH}")
    if "pipecat" in rows:
        pipecat_python()  # install before anything is timed
    log = print if verbose else (lambda _text: None)
    vendors = Vendors()
    runs: list[dict[str, Row]] = []
    with tempfile.TemporaryDirectory() as name:
        names = [line.name for line in paused_lines(Path(name))] if "pauses" in scenarios else []
    async with vendors.serving() as urls:
        for run in range(repeat):
            runs.append({})
            for row in rows:  # the rows take turns, run by run (the machine's load changes)
                print(f"run {run + 1} of {repeat}: {row} …", flush=True)
                runs[-1][row] = await run_row(row, vendors, urls, scenarios, synthetic, log)
            print(f"\n===== run {run + 1} of {repeat}")
            print_tables(runs[-1], names)
    if repeat > 1:
        merged = {row: runs[0][row] for row in rows}
        for results in runs[1:]:
            merged = {row: merged[row].merge(results[row]) for row in rows}
        print(f"\n===== all {repeat} runs together")
        print_summary(merged)
    print(f"\nfixed-latency OpenAI fakes: STT {STT_S * 1000:.0f} ms, LLM {LLM_FIRST_S * 1000:.0f} ms + "
          f"{LLM_TOKEN_S * 1000:.0f} ms/token, TTS {TTS_FIRST_S * 1000:.0f} ms to the first byte; "
          "embedded: Moonshine, the bundled script, Piper (no fakes); the machine is shared: read the "
          "ratios")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="pipecat,openai,embedded")
    parser.add_argument("--scenarios", default="pauses,over")
    parser.add_argument("--synthetic", action="store_true", help="synthetic hums as listener sounds too")
    parser.add_argument("--install-only", action="store_true", help="install Pipecat's venv and stop")
    parser.add_argument("--repeat", type=int, default=1, help="runs, the rows alternating (default 1)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    # a speculative upload cancelled mid-request is normal: not an error of the fakes worth a traceback
    logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
    if args.install_only:
        print(pipecat_python())
    else:
        asyncio.run(main(args.rows.split(","), args.scenarios.split(","), args.synthetic, args.verbose,
                         args.repeat))
