"""A minimal RFC 6455 WebSocket client on a raw asyncio transport, for load generators (bench/calls.py).

Why not the `websockets` client: a simulated call sends 50 frames a second and receives up to 50, and on a
2-core machine the load generator shares the cores with the server it measures. Through `websockets` a
caller cost almost as much CPU per call as the Switchboard process serving it, which hides what a second
server process can hold. This client writes each frame to the transport in one call (masked with a fresh
random key per frame through websockets' C `apply_mask`, as the RFC requires) and hands each received text
message, undecoded, to a callback with the time its bytes arrived. What the server sees is the same: real
masked frames, one per message, the same bytes.

Only what a telephony media stream needs: text messages out; text messages, ping (answered with a pong)
and close in; no extensions, no fragmentation on send (received fragments are joined).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import random
import struct
import time
from collections.abc import Callable
from urllib.parse import urlsplit

try:
    from websockets.speedups import apply_mask
except ImportError:  # pure-Python fallback (slower)

    def apply_mask(data: bytes, mask: bytes) -> bytes:
        n = len(data)
        key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
        return (int.from_bytes(data, "big") ^ key).to_bytes(n, "big")


GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

OnText = Callable[[bytes, float], None]


class HandshakeError(Exception):
    """The server did not answer the upgrade with 101 and the right Sec-WebSocket-Accept."""


class WsClient(asyncio.Protocol):
    """One client connection. `on_text(payload, arrived)` gets every text message (raw UTF-8 bytes) with the
    `time.monotonic()` at which the read that completed it returned."""

    def __init__(self, on_text: OnText, host: str, path: str) -> None:
        self.on_text = on_text
        self.transport: asyncio.Transport | None = None
        self._key = base64.b64encode(os.urandom(16))
        self._request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                         f"Connection: Upgrade\r\nSec-WebSocket-Key: {self._key.decode()}\r\n"
                         "Sec-WebSocket-Version: 13\r\n\r\n").encode()
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()  # the TCP connection has ended
        self.close_received = False  # the server sent a close frame (it hung up)
        self._close_sent = False
        self._buffer = bytearray()
        self._fragments: list[bytes] = []

    # --- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  (uvloop's is not an asyncio.Transport)
        transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self._buffer += data
        if not self.opened.done():
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._buffer[:end]).decode("latin-1")
            del self._buffer[: end + 4]
            try:
                self._check_handshake(head)
            except HandshakeError as exc:
                self.opened.set_exception(exc)
                self.abort()
                return
            self.opened.set_result(None)
        self._parse(now)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("connection closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)

    # --- sending ----------------------------------------------------------------------------------

    def send_text(self, payload: bytes) -> None:
        self._send(OP_TEXT, payload)

    def _send(self, opcode: int, payload: bytes) -> None:
        if self.transport is None or self.transport.is_closing() or self._close_sent:
            return
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        mask = random.randbytes(4)  # a fresh key per frame; Mersenne Twister, not a syscall
        self.transport.write(header + mask + apply_mask(payload, mask))

    async def close(self, wait_s: float = 5.0) -> None:
        """Send a close frame, wait (bounded) for the server to end the connection, then drop it."""
        if not self._close_sent and not self.closed.done():
            self._send(OP_CLOSE, struct.pack("!H", 1000))
            self._close_sent = True
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), wait_s)
        except TimeoutError:
            pass
        self.abort()

    def abort(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    # --- receiving --------------------------------------------------------------------------------

    def _check_handshake(self, head: str) -> None:
        status, *lines = head.split("\r\n")
        if not status.startswith("HTTP/1.1 101"):
            raise HandshakeError(f"the server answered {status!r} to the WebSocket upgrade")
        headers = {name.strip().lower(): value.strip()
                   for name, _, value in (line.partition(":") for line in lines)}
        expected = base64.b64encode(hashlib.sha1(self._key + GUID).digest()).decode()
        if headers.get("sec-websocket-accept") != expected:
            raise HandshakeError("wrong Sec-WebSocket-Accept in the server's upgrade answer")

    def _parse(self, now: float) -> None:
        buf = self._buffer
        pos, size = 0, len(buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n = b1 & 0x7F
            head = 2
            if n == 126:
                if size - pos < 4:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif n == 127:
                if size - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            if b1 & 0x80:  # a masked server frame is a protocol error; unmask anyway, we only measure
                head += 4
            if size - pos < head + n:
                break
            payload = bytes(buf[pos + head : pos + head + n])
            if b1 & 0x80:
                payload = apply_mask(payload, bytes(buf[pos + head - 4 : pos + head]))
            pos += head + n
            self._frame(b0 & 0x80, b0 & 0x0F, payload, now)
        del buf[:pos]

    def _frame(self, fin: int, opcode: int, payload: bytes, now: float) -> None:
        if opcode in (OP_TEXT, OP_BINARY, OP_CONT):
            if not fin or self._fragments:
                self._fragments.append(payload)
                if not fin:
                    return
                payload = b"".join(self._fragments)
                self._fragments.clear()
            self.on_text(payload, now)
        elif opcode == OP_PING:
            self._send(OP_PONG, payload)
        elif opcode == OP_CLOSE:
            self.close_received = True
            if not self._close_sent:
                self._send(OP_CLOSE, payload[:2])
                self._close_sent = True


async def connect(url: str, on_text: OnText, open_timeout_s: float = 30.0) -> WsClient:
    """Open a ws:// connection and complete the upgrade."""
    parts = urlsplit(url)
    if parts.scheme != "ws" or not parts.hostname:
        raise ValueError(f"only ws://host:port/path URLs, not {url!r}")
    host, port = parts.hostname, parts.port or 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    loop = asyncio.get_running_loop()

    async def open_() -> WsClient:
        _, client = await loop.create_connection(lambda: WsClient(on_text, f"{host}:{port}", path),
                                                 host, port)
        await client.opened
        return client

    return await asyncio.wait_for(open_(), open_timeout_s)
