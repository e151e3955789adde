"""A simulated Twilio caller: plays Twilio's side of a Media Streams call against any server.

With ``carrier="exotel"`` it plays Exotel's Voicebot applet instead (snake_case messages, PCM16 "slin"
chunks of 100 ms, outbound chunks checked against Exotel's size rules): see `ExotelWire`.

It connects to a server's media WebSocket, sends `connected` and `start`, then 20 ms μ-law `media`
frames (the caller's scripted lines, silence in between), and plays the bot's audio back on a
simulated clock the way Twilio does: `mark`s are echoed once the audio before them has played,
`clear` drops the queued audio and echoes every pending mark at once.

All times are simulated call time in seconds since the call started. With ``speed`` N the whole
simulation (frame pacing, playback, pauses, timeouts) runs N times faster than the wall clock.

Library use::

    result = await run_call("ws://127.0.0.1:8000/media-stream",
                            [CallerLine("what are your opening hours"),
                             CallerLine("actually, never mind", barge_in=True)])

CLI use (wired up in switchboard.py): ``add_arguments(parser)`` and ``run_from_args(args)``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import json
import re
import secrets
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TextIO

import numpy as np
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from switchboard import callers
from switchboard.audio.g711 import ulaw_decode, ulaw_encode
from switchboard.audio.resample import resample
from switchboard.audio.wav import read_wav, write_wav

__all__ = [
    "BotAudioEnded",
    "BotAudioStarted",
    "CallResult",
    "CallerEvent",
    "CallerLine",
    "ClearReceived",
    "ExotelWire",
    "Hangup",
    "LineEnded",
    "LineResult",
    "LineStarted",
    "MalformedMessage",
    "MarkEchoed",
    "Notice",
    "StopSent",
    "TwilioWire",
    "add_arguments",
    "format_event",
    "format_summary",
    "make_printer",
    "make_wire",
    "prepare_audio",
    "print_event",
    "run_call",
    "run_from_args",
]

RATE = 8000  # Twilio media: μ-law, 8 kHz, mono
FRAME_S = 0.02  # one media frame
FRAME_SAMPLES = 160  # = 160 μ-law bytes
TICK_S = 0.01  # playback / script polling step (simulated seconds)
BOT_IDLE_S = 0.7  # the bot has finished once nothing was audible for this long
PAUSE_BEFORE_LINE_S = 0.3  # the caller's pause before answering
BARGE_IN_AFTER_S = 1.0  # a barge-in line starts once the bot's reply has been audible this long
MAX_MALFORMED_EXAMPLES = 5
# "piper": the embedded natural voice raised 20 % in pitch, so the bot (the same voice unraised) and the
# caller are told apart in recordings and echo tests; any other name is an eSpeak NG voice (en-us+klatt4)
DEFAULT_VOICE = "piper"
PIPER_PITCH = 1.2
DEFAULT_CUSTOM_PARAMETERS = {"from": "+15550001111", "to": "+15550002222"}
CARRIERS = ("twilio", "exotel", *callers.WIRES)


# --------------------------------------------------------------------------------------------- script


@dataclass(frozen=True)
class CallerLine:
    """One line of the caller's script: synthesised ``text`` or a ``wav`` file, optionally a barge-in.

    A normal line waits until the bot has finished talking (and has said something since the previous
    line, or greeted before the first one); a barge-in line starts once the bot's reply has been audible
    for about a second, talking over it.
    """

    text: str | None = None
    wav: str | None = None
    barge_in: bool = False

    def __post_init__(self) -> None:
        if (self.text is None) == (self.wav is None):
            raise ValueError("a CallerLine needs exactly one of text or wav")

    @property
    def label(self) -> str:
        """How the line is shown in the transcript."""
        return self.text if self.text is not None else f"(plays {self.wav})"


@dataclass(frozen=True)
class Echo:
    """The bot's voice leaking back into the caller's microphone: ``delay_ms`` later, ``gain_db`` quieter."""

    delay_ms: float = 120.0
    gain_db: float = -15.0

    def leak(self, playback: Playback) -> Callable[[int, int], np.ndarray]:
        delay = round(self.delay_ms * RATE / 1000)
        gain = 10 ** (self.gain_db / 20)

        def echo(start: int, n: int) -> np.ndarray:
            return (playback.window(start - delay, n).astype(np.float64) * gain).astype(np.int16)

        return echo


# --------------------------------------------------------------------------------------------- events


@dataclass(frozen=True)
class LineStarted:
    """The caller's first frame of a line went out."""

    kind: ClassVar[str] = "line_started"
    t: float
    index: int
    text: str
    barge_in: bool


@dataclass(frozen=True)
class LineEnded:
    """The caller's last frame of a line went out; ``t`` is the end of its audio."""

    kind: ClassVar[str] = "line_ended"
    t: float
    index: int


@dataclass(frozen=True)
class BotAudioStarted:
    """The bot started talking (audio after ≥ BOT_IDLE_S of silence, or after a clear), or its response
    to the caller's last line arrived.

    ``delay_after_caller_ms`` is set for the response: the time from the end of that line to this first
    audio frame (the voice-to-voice latency the caller hears).
    """

    kind: ClassVar[str] = "bot_audio_started"
    t: float
    delay_after_caller_ms: float | None


@dataclass(frozen=True)
class BotAudioEnded:
    """The bot stopped talking: its audio ended (or was cleared) at ``t``; reported once it has then been
    silent for BOT_IDLE_S (at once for a clear)."""

    kind: ClassVar[str] = "bot_audio_ended"
    t: float


@dataclass(frozen=True)
class ClearReceived:
    """The server sent `clear`; ``since_caller_onset_ms`` is set when it answers the caller's current line."""

    kind: ClassVar[str] = "clear_received"
    t: float
    since_caller_onset_ms: float | None
    marks_flushed: int


@dataclass(frozen=True)
class MarkEchoed:
    """A mark went back to the server: its audio played, or (``cleared``) a clear dropped it."""

    kind: ClassVar[str] = "mark_echoed"
    t: float
    name: str
    cleared: bool


@dataclass(frozen=True)
class Hangup:
    """The server closed the socket (how a server hangs up a Twilio call)."""

    kind: ClassVar[str] = "hangup"
    t: float


@dataclass(frozen=True)
class StopSent:
    """The caller gave up waiting for a hang-up, sent `stop` and closed the socket."""

    kind: ClassVar[str] = "stop_sent"
    t: float


@dataclass(frozen=True)
class MalformedMessage:
    """The server sent something Twilio would reject or ignore."""

    kind: ClassVar[str] = "malformed"
    t: float
    reason: str
    example: str


@dataclass(frozen=True)
class Notice:
    """Anything else worth a line in the transcript (e.g. a reply that never came)."""

    kind: ClassVar[str] = "notice"
    t: float
    text: str


