"""The Exotel carrier: its link and its route.

WS /exotel   Exotel's Voicebot applet (wire.py): one call per connection, routed by the number called
             through `numbers:`; with EXOTEL_BASIC_AUTH ("key:token") set, the upgrade must carry that
             HTTP Basic auth (refused with 403 otherwise).

Exotel echoes marks like Twilio, so the call learns what was heard the same way. Exotel has no REST
hang-up here: closing the socket ends the call.
"""

from __future__ import annotations

import base64
import hmac
import logging
import os

import numpy as np
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket

from switchboard.core.carrier import Connection, Start
from switchboard.telephony.base import ServeStream, WebSocketSender, peer
from switchboard.telephony.exotel import wire

log = logging.getLogger("switchboard.server")

AUTH_ENV = "EXOTEL_BASIC_AUTH"  # "key:token": /exotel then requires that HTTP Basic auth


TRANSFER_UNSUPPORTED = "Exotel's Voicebot stream has no way to hand a live call to another number"


class ExotelLink:
    """The call's way back to Exotel: PCM16 at the call's rate in chunks Exotel accepts, marks, clear.

    The player sends 20–60 ms at a time; Exotel wants ≥ 200 ms per message, so up to `holds_ms` of audio
    waits here (the player runs that much further ahead to make up for it). A mark first sends what is
    held, padded with silence to a valid chunk. Hang-up closes the socket."""

    holds_ms = wire.Chunker.HOLD_MS
    transfers = False  # TRANSFER_UNSUPPORTED
    wideband_rate = None  # its decoder brings every negotiated rate to 8 kHz

    def __init__(self, websocket: WebSocket, stream_sid: str, sample_rate: int) -> None:
        self.sender = WebSocketSender(websocket)
        self.stream_sid = stream_sid
        self.chunker = wire.Chunker(sample_rate)

    async def send_audio(self, pcm: np.ndarray) -> None:
        for payload in self.chunker.push(pcm):
            await self.sender.send(wire.media_message(self.stream_sid, payload))

    async def send_mark(self, name: str) -> None:
        for payload in self.chunker.flush():
            await self.sender.send(wire.media_message(self.stream_sid, payload))
        await self.sender.send(wire.mark_message(self.stream_sid, name))

    async def send_clear(self) -> None:
        self.chunker.clear()
        await self.sender.send(wire.clear_message(self.stream_sid))

    async def hang_up(self) -> None:
        await self.sender.close()

    async def transfer(self, target: str) -> bool:
        return False


def auth_ok(authorization: str | None, expected: str) -> bool:
    """Does an `Authorization: Basic …` header carry `expected` ("key:token")? Constant-time."""
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except ValueError:
        return False
    return hmac.compare_digest(given, expected.encode())


class ExotelCarrier:
    name = "exotel"

    def __init__(self) -> None:
        unset = not os.environ.get(AUTH_ENV)
        self.open_routes = [f'/exotel ({AUTH_ENV} is not set: "key:token")'] if unset else []

    def routes(self, serve: ServeStream) -> list[BaseRoute]:
        async def exotel_stream(websocket: WebSocket) -> None:
            expected = os.environ.get(AUTH_ENV)
            if expected and not auth_ok(websocket.headers.get("authorization"), expected):
                log.warning("exotel: rejected a connection from %s: missing or wrong Basic auth",
                            peer(websocket))
                await websocket.close(code=1008)  # before accept: the upgrade is refused (HTTP 403)
                return
            await websocket.accept()

            def link(start: Start) -> ExotelLink:
                return ExotelLink(websocket, start.stream_sid, start.sample_rate)

            await serve(websocket, Connection(self.name, wire.Decoder().parse, link))

        return [WebSocketRoute("/exotel", exotel_stream)]
