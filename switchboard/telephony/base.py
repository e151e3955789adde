"""What every carrier plug-in is made of: the `Carrier` it offers the server, and a guarded WebSocket
sender its link writes through.

A carrier is one folder here: its wire format (frames to `core.carrier` events and back), its link (how
our audio, marks, clear and hang-up reach the caller; marks echoed back are how a call learns what the
caller heard), and its routes. The server composes every carrier's `routes(serve)`; `serve` runs the
call over a `Connection` (the carrier's parser and link factory), the same loop for every carrier.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, Protocol
from urllib.parse import urlsplit

from starlette.routing import BaseRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from switchboard.core.carrier import Connection

log = logging.getLogger("switchboard.telephony")



class Channel(Protocol):
    """What the server's call loop reads a call from: a carrier's WebSocket, or a browser call
    (webrtc/peer.py) that gives its frames the same way."""

    async def receive(self) -> MutableMapping[str, Any]: ...  # ASGI: websocket.receive / .disconnect
    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


ServeStream = Callable[[Channel, Connection], Awaitable[None]]  # the server's call loop


class Carrier(Protocol):
    name: str  # recorded on every call it carries
    # its routes that take calls or webhooks from anyone, each with what would guard it ("/exotel
    # (EXOTEL_BASIC_AUTH is not set)"); the server says them all in one warning at start-up
    open_routes: list[str]

    def routes(self, serve: ServeStream) -> list[BaseRoute]: ...


def warn_open(carriers: list[Carrier]) -> None:
    """One loud line for every carrier's open routes (a line per carrier buried the ones that matter)."""
    open_routes = [route for carrier in carriers for route in carrier.open_routes]
    if open_routes:
        log.warning("!!! OPEN: these routes accept calls and webhooks from anyone who finds this server, "
                    "unsigned and unchecked: %s. A carrier you use needs its variable set (and no "
                    "--insecure-dev) in production; docs/carriers.md. !!!", "; ".join(open_routes))


class WebSocketSender:
    """Sends text (or binary) frames and closes the socket, quietly once the caller has gone."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket

    async def send(self, text: str) -> None:
        if self.websocket.application_state == WebSocketState.CONNECTED:
            try:
                await self.websocket.send_text(text)
            except (WebSocketDisconnect, RuntimeError, OSError) as exc:
                log.debug("send after the caller left: %s", exc)

    async def send_bytes(self, data: bytes) -> None:
        if self.websocket.application_state == WebSocketState.CONNECTED:
            try:
                await self.websocket.send_bytes(data)
            except (WebSocketDisconnect, RuntimeError, OSError) as exc:
                log.debug("send after the caller left: %s", exc)

    async def close(self) -> None:
        if self.websocket.application_state == WebSocketState.CONNECTED:
            try:
                await self.websocket.close()
            except (RuntimeError, OSError) as exc:
                log.debug("close after the caller left: %s", exc)


def peer(connection: WebSocket) -> str:
    return connection.client.host if connection.client else "?"


def external_url(path: str, query: str, headers: Mapping[str, str], scheme: str, public_url: str | None,
                 websocket: bool = False) -> str:
    """The URL a carrier used to reach us at `path`?`query` (what it signs, what we hand it back).

    `PUBLIC_URL` (scheme and host) wins; else `X-Forwarded-Host` / `Host`, and `X-Forwarded-Proto` or
    the request's own scheme. A WebSocket URL is `wss://` unless the proxy says the request was plain
    `http`: carriers open secure WebSockets only, and a tunnel usually forwards them as plain `ws`."""
    if public_url:
        parts = urlsplit(public_url if "://" in public_url else f"https://{public_url}")
        host, secure = parts.netloc, parts.scheme in ("https", "wss")
    else:
        host = headers.get("x-forwarded-host") or headers.get("host") or ""
        proto = headers.get("x-forwarded-proto")
        secure = proto not in ("http", "ws") if websocket else (proto or scheme) in ("https", "wss")
    scheme = ("wss" if secure else "ws") if websocket else ("https" if secure else "http")
    return f"{scheme}://{host}{path}" + (f"?{query}" if query else "")
