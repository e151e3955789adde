"""Admission: whether this process takes a new call now, and what a caller it can't take hears.

A process takes at most `max_concurrent_calls` calls at once (None: no limit) and none while it drains.
A call it can't take is refused where it first shows up:
- Twilio's webhook answers TwiML that says `busy_message` and hangs up (the call never opens a stream);
- a media WebSocket that starts a call anyway (Exotel, which has no webhook here, or a Twilio call whose
  webhook came before the server filled up) hears the busy message spoken by its pipeline's TTS, sent
  at once, and is closed when its mark comes back (or `BUSY_GRACE_S` after its audio's length).
Every refusal is counted by carrier, where and why (`refusals`), and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect

from switchboard.core.carrier import BadFrame, Connection, Mark, Start, Stop
from switchboard.core.metrics import TurnMetrics
from switchboard.core.protocols import TTS
from switchboard.pipeline.lines import LineCache
from switchboard.pipeline.text import speakable

log = logging.getLogger("switchboard.ops")

FULL, DRAINING = "full", "draining"
BUSY_MARK = "busy"
BUSY_GRACE_S = 3.0  # past the busy line's own length, how long we wait for its mark before closing
FRAME = 160  # 20 ms at 8 kHz


class Refused(Exception):
    """A call this process can't take now (`reason`: full or draining)."""

    def __init__(self, call_id: str, reason: str, pipeline: str) -> None:
        super().__init__(f"call {call_id}: refused ({reason})")
        self.call_id, self.reason, self.pipeline = call_id, reason, pipeline


class Admission:
    """The process's door: `refusal()` says why a new call can't come in now, or None."""

    def __init__(self, max_calls: int | None, busy_message: str, active: Callable[[], int]) -> None:
        self.max_calls, self.busy_message, self.active = max_calls, busy_message, active
        self.draining = False
        self.refusals: Counter[tuple[str, str, str]] = Counter()  # (carrier, where, reason) -> calls
        self.on_refused: list[Callable[[str, str, str], None]] = []  # metrics listen here

    def refusal(self) -> str | None:
        if self.draining:
            return DRAINING
        if self.max_calls is not None and self.active() >= self.max_calls:
            return FULL
        return None

    @property
    def ready(self) -> bool:
        return self.refusal() is None

    def refuse(self, carrier: str, where: str, reason: str, call_id: str = "-") -> None:
        self.refusals[carrier, where, reason] += 1
        log.warning("call %s (%s, %s): refused: the server is %s (%d active, max_concurrent_calls %s)",
                    call_id, carrier, where, reason, self.active(), self.max_calls)
        for listener in self.on_refused:
            listener(carrier, where, reason)

    def busy_at_webhook(self, carrier: str) -> str | None:
        """For a carrier's webhook: the busy message when a call can't come in now (counted), else None."""
        reason = self.refusal()
        if reason is None:
            return None
        self.refuse(carrier, "webhook", reason)
        return self.busy_message


class BusyLine:
    """The busy message as 8 kHz audio, in the pipeline's voice, from the process's fixed lines (synthesised
    once per voice by the pipeline's TTS chain: pipeline/lines.py)."""

    def __init__(self, message: str, lines: LineCache) -> None:
        self.message, self.lines = message, lines

    async def audio(self, pipeline: str, voices: list[TTS]) -> np.ndarray | None:
        """`voices`: the pipeline's TTS and its fallbacks, in order."""
        try:
            return await self.lines.whole(voices, speakable(self.message), TurnMetrics(call_id="-", index=0))
        except Exception as exc:  # the caller is hung up on anyway
            log.error("pipeline %s: could not synthesise the busy message: %s", pipeline, exc)
            return None

    async def play(self, websocket: WebSocket, connection: Connection, start: Start,
                   audio: np.ndarray | None) -> None:
        """Send the busy line on this connection, wait for its mark (bounded), then hang up."""
        link = connection.link(start)
        if audio is not None and len(audio):
            for at in range(0, len(audio), FRAME):
                await link.send_audio(audio[at:at + FRAME])
            await link.send_mark(BUSY_MARK)
            with contextlib.suppress(TimeoutError, WebSocketDisconnect, RuntimeError):
                async with asyncio.timeout(len(audio) / 8000 + BUSY_GRACE_S):
                    await _until_mark(websocket, connection)
        await link.hang_up()


async def _until_mark(websocket: WebSocket, connection: Connection) -> None:
    """Read the connection until the busy line's mark comes back, or the caller goes."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        raw = message.get("text")
        try:
            event = connection.parse(message.get("bytes") if raw is None else raw)
        except BadFrame:
            continue
        if isinstance(event, Stop) or (isinstance(event, Mark) and event.name == BUSY_MARK):
            return
