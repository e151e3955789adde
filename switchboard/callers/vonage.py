"""Vonage's side for `switchboard call --carrier vonage` (docs/carriers.md, "Vonage", has the sources).

Given the server's http(s) address, it POSTs `/vonage/answer` as Vonage does (a signed-webhook JWT with
VONAGE_SIGNATURE_SECRET when that is set), reads the NCCO's websocket endpoint (its URI, rate, headers
and authorization) and opens it; given a ws(s) URL, it opens it at `--sample-rate` with the call's
parameters as the endpoint's headers (an open route). Then `websocket:connected`, binary 20 ms L16
frames, `websocket:dtmf`, `websocket:notify` for each notify whose audio has played (none for cleared
audio), no stop (Vonage closes). Outbound binary frames that are not exactly 20 ms, and any text but
`notify`/`clear`, are reported as malformed.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from typing import Any

import httpx
import numpy as np

from switchboard.audio.resample import resample
from switchboard.callers import Checked, digits, json_object

RATE = 8000
RATES = (8000, 16000)


def signed_webhook_jwt(secret: str, body: bytes) -> str:
    """What Vonage puts in a signed webhook's Authorization header (HS256, payload_hash of the body)."""
    import jwt

    claims = {"iat": int(time.time()), "jti": secrets.token_hex(8), "iss": "Vonage",
              "payload_hash": hashlib.sha256(body).hexdigest(), "application_id": "simulated-caller"}
    return jwt.encode(claims, secret, algorithm="HS256")


class Wire:
    name = "Vonage"
    frame_samples = 160
    echoes_cleared_marks = False

    def __init__(self, sample_rate: int = RATE) -> None:
        if sample_rate not in RATES:
            raise ValueError("Vonage streams L16 at 8000 or 16000 Hz")
        self.sample_rate = sample_rate
        self.call_sid = secrets.token_hex(16)
        self.stream_sid = self.call_sid
        self.account_sid = ""
        self.headers: dict[str, Any] = {}

    async def open(self, url: str, parameters: dict[str, str]) -> tuple[str, dict[str, str]]:
        if url.startswith(("ws://", "wss://")):
            self.headers = {"call": self.call_sid, **parameters}
            return url, {}
        answer = url.rstrip("/") + ("" if url.rstrip("/").endswith("/vonage/answer") else "/vonage/answer")
        body = json.dumps({"uuid": self.call_sid, "conversation_uuid": "CON-" + self.call_sid,
                           "from": digits(parameters.get("from", "")),
                           "to": digits(parameters.get("to", ""))})
        headers = {"Content-Type": "application/json"}
        secret = os.environ.get("VONAGE_SIGNATURE_SECRET")
        if secret:
            headers["Authorization"] = f"Bearer {signed_webhook_jwt(secret, body.encode())}"
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(answer, content=body, headers=headers)
        if response.status_code != 200:
            raise OSError(f"{answer} answered {response.status_code}: {response.text[:200]}")
        ncco = response.json()
        connects = [each for each in ncco if isinstance(each, dict) and each.get("action") == "connect"]
        endpoints = [endpoint for action in connects for endpoint in action.get("endpoint") or []
                     if endpoint.get("type") == "websocket"]
        if not endpoints:
            raise OSError(f"{answer} answered no NCCO connect to a websocket: {response.text[:200]}")
        endpoint = endpoints[0]
        kind, _, rate = str(endpoint.get("content-type")).partition(";rate=")
        if kind != "audio/l16" or not rate.isdigit() or int(rate) not in RATES:
            raise OSError(f"the NCCO asks for {endpoint.get('content-type')!r}, which Vonage does not stream")
        self.sample_rate, self.headers = int(rate), dict(endpoint.get("headers") or {})
        authorization = endpoint.get("authorization") or {}
        extra = {"Authorization": authorization["value"]} if authorization.get("type") == "custom" else {}
        return endpoint["uri"], extra

    def connected(self) -> None:
        return None

    def start(self, seq: int, parameters: dict[str, str]) -> dict[str, Any]:
        return {"event": "websocket:connected", "content-type": f"audio/l16;rate={self.sample_rate}",
                **self.headers}

    def encode(self, pcm: np.ndarray) -> tuple[bytes, np.ndarray]:
        wire = resample(pcm, RATE, self.sample_rate) if self.sample_rate != RATE else pcm
        return wire.astype("<i2").tobytes(), pcm

    def media(self, seq: int, chunk: int, timestamp_ms: int, payload: bytes) -> bytes:
        return payload

    def mark(self, seq: int, name: str) -> dict[str, Any]:
        return {"event": "websocket:notify", "payload": {"name": name}}

    def stop(self, seq: int) -> None:
        return None  # Vonage closes the socket

    def check(self, raw: str | bytes) -> Checked:
        if isinstance(raw, bytes):
            size = self.sample_rate // 50 * 2
            if len(raw) != size:
                return (f"a binary frame of {len(raw)} bytes (Vonage takes 20 ms frames: {size} bytes at "
                        f"{self.sample_rate} Hz)")
            pcm = np.frombuffer(raw, dtype="<i2").astype(np.int16)
            return "media", resample(pcm, self.sample_rate, RATE) if self.sample_rate != RATE else pcm
        msg = json_object(raw, self.name)
        if isinstance(msg, str):
            return msg
        action = msg.get("action")
        if action == "clear":
            return "clear", None
        if action == "notify":
            payload = msg.get("payload")
            name = payload.get("name") if isinstance(payload, dict) else None
            return ("mark", name) if isinstance(name, str) else "notify: no payload.name to echo"
        return f"not an action Vonage takes: {str(action)[:40]!r} (notify, clear; audio as binary frames)"