CallerEvent = (
    LineStarted
    | LineEnded
    | BotAudioStarted
    | BotAudioEnded
    | ClearReceived
    | MarkEchoed
    | Hangup
    | StopSent
    | MalformedMessage
    | Notice
)
EventCallback = Callable[[CallerEvent], None]


def format_event(event: CallerEvent, *, verbose: bool = False) -> str | None:
    """One transcript line for an event, e.g. ``[  5.10s] caller: what are your opening hours``.

    Mark echoes and bot audio endings are only shown when ``verbose``.
    """
    match event:
        case LineStarted(text=text, barge_in=barge_in):
            who, what = "caller", f"(talks over the bot) {text}" if barge_in else text
        case LineEnded():
            if not verbose:
                return None
            who, what = "caller", "(stops talking)"
        case BotAudioStarted(delay_after_caller_ms=None):
            who, what = "bot", "(audio starts)"
        case BotAudioStarted(delay_after_caller_ms=delay):
            who, what = "bot", f"audio started {delay / 1000:.2f} s after you stopped talking"
        case BotAudioEnded():
            if not verbose:
                return None
            who, what = "bot", "(audio ends)"
        case ClearReceived(since_caller_onset_ms=since, marks_flushed=n):
            after = "" if since is None else f" ({since / 1000:.2f} s after you started)"
            flushed = f", {n} mark(s) returned" if verbose and n else ""
            who, what = "server", f"clear{after}{flushed}"
        case MarkEchoed(name=name, cleared=cleared):
            if not verbose:
                return None
            who, what = "twilio", f"mark {name!r} echoed" + (" (cleared, not heard)" if cleared else "")
        case Hangup():
            who, what = "server", "closed the socket (hang-up)"
        case StopSent():
            who, what = "caller", "(no hang-up from the server: sent stop and closed)"
        case MalformedMessage(reason=reason, example=example):
            who, what = "server", f"MALFORMED: {reason}: {example}"
        case Notice(text=text):
            who, what = "caller", f"({text})"
        case _:
            return None
    return f"[{event.t:6.2f}s] {who:<6}: {what}"


def make_printer(*, verbose: bool = False, file: TextIO | None = None) -> EventCallback:
    """An ``on_event`` callback printing the conversation as it happens."""

    def printer(event: CallerEvent) -> None:
        line = format_event(event, verbose=verbose)
        if line is not None:
            print(line, file=file or sys.stdout, flush=True)

    return printer


print_event: EventCallback = make_printer()


# --------------------------------------------------------------------------------------------- results


@dataclass
class LineResult:
    """What happened to one caller line. Times in simulated seconds since the call started."""

    index: int
    text: str
    barge_in: bool
    started_s: float | None = None  # None: never spoken (the call ended first)
    ended_s: float | None = None
    response_delay_ms: float | None = None  # first bot audio after the line ended − line end
    clear_after_onset_ms: float | None = None  # a clear answering this line, after its onset

    @property
    def spoken(self) -> bool:
        return self.ended_s is not None

    @property
    def clear_received(self) -> bool:
        return self.clear_after_onset_ms is not None


@dataclass
class CallResult:
    """Measurements of one simulated call."""

    stream_sid: str
    call_sid: str
    lines: list[LineResult]
    duration_s: float = 0.0
    bot_audio_received_s: float = 0.0  # all bot audio samples received
    bot_audio_played_s: float = 0.0  # of those, what actually played (cleared and unplayed excluded)
    # the most bot audio that was ever queued ahead of the playhead: a paced server stays within its
    # player's lead (plus a frame); one that sends a whole reply at once queues all of it
    max_bot_lead_s: float = 0.0
    marks_received: int = 0  # marks the server sent
    marks_echoed: int = 0  # marks echoed back (played or cleared)
    marks_cleared: int = 0  # of those, echoed because a clear dropped their audio
    clears_received: int = 0
    hangup: bool = False  # the server closed the socket
    close_code: int | None = None  # the WebSocket close code and reason (1000 = normal)
    close_reason: str = ""
    stop_sent: bool = False  # the caller sent stop and closed instead
    malformed_count: int = 0
    malformed_examples: list[str] = field(default_factory=list)
    record_path: str | None = None
    talk_over_s: float = 0.0  # the caller's lines and the bot's audio playing at once (as heard)


def format_summary(result: CallResult) -> str:
    """A short human-readable summary of a call's measurements."""
    out = ["--- call summary ---"]
    for line in result.lines:
        head = f"line {line.index + 1}{' (barge-in)' if line.barge_in else ''} {line.text!r}: "
        if not line.spoken:
            out.append(head + "not spoken (call ended first)")
            continue
        parts = [f"{line.started_s:.2f}-{line.ended_s:.2f} s"]
        if line.clear_received:
            parts.append(f"clear {line.clear_after_onset_ms:.0f} ms after onset")
        if line.response_delay_ms is not None:
            parts.append(f"bot replied {line.response_delay_ms:.0f} ms after it ended")
        else:
            parts.append("no bot reply")
        out.append(head + ", ".join(parts))
    out.append(
        f"bot audio: {result.bot_audio_received_s:.2f} s received, {result.bot_audio_played_s:.2f} s played; "
        f"marks: {result.marks_received} received, {result.marks_echoed} echoed "
        f"({result.marks_cleared} after a clear); clears: {result.clears_received}"
    )
    ended = "server hang-up" if result.hangup else "caller sent stop" if result.stop_sent else "socket lost"
    close = f" (close code {result.close_code} {result.close_reason!r})" if result.close_code != 1000 else ""
    out.append(f"call: {result.duration_s:.2f} s, ended by {ended}{close}")
    out.append(f"malformed messages from the server: {result.malformed_count}")
    out.extend(f"  e.g. {example}" for example in result.malformed_examples)
    if result.record_path:
        out.append(f"recording: {result.record_path} (left = caller, right = bot as played)")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------- clock


def _sample(t: float) -> int:
    """Sample index on the 8 kHz call timeline at simulated time ``t``."""
    return round(t * RATE)


class SimClock:
    """Simulated call time: seconds since the call started, running ``speed`` times the wall clock."""

    def __init__(self, speed: float) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.speed = speed
        self._loop = asyncio.get_running_loop()
        self._t0 = self._loop.time()

    def now(self) -> float:
        return (self._loop.time() - self._t0) * self.speed

    async def sleep(self, sim_s: float) -> None:
        await asyncio.sleep(max(0.0, sim_s) / self.speed)

    async def sleep_until(self, sim_t: float) -> None:
        await self.sleep(sim_t - self.now())


@dataclass
class _Segment:
    """Audio placed on the call timeline from sample ``start``."""

    start: int
    pcm: np.ndarray


