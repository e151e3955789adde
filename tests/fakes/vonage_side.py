"""Vonage's side of a call (Voice API WebSockets), for the carrier conformance suite, from Vonage's
documentation: developer.vonage.com/en/voice/voice-api/concepts/websockets and guides/websockets, the
NCCO reference (`connect` to a `websocket` endpoint), and "Signed webhooks".

- the answer URL gets a JSON POST (`uuid`, `conversation_uuid`, `from`, `to` as digits, country code
  first) with `Authorization: Bearer <JWT>`: HS256 with the signature secret, `iat`, `jti`,
  `iss` "Vonage", `payload_hash` = SHA-256 hex of the body; it must answer an NCCO whose `connect`
  action has a `websocket` endpoint: `uri`, `content-type` audio/l16;rate=8000|16000, `headers`, and an
  `authorization` Vonage sends as the upgrade's Authorization header;
- in: first a text frame `{"event": "websocket:connected", "content-type": …, …headers}`, then binary
  20 ms frames of 16-bit little-endian PCM at that rate, `websocket:dtmf` {digit, duration},
  `websocket:notify` {payload} once the audio before a notify has played; no stop (it closes);
- out: binary frames of exactly 20 ms (320 bytes at 8 kHz, 640 at 16 kHz), `{"action": "notify",
  "payload": {…}}`, `{"action": "clear"}`. Anything else is refused.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from typing import Any

import httpx
import jwt
import numpy as np
import soxr
import websockets
from websockets.exceptions import InvalidStatus

from tests.fakes.carrier_side import Audio, Clear, Frame, MarkOut, Outbound, Refused, Violation

SIGNATURE_SECRET = "conformance-vonage-signature-secret-32b"


def signed_jwt(secret: str, body: bytes) -> str:
    claims = {"iat": int(time.time()), "jti": secrets.token_hex(8), "iss": "Vonage",
              "payload_hash": hashlib.sha256(body).hexdigest(), "api_key": "conformance",
              "application_id": "conformance-app"}
    return jwt.encode(claims, secret, algorithm="HS256")


class VonageSide:
    name = "vonage"
    frame_ms = 20
    clears = True
    marks_on_clear = False  # notify fires once the audio before it has played

    def __init__(self) -> None:
        self.uuid = "conformance-" + secrets.token_hex(8)
        self.rate = 8000
        self.headers: dict[str, Any] = {}

    def server_env(self) -> dict[str, str]:
        return {"VONAGE_SIGNATURE_SECRET": SIGNATURE_SECRET}

    async def answer(self, base_url: str, to: str, from_: str, *, signed: bool = True,
                     url: str | None = None) -> dict[str, Any]:
        """POST the answer URL (ours, or the `answer_url` an outbound call was placed with) as Vonage
        does; returns the NCCO's websocket endpoint."""
        body = json.dumps({"uuid": self.uuid, "conversation_uuid": "CON-" + self.uuid,
                           "from": from_.lstrip("+"), "to": to.lstrip("+"), "region_url": ""}).encode()
        token = signed_jwt(SIGNATURE_SECRET if signed else "not-the-signature-secret-of-32-bytes", body)
        async with httpx.AsyncClient() as client:
            response = await client.post(url or f"{base_url}/vonage/answer", content=body, headers={
                "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        if response.status_code != 200:
            raise Refused(response.status_code, "the answer URL")
        ncco = response.json()
        connect = [action for action in ncco if action.get("action") == "connect"]
        given = (connect[0].get("endpoint") or []) if connect else []
        endpoints = [each for each in given if each.get("type") == "websocket"]
        if not endpoints:
            raise Violation(f"the NCCO does not connect a websocket: {ncco}")
        endpoint = endpoints[0]
        content_type = endpoint.get("content-type")
        if content_type not in ("audio/l16;rate=8000", "audio/l16;rate=16000"):
            raise Violation(f"a content-type Vonage does not stream: {content_type!r}")
        return endpoint

    async def open(self, base_url: str, to: str, from_: str, *, signed: bool = True,
                   url: str | None = None) -> Any:
        endpoint = await self.answer(base_url, to, from_, signed=signed, url=url)
        self.rate = int(endpoint["content-type"].rpartition("=")[2])
        self.headers = endpoint.get("headers") or {}
        authorization = (endpoint.get("authorization") or {})
        extra = {"Authorization": authorization["value"]} if authorization.get("type") == "custom" else {}
        try:
            return await websockets.connect(endpoint["uri"], additional_headers=extra)
        except InvalidStatus as refused:
            raise Refused(refused.response.status_code, "the media socket") from None

    def start(self) -> list[Frame]:
        return [json.dumps({"event": "websocket:connected", "content-type": f"audio/l16;rate={self.rate}",
                            **self.headers})]

    def media(self, pcm: np.ndarray) -> Frame:
        wire = pcm if self.rate == 8000 else soxr.resample(pcm, 8000, self.rate)
        return wire.astype("<i2").tobytes()

    def dtmf(self, digit: str) -> Frame:
        return json.dumps({"event": "websocket:dtmf", "digit": digit, "duration": 260})

    def stop(self) -> Frame | None:
        return None  # Vonage just closes the socket

    def mark_played(self, name: str) -> Frame:
        return json.dumps({"event": "websocket:notify", "payload": {"name": name}})

    def read(self, raw: Frame) -> Outbound:
        if isinstance(raw, bytes):
            size = self.rate * 2 * 20 // 1000
            if len(raw) != size:
                raise Violation(f"a binary frame of {len(raw)} bytes (Vonage plays 20 ms frames: {size} "
                                f"bytes at {self.rate} Hz)")
            return Audio(np.frombuffer(raw, "<i2").astype(np.int16), self.rate)
        try:
            msg = json.loads(raw)
        except ValueError:
            raise Violation(f"not JSON: {raw[:80]!r}") from None
        action = msg.get("action")
        if action == "clear":
            return Clear()
        if action == "notify":
            payload = msg.get("payload")
            if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
                raise Violation(f"a notify whose payload this fake cannot name: {raw[:80]!r}")
            return MarkOut(payload["name"])
        raise Violation(f"not a message Vonage takes: {raw[:80]!r}")

    def malformed(self) -> list[Frame]:
        return ["{not json", b"\x01", json.dumps({"event": "websocket:dance"}),
                json.dumps({"event": "websocket:dtmf", "digit": "Z"}), "[1, 2]"]
