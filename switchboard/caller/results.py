"""A simulated call's measurements (`CallResult`, one `LineResult` per line), their summary, and the
call's recording."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from switchboard.audio.wav import write_wav
from switchboard.caller.timeline import RATE, Segment, render, sample_at


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


def talk_over_s(lines: list[LineResult], bot: list[Segment], now: float) -> float:
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


def write_recording(path: str, caller: list[Segment], bot: list[Segment], now: float) -> None:
    """A stereo 8 kHz WAV of the call: left what the caller said (as the server decoded it), right the
    bot's audio as it played (queued, unplayed audio cut at ``now``)."""
    length = sample_at(now)
    if caller:
        last = caller[-1]
        length = max(length, last.start + len(last.pcm))
    left = render(caller, length)
    right = np.zeros(length, dtype=np.int16)
    right[: sample_at(now)] = render(bot, sample_at(now))  # queued, unplayed: cut
    write_wav(path, np.stack([left, right], axis=1), RATE)