def _render(segments: list[_Segment], length: int) -> np.ndarray:
    """Mix timeline segments into one int16 track of ``length`` samples."""
    track = np.zeros(length, dtype=np.int16)
    for seg in segments:
        end = min(seg.start + len(seg.pcm), length)
        if end > seg.start:
            track[seg.start : end] = seg.pcm[: end - seg.start]
    return track


# --------------------------------------------------------------------------------------------- playback


class Playback:
    """Twilio's outbound buffer for the bot's audio, on the simulated clock.

    Audio is appended to a queue; the playhead is simply the clock. Audio arriving while the queue is
    empty starts playing at its arrival; otherwise it plays after what is queued. Marks sit at the
    queue position where they arrived and fall due once the playhead passes them.

    The bot is *talking* from the audio that ends a silence until it has been silent for BOT_IDLE_S
    (or is cleared): short gaps between a reply's chunks — or between frames of a server paced slower
    than a sped-up caller — do not end it.
    """

    def __init__(self) -> None:
        self.segments: list[_Segment] = []  # what plays when (cut where a clear cut it)
        self._marks: deque[tuple[int, str]] = deque()  # (timeline sample, name), in order
        self.queue_end = 0  # timeline sample where the queued audio ends
        self.received_samples = 0
        self.talk_start: float | None = None  # when the bot's current (or last) talking began
        self._talking = False

    def add_audio(self, pcm: np.ndarray, now: float) -> bool:
        """Queue bot audio; True if it starts the bot talking."""
        starts = not self.talking(now)
        start = max(_sample(now), self.queue_end)
        self.segments.append(_Segment(start, pcm))
        self.queue_end = start + len(pcm)
        self.received_samples += len(pcm)
        if starts:
            self.talk_start = now
            self._talking = True
        return starts

    def talking(self, now: float) -> bool:
        """Audio plays, or played less than BOT_IDLE_S ago, and no clear since."""
        return self._talking and self.silent_for(now) < BOT_IDLE_S

    def add_mark(self, name: str, now: float) -> None:
        """Queue a mark after the audio queued so far (due at once if nothing is queued)."""
        self._marks.append((max(self.queue_end, _sample(now)), name))

    def due_marks(self, now: float) -> list[str]:
        """Pop the marks whose audio has finished playing."""
        pos = _sample(now)
        due = []
        while self._marks and self._marks[0][0] <= pos:
            due.append(self._marks.popleft()[1])
        return due

    def clear(self, now: float) -> list[str]:
        """Drop all queued audio at the playhead; return every pending mark (Twilio echoes them all)."""
        pos = _sample(now)
        kept = []
        for seg in self.segments:
            if seg.start >= pos:
                continue
            if seg.start + len(seg.pcm) > pos:
                seg.pcm = seg.pcm[: pos - seg.start]
            kept.append(seg)
        self.segments = kept
        self.queue_end = min(self.queue_end, pos)
        pending = [name for _, name in self._marks]
        self._marks.clear()
        self._talking = False
        return pending

    def audible(self, now: float) -> bool:
        return self.queue_end > _sample(now)

    def ended_at(self) -> float:
        """When the queued audio ends (or ended): the time the bot falls/fell silent."""
        return self.queue_end / RATE

    def silent_for(self, now: float) -> float:
        """How long nothing has been audible (0 while audio plays)."""
        return max(0.0, now - self.ended_at())

    def window(self, start: int, n: int) -> np.ndarray:
        """The bot audio scheduled on timeline samples ``[start, start + n)`` (silence where none)."""
        out = np.zeros(n, dtype=np.int16)
        for seg in self.segments:
            lo, hi = max(start, seg.start), min(start + n, seg.start + len(seg.pcm))
            if hi > lo:
                out[lo - start : hi - start] = seg.pcm[lo - seg.start : hi - seg.start]
        return out

    def played_samples(self, now: float) -> int:
        pos = _sample(now)
        return sum(min(len(seg.pcm), max(0, pos - seg.start)) for seg in self.segments)


# --------------------------------------------------------------------------------------------- wire


Checked = tuple[str, Any] | str  # ("media", pcm 8 kHz) | ("mark", name) | ("clear", None) | why malformed


class TwilioWire:
    """Twilio Media Streams: camelCase JSON, 20 ms μ-law frames."""

    name = "Twilio"
    frame_samples = FRAME_SAMPLES  # what one inbound media message carries, at 8 kHz

    def __init__(self) -> None:
        self.stream_sid = "MZ" + secrets.token_hex(16)
        self.account_sid = "AC" + secrets.token_hex(16)
        self.call_sid = "CA" + secrets.token_hex(16)

    def connected(self) -> dict[str, Any]:
        return {"event": "connected", "protocol": "Call", "version": "1.0.0"}

    def start(self, seq: int, custom_parameters: dict[str, str]) -> dict[str, Any]:
        return {
            "event": "start",
            "sequenceNumber": str(seq),
            "streamSid": self.stream_sid,
            "start": {
                "streamSid": self.stream_sid,
                "accountSid": self.account_sid,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "customParameters": dict(custom_parameters),
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": RATE, "channels": 1},
            },
        }

    def encode(self, pcm: np.ndarray) -> tuple[bytes, np.ndarray]:
        """One frame's payload, and the audio the server decodes from it (8 kHz)."""
        payload = ulaw_encode(pcm)
        return payload, ulaw_decode(payload)

    def media(self, seq: int, chunk: int, timestamp_ms: int, payload: bytes) -> dict[str, Any]:
        return {
            "event": "media",
            "sequenceNumber": str(seq),
            "streamSid": self.stream_sid,
            "media": {
                "track": "inbound",
                "chunk": str(chunk),
                "timestamp": str(timestamp_ms),
                "payload": base64.b64encode(payload).decode("ascii"),
            },
        }

    def mark(self, seq: int, name: str) -> dict[str, Any]:
        mark = {"name": name}
        return {"event": "mark", "sequenceNumber": str(seq), "streamSid": self.stream_sid, "mark": mark}

    def stop(self, seq: int) -> dict[str, Any]:
        return {
            "event": "stop",
            "sequenceNumber": str(seq),
            "streamSid": self.stream_sid,
            "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
        }

    def check(self, raw: str | bytes) -> Checked:
        """Validate a server message, or say why it is malformed."""
        msg = _json_object(raw, self.name)
        if isinstance(msg, str):
            return msg
        event = msg.get("event")
        if event not in ("media", "mark", "clear"):
            return f"unknown event {event!r}"
        if msg.get("streamSid") != self.stream_sid:
            return f"{event}: wrong or missing streamSid {msg.get('streamSid')!r}"
        return self._check_event(msg)

    def _check_event(self, msg: dict[str, Any]) -> Checked:
        event = msg["event"]
        if event == "clear":
            return "clear", None
        if event == "mark":
            mark = msg.get("mark")
            name = mark.get("name") if isinstance(mark, dict) else None
            return ("mark", name) if isinstance(name, str) else "mark: no mark.name string"
        media = msg.get("media")
        payload = media.get("payload") if isinstance(media, dict) else None
        if not isinstance(payload, str):
            return "media: no media.payload string"
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            return "media: payload is not valid base64"
        return self._decode(data) if data else "media: empty payload"

    def _decode(self, data: bytes) -> Checked:
        return "media", ulaw_decode(data)


