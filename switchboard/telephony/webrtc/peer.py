"""One browser call on aiortc: the peer connection, the `Channel` the server's call loop reads, and the
`WebRTCLink` the call answers on. Imported on the first offer (aiortc takes ~0.3 s to import).

The call starts (its `start` frame is queued) once ICE and DTLS are up, so the greeting is not spoken
into a connection nobody hears yet; a connection that is not up within `CONNECT_TIMEOUT_S` is closed.
It ends when the page says `hangup` on the data channel, the connection fails or closes, the caller's
track ends, or the server hangs up (the page is told `{"type": "hangup"}` first).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import numpy as np
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from switchboard.telephony.webrtc import wire
from switchboard.telephony.webrtc.media import BotTrack, Inbound
from switchboard.telephony.webrtc.wire import WIDE_RATE

log = logging.getLogger("switchboard.webrtc")

CONNECT_TIMEOUT_S = 15.0
MAX_QUEUED = 500  # frames waiting for the call loop (10 s of audio); past that the caller's audio is dropped
HANGUP_FLUSH_S = 0.2  # time for the data channel to carry the hang-up notice before the connection closes
DISCONNECT: dict[str, Any] = {"type": "websocket.disconnect"}


class BrowserCall:
    """A browser's peer connection as the server's call loop reads it: `receive()` gives frames (see
    wire.py) as a WebSocket would, `close()` hangs up."""

    def __init__(self, call_id: str, start: bytes, ice_servers: list[RTCIceServer]) -> None:
        self.call_id = call_id
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers))  # [] = host candidates only
        self.track = BotTrack(on_mark=lambda name: self._put({"bytes": wire.mark_frame(name)}))
        self.link = WebRTCLink(self)
        self._start = start
        self._inbound = Inbound()
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._channel: Any = None  # the page's data channel, once it opens
        self._tasks: set[asyncio.Task] = set()
        self._started = False
        self._ended = False
        self._dropped = 0
        self.pc.addTrack(self.track)
        self.pc.on("track", self._on_track)
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("connectionstatechange", self._on_state)

    async def answer(self, sdp: str) -> RTCSessionDescription:
        """Take the page's offer; our answer, with every candidate gathered (no trickle)."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        self._spawn(self._connect_deadline())
        return self.pc.localDescription

    # --- the server's call loop ------------------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        message = await self._queue.get()
        return {"type": "websocket.receive", **message} if message is not DISCONNECT else message

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Hang up: tell the page, then close the connection. Idempotent."""
        if self._channel is not None and self._channel.readyState == "open" and not self._ended:
            with contextlib.suppress(Exception):
                self._channel.send(wire.hangup_message())
                await asyncio.sleep(HANGUP_FLUSH_S)
        self._end()
        self.track.stop()
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()
        await self.pc.close()

    # --- aiortc's events -------------------------------------------------------------------------

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._spawn(self._pump(track))

    def _on_datachannel(self, channel: Any) -> None:
        self._channel = channel

        @channel.on("message")
        def on_message(message: str | bytes) -> None:  # untrusted: wire.parse judges it as text
            text = message if isinstance(message, str) else message.decode("utf-8", "replace")
            self._put({"text": text})

    async def _on_state(self) -> None:
        state = self.pc.connectionState
        log.info("call %s: WebRTC connection %s", self.call_id, state)
        if state == "connected" and not self._started:
            self._started = True
            self._put({"bytes": self._start})
        elif state in ("failed", "closed"):
            self._end()

    async def _pump(self, track: MediaStreamTrack) -> None:
        """The caller's decoded audio into the call loop, as the pipeline's 20 ms frames."""
        try:
            while True:
                frame = await track.recv()
                if not self._started:
                    continue
                for pcm, wide in self._inbound.frames(frame):
                    self._put({"bytes": wire.audio_frame(pcm, wide)})
        except MediaStreamError:
            log.info("call %s: the caller's audio track ended", self.call_id)
            self._end()

    async def _connect_deadline(self) -> None:
        await asyncio.sleep(CONNECT_TIMEOUT_S)
        if not self._started:
            log.warning("call %s: WebRTC connection not up after %.0f s (%s): closing", self.call_id,
                        CONNECT_TIMEOUT_S, self.pc.connectionState)
            await self.close()

    # --- helpers ---------------------------------------------------------------------------------

    def _put(self, message: dict[str, Any]) -> None:
        if self._ended:
            return
        if self._queue.qsize() >= MAX_QUEUED and "text" not in message:
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 500 == 0:
                log.warning("call %s: the call loop is behind: dropped %d frames of caller audio",
                            self.call_id, self._dropped)
            return
        self._queue.put_nowait(message)

    def _end(self) -> None:
        if not self._ended:
            self._queue.put_nowait(DISCONNECT)
            self._ended = True

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class WebRTCLink:
    """The call's way back to the browser: the bot's audio and marks into `BotTrack`, clear, hang-up."""

    holds_ms = 0  # the track takes each 20 ms frame as the player sends it
    transfers = False  # a browser call has no number to hand over to
    wideband_rate = WIDE_RATE  # Opus at 48 kHz: the caller's audio also comes at 16 kHz (`Media.wide`)

    def __init__(self, call: BrowserCall) -> None:
        self.call = call

    async def send_audio(self, pcm: np.ndarray) -> None:
        self.call.track.push(pcm)

    async def send_mark(self, name: str) -> None:
        self.call.track.mark(name)

    async def send_clear(self) -> None:
        self.call.track.clear()

    async def hang_up(self) -> None:
        await self.call.close()

    async def transfer(self, target: str) -> bool:
        return False
