"""The outbound player: 8 kHz PCM in, 20 ms frames out, paced at real time with a small lead.

Turns `enqueue` audio and marks; one sender task per call drains the queue. The carrier plays what we
send as it arrives, so we track where its playhead should be (`_play_until`) and send more once we are
no more than `lead` ahead of it: enough to ride out network jitter, little enough that a `clear` has
little to throw away. Each message carries up to `FRAMES_PER_MESSAGE` frames (60 ms): the sender wakes
a third as often and the carrier gets a third of the messages (the WebSocket send, the JSON and base64
around the payload are per message), while what was played is still kept frame by frame (marks, pause,
echo references, the recording). The lead is still the least we are ahead, so no frame goes out later
than with one frame a message; the carrier holds up to `lead` + 60 ms, which a `clear` drops at once.

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

from switchboard.audio.echo import similarity
from switchboard.pipeline.recorder import Recorder

log = logging.getLogger("switchboard.player")

FRAME_SAMPLES = 160  # 20 ms at 8 kHz
FRAME_S = 0.020
FRAMES_PER_MESSAGE = 3  # the most 20 ms frames one `send_audio` carries (every link takes any whole number)
PLAYED_KEEP_S = 3.0  # how much of what was played is kept for echo checks
ECHO_REFERENCE_S = 1.5  # the bot's audio the caller's is compared with: echo delays up to ~1.2 s


class CarrierLink(Protocol):
    """What a carrier adapter (telephony/*) offers the call: its wire, already encoded for it."""

    async def send_audio(self, pcm: np.ndarray) -> None: ...  # int16, 8 kHz, a whole number of frames
    async def send_mark(self, name: str) -> None: ...
    async def send_clear(self) -> None: ...
    async def hang_up(self) -> None: ...


@dataclass
class _Frame:
    pcm: np.ndarray  # one 20 ms frame
    on_sent: Callable[[float], None] | None = None  # the first frame of an enqueued chunk: when it went


@dataclass
class _Mark:
    name: str  # the name on the wire; a mark re-sent after a pause gets a new one


class Player:
    """One call's outbound audio. Its sender task takes 20 ms frames and marks from the outbox in order.

    `clear()` drops everything not yet heard (barge-in). `pause()` stops the bot at once too, but keeps
    what the caller has not heard yet (the lead already sent, which the carrier drops, and the rest) so
    that `resume()` goes on from exactly where the caller stopped hearing: nothing skipped, nothing
    heard twice. A mark whose audio was cut by a pause is sent again, under a new name, after that audio.
    """

    def __init__(self, link: CarrierLink, lead_ms: int = 160, recorder: Recorder | None = None) -> None:
        self.link = link
        self.lead_s = lead_ms / 1000
        self.recorder = recorder  # gets each frame at the time it plays; a clear or pause cuts it
        self._outbox: deque[_Frame | _Mark] = deque()
        self._ready = asyncio.Event()  # set while the outbox has something and the player is not paused
        self._paused = False
        self._play_until = 0.0  # monotonic time at which the carrier runs out of audio we sent
        self._in_flight: deque[tuple[float, _Frame | _Mark]] = deque()  # sent, maybe not played: (at, item)
        self._pending_marks: dict[str, asyncio.Future[bool]] = {}  # mark -> heard?, until echoed or cleared
        self._wire_names: dict[str, str] = {}  # name on the wire -> the mark's own name (after a pause)
        self._heard: set[str] = set()
        self._mark_ends: dict[str, float] = {}  # mark -> when the audio before it should finish playing
        self._partial = np.zeros(0, dtype=np.int16)  # audio waiting to fill a whole frame
        self._first_sent: Callable[[float], None] | None = None  # for the partial's chunk
        self._generation = 0  # bumped by clear()/pause(), so a sender waiting to pace a frame re-checks
        self._names = itertools.count(1)
        self._task: asyncio.Task | None = None
        self.frames_sent = 0
        self.max_lateness_s = 0.0  # worst delay of a frame behind its pacing deadline
        self._played: deque[tuple[float, np.ndarray]] = deque()  # (when it plays, frame), for echo checks

    def start(self) -> None:
        self._task = asyncio.create_task(self._send_loop(), name="player")
        self._task.add_done_callback(_log_crash)

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
        if not len(pcm):
            return
        pcm = pcm.astype(np.int16, copy=False)
        if len(self._partial):
            pcm = np.concatenate([self._partial, pcm])
            on_first_frame = _both(self._first_sent, on_first_frame)
        whole = len(pcm) - len(pcm) % FRAME_SAMPLES
        for offset in range(0, whole, FRAME_SAMPLES):
            self._outbox.append(_Frame(pcm[offset:offset + FRAME_SAMPLES], on_first_frame))
            on_first_frame = None
        self._partial, self._first_sent = pcm[whole:], on_first_frame
        self._wake()

    def enqueue_mark(self) -> str:
        """Queue a mark after the audio queued so far and return its name."""
        if len(self._partial):  # the chunk's tail, padded so the mark sits right after its last sample
            tail = np.zeros(FRAME_SAMPLES, dtype=np.int16)
            tail[: len(self._partial)] = self._partial
            self._outbox.append(_Frame(tail, self._first_sent))
            self._partial, self._first_sent = np.zeros(0, dtype=np.int16), None
        name = f"m{next(self._names)}"
        self._pending_marks[name] = asyncio.get_running_loop().create_future()
        self._wire_names[name] = name
        self._outbox.append(_Mark(name))
        self._wake()
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
        """Is the caller (probably) hearing us now, or about to (a pause counts: we mean to go on)?"""
        return (
            bool(self._outbox)
            or time.monotonic() < self._play_until
            or any(not f.done() for f in self._pending_marks.values())
        )

    @property
    def paused(self) -> bool:
        return self._paused

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

    def echoes(self, caller_audio: np.ndarray, threshold: float) -> bool:
        """Is `caller_audio` (the caller's latest) the bot's own recent audio coming back? At least
        `threshold` similar to it (audio/echo.py); 0 = never."""
        if threshold <= 0:
            return False
        played = self.played_audio(time.monotonic() - ECHO_REFERENCE_S)
        return bool(played.any()) and similarity(caller_audio, played) >= threshold

    async def clear(self) -> None:
        """Barge-in: drop everything queued here and at the carrier; pending marks are not heard."""
        self._outbox.clear()
        self._in_flight.clear()
        self._paused = False
        self._ready.clear()
        for future in self._pending_marks.values():
            if not future.done():
                future.set_result(False)
        self._pending_marks.clear()
        self._wire_names.clear()
        self._partial, self._first_sent = np.zeros(0, dtype=np.int16), None
        self._stop_playing()
        await self.link.send_clear()

    async def pause(self) -> None:
        """Stop the caller hearing us now (the carrier drops what it holds), keeping what they have not
        heard, to `resume()` from there or `clear()`."""
        if self._paused:
            return
        self._paused = True
        self._ready.clear()
        now = time.monotonic()
        unheard = [item for at, item in self._in_flight if at > now]  # frames not yet played, their marks
        self._in_flight.clear()
        for item in unheard:
            if isinstance(item, _Mark):  # the carrier echoes it on clear: that echo is not "heard"
                own = self._wire_names.pop(item.name)
                item.name = f"{own}.{next(self._names)}"
                self._wire_names[item.name] = own
        self._outbox.extendleft(reversed(unheard))
        self._stop_playing()
        await self.link.send_clear()

    def resume(self) -> None:
        """Go on from where the caller stopped hearing us."""
        if self._paused:
            self._paused = False
            self._wake()

    def _stop_playing(self) -> None:
        self._play_until = 0.0
        self._generation += 1
        now = time.monotonic()
        while self._played and self._played[-1][0] > now:  # sent ahead, never played
            self._played.pop()
        if self.recorder is not None:
            self.recorder.cut_bot(now)

    def _wake(self) -> None:
        if self._outbox and not self._paused:
            self._ready.set()

    # --- what the carrier tells us ----------------------------------------------------------------

    def on_mark(self, wire_name: str) -> None:
        name = self._wire_names.pop(wire_name, None)
        future = self._pending_marks.pop(name, None) if name is not None else None
        if future is None:  # echo of a mark we cleared, paused or never sent: not heard
            return
        self._heard.add(name)
        if not future.done():
            future.set_result(True)

    # --- the sender -------------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        while True:
            await self._ready.wait()
            if not self._outbox or self._paused:  # a clear or pause came between the wake-up and now
                self._ready.clear()
                continue
            item = self._outbox[0]
            if isinstance(item, _Mark):
                self._outbox.popleft()
                self._in_flight.append((self._play_until, item))
                self._mark_ends[self._wire_names.get(item.name, item.name)] = self._play_until
                await self.link.send_mark(item.name)
            else:
                await self._send_paced(item)
            if not self._outbox:
                self._ready.clear()

    async def _send_paced(self, frame: _Frame) -> None:
        """Send the outbox's first frames (up to `FRAMES_PER_MESSAGE`, none past a mark) once we are no
        more than `lead` ahead (unless a clear or pause came while we waited: then it is for the loop to
        look again)."""
        generation = self._generation
        now = time.monotonic()
        ahead = self._play_until - now
        if ahead > self.lead_s:
            await asyncio.sleep(ahead - self.lead_s)
            if generation != self._generation:
                return
            now = time.monotonic()
            late = now - (self._play_until - self.lead_s)
            self.max_lateness_s = max(self.max_lateness_s, late)
        frames = self._take_frames()
        play_at = max(self._play_until, now)
        for sent in frames:
            if self.recorder is not None:
                self.recorder.add_bot(sent.pcm, play_at)
            self._played.append((play_at, sent.pcm))
            play_at += len(sent.pcm) / 8000
            self._in_flight.append((play_at, sent))
        while self._played[0][0] < now - PLAYED_KEEP_S:
            self._played.popleft()
        while self._in_flight and self._in_flight[0][0] < now:
            self._in_flight.popleft()
        pcm = frame.pcm if len(frames) == 1 else np.concatenate([sent.pcm for sent in frames])
        await self.link.send_audio(pcm)
        if generation != self._generation:
            return  # a clear or pause went out behind it: the carrier dropped it too
        self._play_until = max(self._play_until, now) + len(pcm) / 8000
        self.frames_sent += len(frames)
        for sent in frames:
            if sent.on_sent is not None:
                sent.on_sent(now)
                sent.on_sent = None

    def _take_frames(self) -> list[_Frame]:
        """The outbox's first frames, up to one message's worth and up to the next mark."""
        outbox = self._outbox
        frames = [outbox.popleft()]
        while len(frames) < FRAMES_PER_MESSAGE and outbox and type(outbox[0]) is _Frame:
            frames.append(outbox.popleft())
        return frames  # type: ignore[return-value]


def _log_crash(task: asyncio.Task) -> None:
    """A sender that dies leaves the caller in silence for the rest of the call: say so loudly."""
    if not task.cancelled() and task.exception() is not None:
        log.error("the player's sender stopped: the caller hears nothing more", exc_info=task.exception())


def _both(first: Callable[[float], None] | None,
          then: Callable[[float], None] | None) -> Callable[[float], None] | None:
    if first is None or then is None:
        return first or then

    def both(at: float) -> None:
        first(at)
        then(at)

    return both
