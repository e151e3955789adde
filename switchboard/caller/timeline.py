"""The simulated call's timeline: its clock, and Twilio's playback of the bot's audio on it.

All times are simulated call time in seconds since the call started; audio sits on the 8 kHz call
timeline by sample index (`sample_at`). With ``speed`` N the clock runs N times faster than the wall clock.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

import numpy as np

RATE = 8000  # Twilio media: μ-law, 8 kHz, mono
FRAME_S = 0.02  # one media frame
FRAME_SAMPLES = 160  # = 160 μ-law bytes
BOT_IDLE_S = 0.7  # the bot has finished once nothing was audible for this long


def sample_at(t: float) -> int:
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
class Segment:
    """Audio placed on the call timeline from sample ``start``."""

    start: int
    pcm: np.ndarray


def render(segments: list[Segment], length: int) -> np.ndarray:
    """Mix timeline segments into one int16 track of ``length`` samples."""
    track = np.zeros(length, dtype=np.int16)
    for seg in segments:
        end = min(seg.start + len(seg.pcm), length)
        if end > seg.start:
            track[seg.start : end] = seg.pcm[: end - seg.start]
    return track


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
        self.segments: list[Segment] = []  # what plays when (cut where a clear cut it)
        self._marks: deque[tuple[int, str]] = deque()  # (timeline sample, name), in order
        self.queue_end = 0  # timeline sample where the queued audio ends
        self.received_samples = 0
        self.talk_start: float | None = None  # when the bot's current (or last) talking began
        self._talking = False

    def add_audio(self, pcm: np.ndarray, now: float) -> bool:
        """Queue bot audio; True if it starts the bot talking."""
        starts = not self.talking(now)
        start = max(sample_at(now), self.queue_end)
        self.segments.append(Segment(start, pcm))
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
        self._marks.append((max(self.queue_end, sample_at(now)), name))

    def due_marks(self, now: float) -> list[str]:
        """Pop the marks whose audio has finished playing."""
        pos = sample_at(now)
        due = []
        while self._marks and self._marks[0][0] <= pos:
            due.append(self._marks.popleft()[1])
        return due

    def clear(self, now: float) -> list[str]:
        """Drop all queued audio at the playhead; return every pending mark (Twilio echoes them all)."""
        pos = sample_at(now)
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
        return self.queue_end > sample_at(now)

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
        pos = sample_at(now)
        return sum(min(len(seg.pcm), max(0, pos - seg.start)) for seg in self.segments)
