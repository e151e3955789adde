"""A carrier's side of a phone call, for the carrier conformance suite (tests/test_carrier_conformance.py).

Each carrier's fake (`tests/fakes/<carrier>_side.py`) is written from that carrier's documentation, not
from our code: it does what the carrier does when a call comes in (its webhook, signed its way; the
media socket's upgrade), frames the caller's audio, keys and hang-up the way the carrier does, and reads
what the server sends back, refusing anything that breaks the carrier's rules (`Violation`).

`PhoneCall` is the rest of the carrier, shared by every fake: it paces the caller's audio at real time,
plays the bot's audio on the carrier's clock, echoes marks once the audio before them has played (or
was cleared), honours `clear`, and records what happened for the suite's assertions.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from websockets.exceptions import ConnectionClosed

Frame = str | bytes  # one WebSocket message


class Refused(Exception):
    """The server turned the carrier away (a webhook answered 4xx, or the socket upgrade refused)."""

    def __init__(self, status: int, where: str) -> None:
        super().__init__(f"{where} refused with {status}")
        self.status = status


class Violation(Exception):
    """A message from the server that breaks the carrier's documented rules; the text says which."""


def json_text(raw: Frame, carrier: str) -> dict[str, Any]:
    """A server message a JSON-text carrier reads: the object, or `Violation` (binary, not JSON, not an
    object)."""
    if isinstance(raw, bytes):
        raise Violation(f"a binary frame ({carrier} takes JSON text frames)")
    try:
        msg = json.loads(raw)
    except ValueError:
        raise Violation(f"not JSON: {raw[:80]!r}") from None
    if not isinstance(msg, dict):
        raise Violation(f"not a JSON object: {raw[:80]!r}")
    return msg


def base64_payload(msg: dict[str, Any], event: str) -> bytes:
    """`msg[event]["payload"]` decoded, or `Violation`."""
    try:
        return base64.b64decode(msg[event]["payload"], validate=True)
    except (KeyError, TypeError, binascii.Error):
        raise Violation(f"{event} without a base64 {event}.payload") from None


@dataclass
class Audio:
    pcm: np.ndarray  # int16 mono at `rate`, as the carrier would play it
    rate: int


@dataclass
class MarkOut:
    name: str


@dataclass
class Clear:
    pass


Outbound = Audio | MarkOut | Clear  # what the server may send the carrier


class CarrierSide(Protocol):
    """What a carrier's fake supplies. Everything else about a call is `PhoneCall`'s."""

    name: str  # the carrier plug-in's name, recorded on every call it carries ("twilio")
    frame_ms: int  # how much caller audio one inbound media message carries
    clears: bool  # the protocol lets the server drop what the carrier has buffered (else: least buffer)
    marks_on_clear: bool  # a clear sends back the marks it dropped (Twilio, Telnyx)

    def server_env(self) -> dict[str, str]:
        """The environment the server needs to verify this carrier (keys, tokens), set before it starts."""
        ...

    async def open(self, base_url: str, to: str, from_: str, *, signed: bool = True) -> Any:
        """Do what the carrier does when a call to `to` comes in from `from_`: its webhook (if it has one),
        then the media socket's upgrade, signed the carrier's way — or, with `signed=False`, with a wrong
        signature. Returns the open `websockets` connection; raises `Refused` when the server refuses."""
        ...

    def start(self) -> list[Frame]:
        """The frames that open the stream (e.g. `connected`, `start`)."""
        ...

    def media(self, pcm: np.ndarray) -> Frame:
        """One message of caller audio: `frame_ms` of 8 kHz int16, encoded as the carrier sends it."""
        ...

    def dtmf(self, digit: str) -> Frame:
        """The caller pressed a key."""
        ...

    def stop(self) -> Frame | None:
        """The caller hung up: the carrier's last message before it closes (None: it just closes)."""
        ...

    def mark_played(self, name: str) -> Frame:
        """The echo of mark `name`, once the audio before it has played (or was cleared)."""
        ...

    def read(self, raw: Frame) -> Outbound:
        """One message from the server, or `Violation` saying which of the carrier's rules it breaks."""
        ...

    def malformed(self) -> list[Frame]:
        """Frames that break the carrier's protocol: the server must log and drop each, and go on."""
        ...


@dataclass
class Played:
    """One stretch of bot audio at the carrier: arrived at `arrived` (s), plays [start, end)."""

    arrived: float
    start: float
    end: float
    pcm: np.ndarray
    rate: int