class ExotelWire(TwilioWire):
    """Exotel's Voicebot applet: snake_case JSON, PCM16 little-endian at ``sample_rate``, ``chunk_ms``
    inbound chunks; outbound media must be ≥ 3,200 bytes, ≤ 100 KB, a multiple of 320 bytes."""

    name = "Exotel"
    MIN_BYTES, MULTIPLE, MAX_BYTES = 3200, 320, 100 * 1024

    def __init__(self, sample_rate: int = RATE, chunk_ms: int = 100) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.frame_samples = RATE * chunk_ms // 1000

    def connected(self) -> dict[str, Any]:
        return {"event": "connected"}

    def start(self, seq: int, custom_parameters: dict[str, str]) -> dict[str, Any]:
        params = dict(custom_parameters)
        return {
            "event": "start",
            "sequence_number": seq,
            "stream_sid": self.stream_sid,
            "start": {
                "stream_sid": self.stream_sid,
                "call_sid": self.call_sid,
                "account_sid": self.account_sid,
                "from": params.pop("from", ""),
                "to": params.pop("to", ""),
                "custom_parameters": params,
                "media_format": {
                    "encoding": "audio/x-raw",
                    "sample_rate": str(self.sample_rate),
                    "bit_rate": f"{self.sample_rate * 16 // 1000}kbps",
                },
            },
        }

    def encode(self, pcm: np.ndarray) -> tuple[bytes, np.ndarray]:
        # chunk by chunk, so every chunk carries its own audio (a soxr stream releases ~100 ms blocks)
        wire = resample(pcm, RATE, self.sample_rate) if self.sample_rate != RATE else pcm
        return wire.astype("<i2").tobytes(), pcm  # lossless at 8 kHz: the server hears what was said

    def media(self, seq: int, chunk: int, timestamp_ms: int, payload: bytes) -> dict[str, Any]:
        encoded = base64.b64encode(payload).decode("ascii")
        media = {"chunk": chunk, "timestamp": str(timestamp_ms), "payload": encoded}
        return {"event": "media", "sequence_number": seq, "stream_sid": self.stream_sid, "media": media}

    def mark(self, seq: int, name: str) -> dict[str, Any]:
        mark = {"name": name}
        return {"event": "mark", "sequence_number": seq, "stream_sid": self.stream_sid, "mark": mark}

    def stop(self, seq: int) -> dict[str, Any]:
        stop = {"call_sid": self.call_sid, "account_sid": self.account_sid, "reason": "callended"}
        return {"event": "stop", "sequence_number": seq, "stream_sid": self.stream_sid, "stop": stop}

    def check(self, raw: str | bytes) -> Checked:
        msg = _json_object(raw, self.name)
        if isinstance(msg, str):
            return msg
        event = msg.get("event")
        if event not in ("media", "mark", "clear"):
            return f"unknown event {event!r}"
        if msg.get("stream_sid") != self.stream_sid:
            return f"{event}: wrong or missing stream_sid {msg.get('stream_sid')!r}"
        return self._check_event(msg)

    def _decode(self, data: bytes) -> Checked:
        size = len(data)
        if size < self.MIN_BYTES or size % self.MULTIPLE or size > self.MAX_BYTES:
            return (f"media: {size} bytes breaks Exotel's chunk rules "
                    f"(≥ {self.MIN_BYTES}, a multiple of {self.MULTIPLE}, ≤ {self.MAX_BYTES})")
        pcm = np.frombuffer(data, dtype="<i2").astype(np.int16)
        return "media", resample(pcm, self.sample_rate, RATE) if self.sample_rate != RATE else pcm


def _json_object(raw: str | bytes, carrier: str) -> dict[str, Any] | str:
    if isinstance(raw, bytes):
        return f"binary frame ({carrier} accepts JSON text frames only)"
    try:
        msg = json.loads(raw)
    except ValueError:
        return "not JSON"
    return msg if isinstance(msg, dict) else "not a JSON object"


def make_wire(carrier: str = "twilio", sample_rate: int = RATE) -> TwilioWire:
    """The wire format of ``carrier`` (one of CARRIERS; ``sample_rate`` is Exotel's or Vonage's)."""
    if carrier in callers.WIRES:  # one module each (switchboard/callers/)
        return callers.make(carrier, sample_rate)
    if carrier == "exotel":
        return ExotelWire(sample_rate)
    if carrier == "twilio":
        if sample_rate != RATE:
            raise ValueError("Twilio media is 8 kHz only")
        return TwilioWire()
    raise ValueError(f"unknown carrier {carrier!r}; choose one of {', '.join(CARRIERS)}")


# --------------------------------------------------------------------------------------------- sender


