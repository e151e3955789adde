"""A call's recording: caller left, bot right, 8 kHz, on the call's clock; written as a WAV at the end.

`CallSession` feeds it the caller's audio as it arrives and the `Player` feeds it each bot frame at the
time the carrier should play it; a `clear` cuts the bot's track where the caller stopped hearing it.
Both tracks are growable int16 arrays (16 KB per second of call each), so a call costs ~2 MB a minute.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path

import numpy as np

from switchboard.audio.wav import write_wav

log = logging.getLogger("switchboard.recorder")

RATE = 8000
RESYNC_S = 0.06  # caller audio arriving this much later than its track's end starts at its arrival


class _Track:
    """Mono int16 audio placed at sample positions; what is never written stays silent."""

    def __init__(self) -> None:
        self._pcm = np.zeros(RATE * 10, dtype=np.int16)
        self.length = 0

    def write(self, start: int, pcm: np.ndarray) -> None:
        start = max(0, start)
        end = start + len(pcm)
        if end > len(self._pcm):
            grown = np.zeros(max(end, 2 * len(self._pcm)), dtype=np.int16)
            grown[: self.length] = self._pcm[: self.length]
            self._pcm = grown
        if start > self.length:
            self._pcm[self.length : start] = 0
        self._pcm[start:end] = pcm
        self.length = max(self.length, end)

    def cut(self, at: int) -> None:
        """Silence everything from sample `at` on."""
        if at < self.length:
            self._pcm[max(0, at) : self.length] = 0
            self.length = max(0, at)

    def render(self, length: int) -> np.ndarray:
        out = np.zeros(length, dtype=np.int16)
        n = min(length, self.length)
        out[:n] = self._pcm[:n]
        return out


class Recorder:
    """One call's two tracks. Times are `time.monotonic()` readings; `started_at` is sample 0."""

    def __init__(self, started_at: float) -> None:
        self.started_at = started_at
        self.caller = _Track()
        self.bot = _Track()

    def _sample(self, at: float) -> int:
        return round((at - self.started_at) * RATE)

    def add_caller(self, pcm: np.ndarray, at: float) -> None:
        """Caller audio that arrived at `at`: appended to the track, or placed at its arrival after a gap
        (a carrier that sends nothing during silence)."""
        arrival = self._sample(at)
        start = arrival if arrival > self.caller.length + RESYNC_S * RATE else self.caller.length
        self.caller.write(start, pcm)

    def add_bot(self, pcm: np.ndarray, plays_at: float) -> None:
        """Bot audio the carrier starts playing at `plays_at`."""
        self.bot.write(self._sample(plays_at), pcm)

    def cut_bot(self, at: float) -> None:
        """A clear at `at`: the bot audio queued beyond it was never heard."""
        self.bot.cut(self._sample(at))

    def write(self, path: str | Path, ended_at: float) -> Path:
        """Write the stereo WAV (caller left, bot right) up to `ended_at`; returns its path."""
        path = Path(path)
        length = max(self._sample(ended_at), self.caller.length)
        self.bot.cut(self._sample(ended_at))  # queued at the carrier when the call ended: never played
        path.parent.mkdir(parents=True, exist_ok=True)
        write_wav(path, np.stack([self.caller.render(length), self.bot.render(length)], axis=1), RATE)
        return path


async def save_recording(recorder: Recorder, call_id: str, folder: str | Path) -> Path | None:
    """Write a finished call's recording as `<folder>/<call id>.wav` off the event loop; None (logged) if
    the file could not be written."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", call_id).lstrip(".") or "call"
    path = Path(folder) / f"{name}.wav"
    try:
        return await asyncio.to_thread(recorder.write, path, time.monotonic())
    except OSError as exc:
        log.error("call %s: could not write the recording %s: %s", call_id, path, exc)
        return None
