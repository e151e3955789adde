"""What the caller reports as the call goes: `CallerEvent`s, and the transcript lines they print as."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, TextIO


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