class MediaSender:
    """The carrier's outgoing side of the socket: sequence numbers and the paced media frames.

    ``run()`` is the frame loop: frame k covers ``[k·F, (k+1)·F)`` of the call timeline (F = 20 ms for
    Twilio, the wire's chunk for Exotel) and goes out when the clock reaches its start. It carries the
    current line's audio, or silence — or nothing at all when ``silence_frames`` is False.
    """

    def __init__(
        self,
        ws: Any,
        clock: SimClock,
        *,
        custom_parameters: dict[str, str],
        silence_frames: bool = True,
        wire: TwilioWire | None = None,
    ) -> None:
        self.ws = ws
        self.clock = clock
        self.custom_parameters = custom_parameters
        self.silence_frames = silence_frames
        self.wire = wire or TwilioWire()
        self.frame_samples = self.wire.frame_samples
        self.frame_s = self.frame_samples / RATE
        self.stream_sid = self.wire.stream_sid
        self.account_sid = self.wire.account_sid
        self.call_sid = self.wire.call_sid
        self.sent_speech: list[_Segment] = []  # what the caller said, as the server decodes it
        self._seq = 0
        self._chunk = 0
        self._frame = 0
        self._line: np.ndarray | None = None
        self._line_pos = 0
        self._line_started: asyncio.Future[float] | None = None
        self._line_ended: asyncio.Future[float] | None = None
        self._line_not_before = 0.0
        self._stopped = False  # stop sent: no media may follow it
        # (first timeline sample, count) -> what leaks back from the bot into the caller's microphone
        self.echo: Callable[[int, int], np.ndarray] | None = None

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    async def _send(self, message: dict[str, Any] | str | bytes | None) -> None:
        if self._stopped or message is None:  # Twilio sends nothing after stop; some carriers lack a message
            return
        await self.ws.send(message if isinstance(message, (str, bytes)) else json.dumps(message))

    async def send_handshake(self) -> None:
        """Send `connected` and `start`."""
        await self._send(self.wire.connected())
        await self._send(self.wire.start(self._next_seq(), self.custom_parameters))

    def say(self, pcm: np.ndarray) -> tuple[asyncio.Future[float], asyncio.Future[float]]:
        """Speak 8 kHz PCM from the first frame starting now or later; returns futures of its start and
        end times (on the frame timeline)."""
        if self._line is not None:
            raise RuntimeError("the caller is already speaking")
        padded = -len(pcm) % self.frame_samples
        self._line = np.concatenate([pcm, np.zeros(padded, dtype=np.int16)]) if padded else pcm
        self._line_pos = 0
        # a frame loop running late must not start the line in a slot that began before this decision
        self._line_not_before = self.clock.now()
        loop = asyncio.get_running_loop()
        self._line_started, self._line_ended = loop.create_future(), loop.create_future()
        return self._line_started, self._line_ended

    async def run(self) -> None:
        """The frame loop; runs until cancelled."""
        while True:
            t = self._frame * self.frame_s
            await self.clock.sleep_until(t)
            echo = self.echo(self._frame * self.frame_samples, self.frame_samples) if self.echo else None
            if self._line is not None and (self._line_pos > 0 or t >= self._line_not_before - 1e-9):
                await self._send_line_frame(t, echo)
            elif self.silence_frames or (echo is not None and echo.any()):
                silence = np.zeros(self.frame_samples, dtype=np.int16)
                payload, heard = self.wire.encode(silence if echo is None else echo)
                if echo is not None and echo.any():
                    self.sent_speech.append(_Segment(self._frame * self.frame_samples, heard))
                await self._send_media(payload)
            self._frame += 1

    async def _send_line_frame(self, t: float, echo: np.ndarray | None = None) -> None:
        assert self._line is not None and self._line_started and self._line_ended
        frame = self._line[self._line_pos : self._line_pos + self.frame_samples]
        if echo is not None:
            mixed = frame.astype(np.int32) + echo[: len(frame)]
            frame = np.clip(mixed, -32768, 32767).astype(np.int16)
        payload, heard = self.wire.encode(frame)
        await self._send_media(payload)
        self.sent_speech.append(_Segment(self._frame * self.frame_samples, heard))
        if self._line_pos == 0:
            self._line_started.set_result(t)
        self._line_pos += self.frame_samples
        if self._line_pos >= len(self._line):
            self._line = None
            self._line_ended.set_result(t + self.frame_s)

    async def _send_media(self, payload: bytes) -> None:
        self._chunk += 1
        timestamp_ms = round(self._frame * self.frame_s * 1000)
        await self._send(self.wire.media(self._next_seq(), self._chunk, timestamp_ms, payload))

    async def echo_mark(self, name: str) -> None:
        await self._send(self.wire.mark(self._next_seq(), name))

    async def send_stop(self) -> None:
        """Send `stop`; nothing is sent after it."""
        message = self.wire.stop(self._next_seq())
        if message is not None:  # a carrier without one just closes the socket
            await self._send(message)
        self._stopped = True


# --------------------------------------------------------------------------------------------- the call


def synthesize_line(text: str, voice: str, rate: float = 1.0) -> tuple[np.ndarray, int]:
    """Synthesise a caller line; returns (pcm int16, rate). `voice` "piper": Piper's voice rendered
    PIPER_PITCH times slower and played at PIPER_PITCH times its rate (same length, higher voice);
    else an eSpeak NG voice. `rate` > 1 speaks faster."""
    if voice == "piper":
        from switchboard.providers.piper import voice as piper_voice

        speaker = piper_voice()
        return speaker.render(text, speed=rate / PIPER_PITCH), round(speaker.sample_rate * PIPER_PITCH)
    from switchboard.providers.espeak import synthesize

    return synthesize(text, voice=voice, rate=round(175 * rate)), 22050


PAUSE_MARK = re.compile(r"\[\s*(\d+(?:\.\d+)?)\s*s\s*\]")  # "[0.8s]" in a line's text: a pause


def prepare_audio(line: CallerLine, voice: str, rate: float = 1.0) -> np.ndarray:
    """The line's audio as 8 kHz int16 mono. ``[0.8s]`` in a text line is a pause of that length."""
    if line.wav is not None:
        pcm, rate = read_wav(line.wav)
        pcm = np.asarray(pcm, dtype=np.int16).reshape(-1)
        if rate != RATE:
            pcm = resample(pcm, rate, RATE)
    else:
        assert line.text is not None
        parts = PAUSE_MARK.split(line.text)  # phrase, pause, phrase, pause, ...
        pieces = []
        for n, part in enumerate(parts):
            if n % 2:
                pieces.append(np.zeros(round(float(part) * RATE), dtype=np.int16))
            elif part.strip():
                speech, speech_rate = synthesize_line(part.strip(), voice, rate)
                pieces.append(resample(np.asarray(speech, dtype=np.int16), speech_rate, RATE))
        pcm = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int16)
    if len(pcm) == 0:
        raise ValueError(f"line {line.label!r} has no audio")
    return pcm


