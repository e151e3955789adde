"""The outbound player: 8 kHz PCM in, 20 ms frames out, paced at real time with a small lead.

Turns `enqueue` audio and marks; one sender task per call drains the queue. The carrier plays what we
send as it arrives, so we track where its playhead should be (`_play_until`) and stay at most `lead`
ahead of it: enough to ride out network jitter, little enough that a `clear` has little to throw away.

Marks tell us what the caller really heard. Twilio echoes a mark when the audio before it has played
*or was cleared*, so a mark that was pending when we sent `clear` does not count as heard.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from switchboard.pipeline.recorder import Recorder

log = logging.getLogger("switchboard.player")

FRAME_SAMPLES = 160  # 20 ms at 8 kHz
FRAME_S = 0.020
PLAYED_KEEP_S = 3.0  # how much of what was played is kept for echo checks


class CarrierLink(Protocol):
    """What a carrier adapter (telephony/*) offers the call: its wire, already encoded for it."""

    async def send_audio(self, pcm: np.ndarray) -> None: ...  # int16, 8 kHz, a whole number of frames
    async def send_mark(self, name: str) -> None: ...
    async def send_clear(self) -> None: ...
    async def hang_up(self) -> None: ...


@dataclass
class _Audio:
    pcm: np.ndarray
    on_first_frame: Callable[[float], None] | None


@dataclass
class _Mark:
    name: str


class Player:
    def __init__(self, link: CarrierLink, lead_ms: int = 160, recorder: Recorder | None = None) -> None:
        self.link = link
        self.lead_s = lead_ms / 1000
        self.recorder = recorder  # gets each frame at the time it plays; a clear cuts it
        self._queue: asyncio.Queue[_Audio | _Mark] = asyncio.Queue()
        self._play_until = 0.0  # monotonic time at which the carrier runs out of audio we sent
        self._pending_marks: dict[str, asyncio.Future[bool]] = {}  # sent, not yet echoed
        self._heard: set[str] = set()
        self._mark_ends: dict[str, float] = {}  # mark -> when the audio before it should finish playing
        self._pending = np.zeros(0, dtype=np.int16)  # audio waiting to fill a whole frame
        self._generation = 0  # bumped by clear(), so the sender abandons audio it was in the middle of
        self._names = itertools.count(1)
        self._task: asyncio.Task | None = None
        self.frames_sent = 0
        self.max_lateness_s = 0.0  # worst delay of a frame behind its pacing deadline
        self._played: deque[tuple[float, np.ndarray]] = deque()  # (when it plays, frame), for echo checks

    def start(self) -> None:
        self._task = asyncio.create_task(self._send_loop(), name="player")

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for future in self._pending_marks.values():
            if not future.done():
                future.set_result(False)

    # --- what turns call --------------------------------------------------------------------------

    def enqueue(self, pcm: np.ndarray, on_first_frame: Callable[[float], None] | None = None) -> None:
        """Queue audio. It is padded with silence to whole 20 ms frames when the next mark is queued."""
        if len(pcm):
            self._queue.put_nowait(_Audio(pcm.astype(np.int16, copy=False), on_first_frame))

    def enqueue_mark(self) -> str:
        """Queue a mark after the audio queued so far and return its name."""
        name = f"m{next(self._names)}"
        self._pending_marks[name] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Mark(name))
        return name

    async def wait_mark(self, name: str, within_s: float | None = None) -> bool:
        """True once the caller heard everything before mark `name`; False if cleared or timed out."""
        future = self._pending_marks.get(name)
        if future is None:
            return name in self._heard
        try:
            return await asyncio.wait_for(asyncio.shield(future), within_s)
        except TimeoutError:
            return False

    def heard(self, name: str) -> bool:
        return name in self._heard

    def plays_out_at(self, name: str) -> float | None:
        """When the audio before mark `name` should have finished playing by our pacing (monotonic; the
        carrier's playhead is that plus its network delay), once the mark was sent."""
        return self._mark_ends.get(name)

    @property
    def audible(self) -> bool:
        """Is the caller (probably) hearing us now, or about to?"""
        return (
            not self._queue.empty()
            or time.monotonic() < self._play_until
            or any(not f.done() for f in self._pending_marks.values())
        )

    def played_audio(self, since: float, until: float | None = None) -> np.ndarray:
        """What the caller heard (or will by `until`, default now) from monotonic time `since`, at 8 kHz."""
        until = time.monotonic() if until is None else until
        out = np.zeros(max(0, round((until - since) * 8000)), dtype=np.int16)
        for play_at, frame in self._played:
            start = round((play_at - since) * 8000)
            if start >= len(out) or start + len(frame) <= 0:
                continue
            piece = frame[max(0, -start) : len(out) - start]
            out[max(0, start) : max(0, start) + len(piece)] = piece
        return out

    async def clear(self) -> None:
        """Barge-in: drop everything queued here and at the carrier; pending marks are not heard."""
        while not self._queue.empty():
            self._queue.get_nowait()
        for future in self._pending_marks.values():
            if not future.done():
                future.set_result(False)
        self._pending_marks.clear()
        self._play_until = 0.0
        self._pending = np.zeros(0, dtype=np.int16)
        self._generation += 1
        now = time.monotonic()
        while self._played and self._played[-1][0] > now:  # sent ahead, never played
            self._played.pop()
        if self.recorder is not None:
            self.recorder.cut_bot(time.monotonic())
        await self.link.send_clear()

    # --- what the carrier tells us ----------------------------------------------------------------

    def on_mark(self, name: str) -> None:
        future = self._pending_marks.pop(name, None)
        if future is None:  # echo of a mark we cleared (or never sent): not heard
            return
        self._heard.add(name)
        if not future.done():
            future.set_result(True)

    # --- the sender -------------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        while True:
            item = await self._queue.get()
            generation = self._generation
            if isinstance(item, _Mark):
                if await self._send_tail(generation):
                    self._mark_ends[item.name] = self._play_until
                    await self.link.send_mark(item.name)
                continue
            pcm = np.concatenate([self._pending, item.pcm]) if len(self._pending) else item.pcm
            whole = len(pcm) - len(pcm) % FRAME_SAMPLES
            self._pending = pcm[whole:]
            for offset in range(0, whole, FRAME_SAMPLES):
                sent_at = await self._send_paced(pcm[offset : offset + FRAME_SAMPLES], generation)
                if sent_at is None:
                    break
                if item.on_first_frame is not None:
                    item.on_first_frame(sent_at)
                    item.on_first_frame = None

    async def _send_tail(self, generation: int) -> bool:
        """Pad what is left to a whole frame so the mark sits right after the chunk's last sample.

        False if a clear() came meanwhile (the mark is then not worth sending)."""
        if len(self._pending):
            tail = np.zeros(FRAME_SAMPLES, dtype=np.int16)
            tail[: len(self._pending)] = self._pending
            self._pending = np.zeros(0, dtype=np.int16)
            return await self._send_paced(tail, generation) is not None
        return generation == self._generation

    async def _send_paced(self, pcm: np.ndarray, generation: int) -> float | None:
        """Send once we are no more than `lead` ahead; None if a clear() came while we waited."""
        now = time.monotonic()
        ahead = self._play_until - now
        if ahead > self.lead_s:
            await asyncio.sleep(ahead - self.lead_s)
            if generation != self._generation:
                return None
            now = time.monotonic()
            late = now - (self._play_until - self.lead_s)
            self.max_lateness_s = max(self.max_lateness_s, late)
        play_at = max(self._play_until, now)
        if self.recorder is not None:
            self.recorder.add_bot(pcm, play_at)
        self._played.append((play_at, pcm))
        while self._played[0][0] < now - PLAYED_KEEP_S:
            self._played.popleft()
        await self.link.send_audio(pcm)
        self._play_until = max(self._play_until, now) + len(pcm) / 8000
        self.frames_sent += len(pcm) // FRAME_SAMPLES
        return now
