"""The caller's outgoing side of the socket: the handshake, the paced media frames, mark echoes, stop."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import numpy as np

from switchboard.caller.timeline import RATE, Segment, SimClock
from switchboard.caller.wire import TwilioWire


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
        self.sent_speech: list[Segment] = []  # what the caller said, as the server decodes it
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
                    self.sent_speech.append(Segment(self._frame * self.frame_samples, heard))
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
        self.sent_speech.append(Segment(self._frame * self.frame_samples, heard))
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