class _Call:
    """One simulated call: the receiver, playback ticker and script tasks, and their shared state."""

    def __init__(
        self,
        ws: Any,
        clock: SimClock,
        sender: MediaSender,
        lines: list[CallerLine],
        audio: list[np.ndarray],
        *,
        emit: EventCallback,
        hangup_timeout_s: float,
        reply_timeout_s: float,
        echo_marks: bool = True,
    ) -> None:
        self.ws = ws
        self.echo_marks = echo_marks
        self.clock = clock
        self.sender = sender
        self.playback = Playback()
        self.lines = lines
        self.audio = audio
        self.emit = emit
        self.hangup_timeout_s = hangup_timeout_s
        self.reply_timeout_s = reply_timeout_s
        self.result = CallResult(
            stream_sid=sender.stream_sid,
            call_sid=sender.call_sid,
            lines=[LineResult(i, line.label, line.barge_in) for i, line in enumerate(lines)],
        )
        self._current: LineResult | None = None  # the line spoken most recently
        self._awaiting_reply: LineResult | None = None  # ended, no bot reply yet
        self._reply_needs_new_talk = False  # the bot was audible when that line ended
        self._bot_talking = False  # as last reported by an event
        self.closing = False  # we are ending the call ourselves

    # -- receiver ------------------------------------------------------------------------------------

    async def receive(self) -> None:
        """Handle the server's messages until the socket closes."""
        try:
            async for raw in self.ws:
                await self._handle(raw)
        except ConnectionClosed:
            pass
        if not self.closing:
            self.result.hangup = True
            self.emit(Hangup(self.clock.now()))

    async def _handle(self, raw: str | bytes) -> None:
        now = self.clock.now()
        self._check_bot_ended(now)
        checked = self._parse(raw)
        if isinstance(checked, str):
            self._malformed(now, checked, raw)
        elif checked[0] == "media":
            self._on_bot_audio(checked[1], now)
        elif checked[0] == "mark":
            self.result.marks_received += 1
            self.playback.add_mark(checked[1], now)
            await self._echo_due_marks(now)
        else:
            await self._on_clear(now)

    def _parse(self, raw: str | bytes) -> Checked:
        """Validate a server message: ``("media", pcm)``, ``("mark", name)``, ``("clear", None)``, or the
        reason it is malformed (the carrier's wire format decides)."""
        return self.sender.wire.check(raw)

    def _malformed(self, now: float, reason: str, raw: str | bytes) -> None:
        example = repr(raw[:120]) + ("…" if len(raw) > 120 else "")
        self.result.malformed_count += 1
        if len(self.result.malformed_examples) < MAX_MALFORMED_EXAMPLES:
            self.result.malformed_examples.append(f"{reason}: {example}")
        self.emit(MalformedMessage(now, reason, example))

    def _on_bot_audio(self, pcm: np.ndarray, now: float) -> None:
        starts = self.playback.add_audio(pcm, now)
        lead_s = (self.playback.queue_end - _sample(now)) / RATE
        self.result.max_bot_lead_s = max(self.result.max_bot_lead_s, lead_s)
        line, delay_ms = self._awaiting_reply, None
        # the reply is the first audio after the line ended — or, if the bot was still audible then
        # (talking over the caller), the next time it starts talking
        if line is not None and (starts or not self._reply_needs_new_talk):
            assert line.ended_s is not None
            delay_ms = line.response_delay_ms = (now - line.ended_s) * 1000
            self._awaiting_reply = None
        if starts or delay_ms is not None:
            self._bot_talking = True
            self.emit(BotAudioStarted(now, delay_ms))

    async def _on_clear(self, now: float) -> None:
        pending = self.playback.clear(now)
        self.result.clears_received += 1
        line, since_ms = self._current, None
        # a clear answers the current line if it came after its onset and before the bot replied to it
        if line is not None and not line.clear_received and line.response_delay_ms is None:
            assert line.started_s is not None
            since_ms = (now - line.started_s) * 1000
            line.clear_after_onset_ms = since_ms
        self.emit(ClearReceived(now, since_ms, len(pending)))
        self._check_bot_ended(now)
        for name in pending:
            await self._echo(name, now, cleared=True)

    # -- playback ticker -----------------------------------------------------------------------------

    async def tick(self) -> None:
        """Advance the playhead: echo marks it passed, notice when the bot falls silent."""
        while True:
            await self.clock.sleep(TICK_S)
            now = self.clock.now()
            self._check_bot_ended(now)
            await self._echo_due_marks(now)

    def _check_bot_ended(self, now: float) -> None:
        if self._bot_talking and not self.playback.talking(now):
            self._bot_talking = False
            self.emit(BotAudioEnded(self.playback.ended_at()))

    async def _echo_due_marks(self, now: float) -> None:
        for name in self.playback.due_marks(now):
            await self._echo(name, now, cleared=False)

    async def _echo(self, name: str, now: float, *, cleared: bool) -> None:
        if not self.echo_marks:  # a carrier that never confirms playback: the server must not wait forever
            return
        if cleared and not getattr(self.sender.wire, "echoes_cleared_marks", True):  # Plivo, Vonage
            return
        await self.sender.echo_mark(name)
        self.result.marks_echoed += 1
        self.result.marks_cleared += cleared
        self.emit(MarkEchoed(now, name, cleared))

    # -- script --------------------------------------------------------------------------------------

    async def script(self) -> None:
        """Speak every line in turn, then wait for the server to hang up (or send stop)."""
        since = 0.0  # the bot must say something after this before a normal line
        for line, audio, result in zip(self.lines, self.audio, self.result.lines, strict=True):
            since = await self.speak(line, audio, result, since)
        await self.hang_up(since)

    async def speak(self, line: CallerLine, audio: np.ndarray, result: LineResult, since: float) -> float:
        """Say one line at its moment after ``since`` (see `CallerLine`); returns when it ended."""
        await self._wait_for_turn(line, since)
        started, ended = self.sender.say(audio)
        result.started_s = await started
        self._current = result
        self.emit(LineStarted(result.started_s, result.index, result.text, result.barge_in))
        result.ended_s = await ended
        self._awaiting_reply = result
        self._reply_needs_new_talk = self.playback.audible(result.ended_s)
        self.emit(LineEnded(result.ended_s, result.index))
        return result.ended_s

    async def speak_next(self, line: CallerLine, audio: np.ndarray, since: float) -> float:
        """Say a line decided during the call (an LLM caller's): its result joins the call's."""
        result = LineResult(len(self.result.lines), line.label, line.barge_in)
        self.result.lines.append(result)
        return await self.speak(line, audio, result, since)

    async def wait_for_reply(self, since: float) -> np.ndarray:
        """Until the bot has replied since ``since`` and finished (or the reply timeout); returns the bot's
        audio the caller heard since then (8 kHz; cut where a clear cut it)."""
        await self._wait_for_turn(CallerLine(text="(waiting)"), since)
        start = _sample(since)
        return self.playback.window(start, max(0, _sample(self.clock.now()) - start))

    async def hang_up(self, since: float, wait: bool = True) -> None:
        """Wait (``wait``) for the server to hang up after the last line and its reply, else send stop."""
        if wait:
            await self._wait_for_hangup(since)
        self.closing = True
        await self.sender.send_stop()
        self.result.stop_sent = True
        self.emit(StopSent(self.clock.now()))

    def _replied_since(self, since: float) -> bool:
        return self.playback.talk_start is not None and self.playback.talk_start >= since

    async def _wait_for_turn(self, line: CallerLine, since: float) -> None:
        """Wait until the bot has replied (or greeted) since ``since`` and it is this line's moment."""
        deadline = since + self.reply_timeout_s
        pb = self.playback
        while True:
            now = self.clock.now()
            replied = self._replied_since(since)
            if line.barge_in and replied:
                assert pb.talk_start is not None
                if pb.audible(now) and now - pb.talk_start >= BARGE_IN_AFTER_S:
                    return
                if not pb.talking(now):
                    self.emit(Notice(now, "the bot's reply was too short to talk over"))
                    return
            elif replied and not pb.talking(now):
                await self.clock.sleep(PAUSE_BEFORE_LINE_S)
                if not pb.audible(self.clock.now()):
                    return
            elif now >= deadline and (not pb.audible(now) or now >= deadline + self.reply_timeout_s):
                self.emit(
                    Notice(now, f"no reply from the bot within {self.reply_timeout_s:g} s; speaking anyway")
                )
                return
            await self.clock.sleep(TICK_S)

    async def _wait_for_hangup(self, since: float) -> None:
        """Return once the bot has been silent for ``hangup_timeout_s`` after the last line and its reply."""
        while True:
            now = self.clock.now()
            quiet_since = max(since, self.playback.ended_at())
            if not self.playback.audible(now) and now - quiet_since >= self.hangup_timeout_s:
                return
            await self.clock.sleep(TICK_S)

    # -- results -------------------------------------------------------------------------------------

    def finish(self, record_path: str | None) -> CallResult:
        """Fill in the totals (and write the recording) at the end of the call."""
        now = self.clock.now()
        self._check_bot_ended(now)
        result = self.result
        result.duration_s = now
        result.bot_audio_received_s = self.playback.received_samples / RATE
        result.bot_audio_played_s = self.playback.played_samples(now) / RATE
        result.talk_over_s = talk_over_s(result.lines, self.playback.segments, now)
        if record_path is not None:
            length = _sample(now)
            if self.sender.sent_speech:
                last = self.sender.sent_speech[-1]
                length = max(length, last.start + len(last.pcm))
            left = _render(self.sender.sent_speech, length)
            right = np.zeros(length, dtype=np.int16)
            right[: _sample(now)] = _render(self.playback.segments, _sample(now))  # queued, unplayed: cut
            write_wav(record_path, np.stack([left, right], axis=1), RATE)
            result.record_path = record_path
        return result