@dataclass
class PhoneCall:
    """One call from the carrier's side, paced at real time (seconds since the socket opened)."""

    side: CarrierSide
    ws: Any
    t0: float = field(default_factory=time.monotonic)
    played: list[Played] = field(default_factory=list)  # the bot's audio, in arrival order
    marks_sent: list[str] = field(default_factory=list)  # marks the server sent
    marks_echoed: list[str] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)  # when each clear arrived
    violations: list[str] = field(default_factory=list)
    closed_by_server: bool = False
    _line: list[np.ndarray] = field(default_factory=list)  # caller audio waiting to go out, frame by frame
    _pending: list[tuple[float, str]] = field(default_factory=list)  # (plays out at, mark)
    _queue_end: float = 0.0  # when the audio queued at the carrier ends
    _ended: bool = False
    _tasks: list[asyncio.Task] = field(default_factory=list)

    def now(self) -> float:
        return time.monotonic() - self.t0

    # -- the caller ---------------------------------------------------------------------------------

    async def begin(self) -> None:
        for frame in self.side.start():
            await self.ws.send(frame)
        self._tasks = [asyncio.create_task(self._send_frames()), asyncio.create_task(self._receive()),
                       asyncio.create_task(self._play())]

    def say(self, pcm: np.ndarray) -> tuple[float, float]:
        """Speak 8 kHz audio from the next frame on; returns when it (start, end) will have gone out."""
        step = 8 * self.side.frame_ms
        padded = np.concatenate([pcm, np.zeros(-len(pcm) % step, np.int16)])
        start = self.now() + len(self._line) * self.side.frame_ms / 1000
        self._line += [padded[i:i + step] for i in range(0, len(padded), step)]
        return start, start + len(padded) / 8000

    async def say_and_wait(self, pcm: np.ndarray) -> tuple[float, float]:
        start, end = self.say(pcm)
        await self.until(lambda: not self._line, within_s=end - start + 5)
        return start, end

    async def press(self, digits: str) -> None:
        for digit in digits:
            await self.ws.send(self.side.dtmf(digit))

    async def hang_up(self) -> None:
        """The caller hangs up: the carrier's stop message (if it has one), then the socket closes."""
        self._ended = True
        with contextlib.suppress(ConnectionClosed):
            last = self.side.stop()
            if last is not None:
                await self.ws.send(last)
        await self.close()

    async def send_raw(self, frame: Frame) -> None:
        await self.ws.send(frame)

    async def close(self) -> None:
        self._ended = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.ws.close()

    async def _send_frames(self) -> None:
        step_s = self.side.frame_ms / 1000
        silence = np.zeros(8 * self.side.frame_ms, np.int16)
        n = 0
        while not self._ended:
            await asyncio.sleep(max(0.0, n * step_s - self.now()))
            pcm = self._line.pop(0) if self._line else silence
            try:
                await self.ws.send(self.side.media(pcm))
            except ConnectionClosed:
                return
            n += 1

    # -- the bot ------------------------------------------------------------------------------------

    async def _receive(self) -> None:
        try:
            async for raw in self.ws:
                try:
                    message = self.side.read(raw)
                except Violation as why:
                    self.violations.append(str(why))
                    continue
                await self._handle(message)
        except ConnectionClosed:
            pass
        if not self._ended:
            self.closed_by_server = True
            self._ended = True

    async def _handle(self, message: Outbound) -> None:
        now = self.now()
        if isinstance(message, Audio):
            start = max(now, self._queue_end)
            self._queue_end = start + len(message.pcm) / message.rate
            self.played.append(Played(now, start, self._queue_end, message.pcm, message.rate))
        elif isinstance(message, MarkOut):
            self.marks_sent.append(message.name)
            self._pending.append((max(now, self._queue_end), message.name))
            await self._echo_due(now)
        else:
            self.clears.append(now)
            for item in self.played:  # what had not played yet is never heard
                if item.end > now:
                    item.end = max(item.start, now)
            self._queue_end = now
            dropped, self._pending = [name for _, name in self._pending], []
            if self.side.marks_on_clear:
                for name in dropped:
                    await self._echo(name)

    async def _play(self) -> None:
        while not self._ended:
            await asyncio.sleep(0.01)
            await self._echo_due(self.now())

    async def _echo_due(self, now: float) -> None:
        due = [name for at, name in self._pending if at <= now]
        self._pending = [(at, name) for at, name in self._pending if at > now]
        for name in due:
            await self._echo(name)

    async def _echo(self, name: str) -> None:
        self.marks_echoed.append(name)
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(self.side.mark_played(name))

    # -- what the caller heard ------------------------------------------------------------------------

    def audible(self, t: float) -> bool:
        return any(item.start <= t < item.end for item in self.played)

    def quiet_after(self, t: float) -> float:
        """The first moment at or after `t` when no bot audio was playing."""
        moment = t
        for item in sorted(self.played, key=lambda p: p.start):
            if item.start <= moment + 1e-3 and item.end > moment:
                moment = item.end
        return moment

    def heard(self, since: float = 0.0, until: float = float("inf")) -> tuple[np.ndarray, int]:
        """The bot audio that played between `since` and `until`, at the wire's rate."""
        rate = self.played[0].rate if self.played else 8000
        parts = []
        for item in self.played:
            lo, hi = max(item.start, since), min(item.end, until)
            if hi > lo:
                a = round((lo - item.start) * item.rate)
                parts.append(item.pcm[a:a + round((hi - lo) * item.rate)])
        return (np.concatenate(parts) if parts else np.zeros(0, np.int16)), rate

    async def until(self, condition, within_s: float = 8.0) -> None:
        deadline = time.monotonic() + within_s
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {within_s} s")
            await asyncio.sleep(0.01)

    async def until_quiet(self, quiet_s: float = 0.5, within_s: float = 8.0) -> None:
        """Until the bot has said something and then been silent for `quiet_s`."""
        await self.until(lambda: self.played and not self._pending
                         and self.now() - max(p.end for p in self.played) >= quiet_s, within_s)


def dominant_hz(pcm: np.ndarray, rate: int) -> float:
    """The strongest frequency in the audio (a pitch check: a wrong sample rate shifts it)."""
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.argmax(spectrum) * rate / len(pcm))