def talk_over_s(lines: list[LineResult], bot: list[_Segment], now: float) -> float:
    """Seconds during which a caller line and the bot's audio (as played: cut at clears) overlapped."""
    caller = [(line.started_s, line.ended_s) for line in lines
              if line.started_s is not None and line.ended_s is not None]
    spans: list[tuple[float, float]] = []
    for seg in sorted(bot, key=lambda seg: seg.start):
        start, end = seg.start / RATE, min((seg.start + len(seg.pcm)) / RATE, now)
        if spans and start <= spans[-1][1] + 1e-9:
            spans[-1] = (spans[-1][0], max(spans[-1][1], end))
        elif end > start:
            spans.append((start, end))
    return round(sum(max(0.0, min(b, end) - max(a, start)) for a, b in caller for start, end in spans), 3)


def background_noise(level_db: float, seed: int = 0) -> Callable[[int, int], np.ndarray]:
    """Steady background noise at `level_db` dBFS (RMS), mixed into the caller's line like an echo."""
    rng = np.random.default_rng(seed)
    rms = 32768 * 10 ** (level_db / 20)

    def noise(_start: int, n: int) -> np.ndarray:
        return np.clip(rng.normal(0.0, rms, n), -32768, 32767).astype(np.int16)

    return noise


def _mix(sources: list[Callable[[int, int], np.ndarray]]) -> Callable[[int, int], np.ndarray]:
    def mixed(start: int, n: int) -> np.ndarray:
        total = sum(source(start, n).astype(np.int32) for source in sources)
        return np.clip(total, -32768, 32767).astype(np.int16)

    return mixed


def _closed_under(task: asyncio.Task[None]) -> bool:
    """True if the task ended because the socket closed under one of its sends."""
    return not task.cancelled() and isinstance(task.exception(), ConnectionClosed)


async def run_call(
    url: str,
    lines: list[CallerLine],
    *,
    speed: float = 1.0,
    custom_parameters: dict[str, str] | None = None,
    record_path: str | None = None,
    voice: str = DEFAULT_VOICE,
    silence_frames: bool = True,
    on_event: EventCallback | None = None,
    hangup_timeout_s: float = 15.0,
    reply_timeout_s: float = 15.0,
    carrier: str = "twilio",
    sample_rate: int = RATE,
    echo: Echo | None = None,
    echo_marks: bool = True,
    rate: float = 1.0,
    noise_db: float | None = None,
    script: Callable[[_Call], Awaitable[None]] | None = None,
) -> CallResult:
    """Place a simulated Twilio call to the Media Streams server at ``url`` and play the script.

    ``carrier="exotel"`` speaks Exotel's Voicebot protocol instead, at ``sample_rate`` (8000, 16000
    or 24000); ``from``/``to`` in ``custom_parameters`` then go into `start`'s own fields.

    ``on_event`` receives every `CallerEvent` (default: print the conversation). The call ends when the
    server closes the socket (``hangup=True``) or, after the last line, once the bot has been silent for
    ``hangup_timeout_s`` — then the caller sends `stop` and closes. A normal line waits at most
    ``reply_timeout_s`` for the bot's reply to the previous line. All durations are simulated seconds.
    ``echo`` feeds the bot's audio back into the caller's line (a speakerphone without echo control).
    ``echo_marks=False`` never echoes the server's marks (a carrier that doesn't confirm playback).
    ``rate`` > 1 speaks the lines faster; ``noise_db`` mixes steady noise at that level (dBFS) into the line.
    ``script(call)`` plays the caller instead of ``lines`` (an LLM caller: `_Call.wait_for_reply`,
    `speak_next`, `hang_up`).
    Raises OSError / websockets errors when the server cannot be reached.
    """
    if speed <= 0:
        raise ValueError("speed must be > 0")
    emit = on_event if on_event is not None else print_event
    params = dict(DEFAULT_CUSTOM_PARAMETERS if custom_parameters is None else custom_parameters)
    wire = make_wire(carrier, sample_rate)
    audio = [await asyncio.to_thread(prepare_audio, line, voice, rate) for line in lines]

    headers: dict[str, str] = {}
    if hasattr(wire, "open"):  # the carrier's answer webhook first (switchboard/callers/)
        url, headers = await wire.open(url, params)
    async with websockets.connect(url, max_size=2**24, additional_headers=headers) as ws:
        clock = SimClock(speed)
        sender = MediaSender(ws, clock, custom_parameters=params, silence_frames=silence_frames, wire=wire)
        call = _Call(
            ws,
            clock,
            sender,
            list(lines),
            audio,
            emit=emit,
            hangup_timeout_s=hangup_timeout_s,
            reply_timeout_s=reply_timeout_s,
            echo_marks=echo_marks,
        )
        leaks = [echo.leak(call.playback)] if echo is not None else []
        leaks += [background_noise(noise_db)] if noise_db is not None else []
        if leaks:
            sender.echo = leaks[0] if len(leaks) == 1 else _mix(leaks)
        with contextlib.suppress(ConnectionClosed):  # a server closing at once: the receiver reports it
            await sender.send_handshake()
        receiver = asyncio.create_task(call.receive(), name="caller-receive")
        others = [
            asyncio.create_task(sender.run(), name="caller-frames"),
            asyncio.create_task(call.tick(), name="caller-playback"),
            asyncio.create_task(call.script() if script is None else script(call), name="caller-script"),
        ]
        done: set[asyncio.Task[None]] = set()
        try:
            done, _ = await asyncio.wait([receiver, *others], return_when=asyncio.FIRST_COMPLETED)
        finally:
            # unless the server went away, it is us ending the call: closing the socket is no hang-up
            server_gone = receiver in done or any(_closed_under(task) for task in done)
            call.closing = call.closing or not server_gone
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            await ws.close()
            await asyncio.gather(receiver, return_exceptions=True)
        for task in done:  # surface bugs
            exc = task.exception()
            if exc is not None and not isinstance(exc, ConnectionClosed):
                raise exc
        result = call.finish(record_path)
        result.close_code, result.close_reason = ws.close_code, ws.close_reason or ""
        return result


# --------------------------------------------------------------------------------------------- CLI


class _AppendLine(argparse.Action):
    """Collect --say / --barge-in / --wav into one ordered script."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, value: Any, option: Any = None) -> None:
        script = list(getattr(namespace, self.dest, None) or [])
        kind = self.const
        script.append(
            CallerLine(wav=value) if kind == "wav" else CallerLine(text=value, barge_in=kind == "barge")
        )
        setattr(namespace, self.dest, script)


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``switchboard call``."""
    parser.add_argument("url", help="the server's media WebSocket, e.g. ws://127.0.0.1:8000/media-stream")
    parser.add_argument(
        "--carrier",
        choices=CARRIERS,
        default="twilio",
        help="whose protocol to speak: twilio (default), exotel (e.g. ws://127.0.0.1:8000/exotel), or "
             "plivo / vonage (the server's http address: the caller plays the answer webhook, signed with "
             "PLIVO_AUTH_TOKEN / VONAGE_SIGNATURE_SECRET when set, then the socket it names), or telnyx "
             "(its TeXML webhook, unsigned, then its stream; or the ws:// stream URL)",
    )
    parser.add_argument(
        "--sample-rate",
        type=int,
        choices=(8000, 16000, 24000),
        default=RATE,
        help="exotel: the PCM rate negotiated in start.media_format; vonage at a ws:// URL: the L16 rate "
             "(over http the NCCO says it); telnyx: 16000 speaks L16 at 16 kHz, not PCMU (default 8000)",
    )
    parser.add_argument(
        "--say",
        dest="script",
        action=_AppendLine,
        const="say",
        metavar="TEXT",
        help="a line spoken once the bot has finished talking (repeatable, in order); '[0.8s]' in it "
        "is a pause",
    )
    parser.add_argument(
        "--barge-in",
        dest="script",
        action=_AppendLine,
        const="barge",
        metavar="TEXT",
        help="a line spoken over the bot's reply, ~1 s into it",
    )
    parser.add_argument(
        "--wav",
        dest="script",
        action=_AppendLine,
        const="wav",
        metavar="FILE",
        help="a line played from a WAV file (resampled to 8 kHz)",
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="run the whole simulation N times faster than real time (default 1)",
    )
    parser.add_argument("--record", metavar="WAV", help="write a stereo 8 kHz WAV: left caller, right bot")
    parser.add_argument(
        "--voice", default=DEFAULT_VOICE,
        help=f"the caller's voice: piper (the embedded natural voice, pitched up) or an eSpeak NG voice such "
             f"as en-us+klatt4 (default {DEFAULT_VOICE})"
    )
    parser.add_argument(
        "--param",
        dest="params",
        action="append",
        type=_key_value,
        default=None,
        metavar="KEY=VALUE",
        help="a start.customParameters entry (repeatable; default from/to test numbers)",
    )
    parser.add_argument(
        "--no-silence-frames",
        dest="silence_frames",
        action="store_false",
        help="send no media frames while the caller is silent (some real calls do this)",
    )
    parser.add_argument(
        "--hangup-timeout",
        type=float,
        default=15.0,
        metavar="S",
        help="after the last line, send stop if the bot is silent this long (default 15)",
    )
    parser.add_argument(
        "--reply-timeout",
        type=float,
        default=15.0,
        metavar="S",
        help="speak the next line anyway if the bot has not replied within S (default 15)",
    )
    parser.add_argument(
        "--echo",
        type=float,
        metavar="DB",
        help="feed the bot's voice back into the caller's line this many dB down, e.g. -15 (a speakerphone)",
    )
    parser.add_argument("--echo-delay", type=float, default=120.0, metavar="MS",
                        help="the echo's delay after the bot's audio plays (default 120)")
    parser.add_argument("--verbose", action="store_true", help="also print mark echoes and audio ends")
    parser.set_defaults(script=[])


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``switchboard call``; exit code 0 ok, 1 the call failed, 2 the server sent malformed messages."""
    if args.speed <= 0:
        print("--speed must be > 0", file=sys.stderr)
        return 1
    missing = [line.wav for line in args.script if line.wav is not None and not Path(line.wav).is_file()]
    if missing:
        print(f"no such WAV file: {', '.join(missing)}", file=sys.stderr)
        return 1
    if args.carrier in ("twilio", "plivo") and args.sample_rate != RATE:
        print("--sample-rate is for --carrier exotel, vonage or telnyx (Twilio's and Plivo's media is 8 kHz "
              "μ-law)", file=sys.stderr)
        return 1
    if args.carrier == "telnyx" and args.sample_rate == 24000:
        print("--sample-rate for telnyx: 8000 (PCMU) or 16000 (L16)", file=sys.stderr)
        return 1
    params = dict(DEFAULT_CUSTOM_PARAMETERS)
    params.update(dict(args.params or []))
    try:
        result = asyncio.run(
            run_call(
                args.url,
                args.script,
                speed=args.speed,
                custom_parameters=params,
                record_path=args.record,
                voice=args.voice,
                silence_frames=args.silence_frames,
                on_event=make_printer(verbose=args.verbose),
                hangup_timeout_s=args.hangup_timeout,
                reply_timeout_s=args.reply_timeout,
                carrier=args.carrier,
                sample_rate=args.sample_rate,
                echo=Echo(args.echo_delay, args.echo) if args.echo is not None else None,
            )
        )
    except ImportError as exc:  # text lines need the eSpeak NG provider
        print(f"cannot synthesise the caller's lines: {exc}", file=sys.stderr)
        return 1
    except (OSError, InvalidURI, InvalidHandshake, TimeoutError) as exc:
        print(f"call to {args.url} failed: {exc}", file=sys.stderr)
        return 1
    print(format_summary(result))
    return 2 if result.malformed_count else 0
