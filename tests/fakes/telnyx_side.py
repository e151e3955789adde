"""Telnyx's side of a call, for the carrier conformance suite, from Telnyx's documentation:

- the TeXML application's voice URL gets a form POST (`AccountSid`, `CallSid` = the call_control_id,
  `From`, `To`, `CallStatus`, `Direction`), signed: `telnyx-signature-ed25519` = base64(Ed25519(account key,
  `telnyx-timestamp` + "|" + raw body)) (developers.telnyx.com/docs/development/api-fundamentals/webhooks);
- the answer is TeXML; `<Connect><Stream url bidirectionalMode="rtp" bidirectionalCodec>` with
  `<Parameter>`s, which come back in `start.custom_parameters`
  (developers.telnyx.com/docs/voice/programmable-voice/texml-verbs/stream);
- the media socket (developers.telnyx.com/api-reference/websockets/stream-call-media-over-websocket):
  JSON text frames `connected`, `start` (`stream_id`, `start.call_control_id`, `from`, `to`,
  `custom_parameters`, `media_format` {encoding, sample_rate, channels}), `media` (`media.track`,
  `chunk`, `timestamp`, base64 RTP payload, here PCMU 20 ms), `dtmf` {digit}, `mark`, `stop`; from the
  application `media` {payload} of 20 ms to 30 s of audio, `mark` {name}, `clear` (queued marks come back).
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import urlencode

import httpx
import numpy as np
import websockets
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from websockets.exceptions import InvalidStatus

from tests.fakes.carrier_side import (
    Audio,
    Clear,
    Frame,
    MarkOut,
    Outbound,
    Refused,
    Violation,
    base64_payload,
    json_text,
)
from tests.fakes.g711_reference import ulaw_decode, ulaw_encode

STREAM_TOKEN = "conformance-telnyx-stream-token"


def public_key_b64(key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def signed_headers(key: Ed25519PrivateKey, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = key.sign(stamp.encode() + b"|" + body)
    return {"telnyx-timestamp": stamp, "telnyx-signature-ed25519": base64.b64encode(signature).decode(),
            "content-type": "application/x-www-form-urlencoded"}


class TelnyxSide:
    name = "telnyx"
    frame_ms = 20
    clears = True
    marks_on_clear = True
    codec = "PCMU"  # the bidirectional codec the webhook's TeXML must ask for
    key = Ed25519PrivateKey.generate()  # the account's signing key (Telnyx's side)

    def __init__(self) -> None:
        self.stream_id = secrets.token_hex(16)
        self.call_control_id = "v3:" + secrets.token_urlsafe(24)
        self.user_id = secrets.token_hex(16)
        self.parameters: dict[str, str] = {}
        self.to = self.from_ = ""
        self.seq = 0

    def server_env(self) -> dict[str, str]:
        return {"TELNYX_PUBLIC_KEY": public_key_b64(self.key), "TELNYX_STREAM_TOKEN": STREAM_TOKEN}

    async def open(self, base_url: str, to: str, from_: str, *, signed: bool = True) -> Any:
        self.to, self.from_ = to, from_
        fields = {"AccountSid": self.user_id, "CallSid": self.call_control_id, "From": from_, "To": to,
                  "CallStatus": "ringing", "Direction": "inbound", "ConnectionId": "1234567890"}
        body = urlencode(fields).encode()
        signer = self.key if signed else Ed25519PrivateKey.generate()
        async with httpx.AsyncClient() as http:
            answer = await http.post(f"{base_url}/telnyx/incoming-call", content=body,
                                     headers=signed_headers(signer, body))
        if answer.status_code != 200:
            raise Refused(answer.status_code, "the webhook")
        return await self.run_texml(answer.text)

    async def run_texml(self, texml: str) -> Any:
        """What Telnyx does with a call's TeXML (the webhook's answer, or an outbound call's inline
        `Texml`): open its `<Connect><Stream>` with its `<Parameter>`s."""
        stream = ET.fromstring(texml).find("./Connect/Stream")
        if stream is None:
            raise Violation(f"the TeXML has no <Connect><Stream>: {texml}")
        if stream.get("bidirectionalMode") != "rtp" or stream.get("bidirectionalCodec", "PCMU") != self.codec:
            raise Violation(f"not a bidirectional {self.codec} RTP stream: {texml}")
        self.parameters = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
        try:
            return await websockets.connect(stream.get("url", ""))
        except InvalidStatus as refused:
            raise Refused(refused.response.status_code, "the media socket") from None

    def call_initiated(self, to: str, from_: str) -> tuple[bytes, dict[str, str]]:
        """A Call Control application's `call.initiated` webhook for an incoming call (JSON, signed);
        developers.telnyx.com/api-reference/callbacks/call-initiated."""
        self.to, self.from_ = to, from_
        payload = {"call_control_id": self.call_control_id, "connection_id": "7267xxxxxxxxxxxxxx",
                   "call_leg_id": secrets.token_hex(8), "call_session_id": secrets.token_hex(8),
                   "client_state": None, "direction": "incoming", "from": from_, "to": to, "state": "parked",
                   "start_time": "2026-12-07T18:00:00.000000Z"}
        body = json.dumps({"data": {"record_type": "event", "event_type": "call.initiated",
                                    "id": secrets.token_hex(8), "occurred_at": "2026-12-07T18:00:00.000000Z",
                                    "payload": payload}, "meta": {"attempt": 1}}).encode()
        return body, {**signed_headers(self.key, body), "content-type": "application/json"}

    async def run_streaming_start(self, command: dict[str, Any]) -> Any:
        """What Telnyx does with a Call Control `streaming_start`: open `stream_url` with the
        `stream_auth_token` in the `x-telnyx-streaming-auth-token` header; `custom_parameters` come back in
        `start`."""
        mode, codec = command.get("stream_bidirectional_mode"), command.get("stream_bidirectional_codec")
        if mode != "rtp" or codec != self.codec:
            raise Violation(f"not a bidirectional {self.codec} RTP stream: {command}")
        self.parameters = {each["name"]: each["value"] for each in command.get("custom_parameters") or []}
        token = command.get("stream_auth_token")
        try:
            return await websockets.connect(command["stream_url"], additional_headers=(
                {"x-telnyx-streaming-auth-token": token} if token else {}))
        except InvalidStatus as refused:
            raise Refused(refused.response.status_code, "the media socket") from None

    def _next(self) -> str:
        self.seq += 1
        return str(self.seq)

    def start(self) -> list[Frame]:
        start = {"user_id": self.user_id, "call_control_id": self.call_control_id,
                 "call_session_id": secrets.token_hex(8), "from": self.from_, "to": self.to, "tags": [],
                 "client_state": None, "custom_parameters": self.parameters,
                 "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}}
        return [json.dumps({"event": "connected", "version": "1.0.0"}),
                json.dumps({"event": "start", "sequence_number": self._next(), "stream_id": self.stream_id,
                            "start": start})]

    def media(self, pcm: np.ndarray) -> Frame:
        n = self._next()
        return json.dumps({"event": "media", "sequence_number": n, "stream_id": self.stream_id,
                           "media": {"track": "inbound", "chunk": n, "timestamp": str(int(n) * 20),
                                     "payload": base64.b64encode(ulaw_encode(pcm)).decode()}})

    def dtmf(self, digit: str) -> Frame:
        return json.dumps({"event": "dtmf", "sequence_number": self._next(), "stream_id": self.stream_id,
                           "occurred_at": "2026-12-07T18:00:00.000Z", "dtmf": {"digit": digit}})

    def stop(self) -> Frame | None:
        return json.dumps({"event": "stop", "sequence_number": self._next(), "stream_id": self.stream_id,
                           "stop": {"user_id": self.user_id, "call_control_id": self.call_control_id}})

    def mark_played(self, name: str) -> Frame:
        return json.dumps({"event": "mark", "sequence_number": self._next(), "stream_id": self.stream_id,
                           "mark": {"name": name}})

    def read(self, raw: Frame) -> Outbound:
        msg = json_text(raw, "Telnyx")
        event = msg.get("event")
        if event == "clear":
            return Clear()
        if event == "mark" and isinstance(msg.get("mark", {}).get("name"), str):
            return MarkOut(msg["mark"]["name"])
        if event == "media":
            audio = base64_payload(msg, "media")
            if not 160 <= len(audio) <= 30 * 8000:
                raise Violation(f"a media message of {len(audio) / 8:.1f} ms (Telnyx: 20 ms to 30 s)")
            return Audio(ulaw_decode(audio), 8000)
        raise Violation(f"not a message Telnyx takes: {raw[:80]!r}")

    def malformed(self) -> list[Frame]:
        return ["{not json", b"\x00\x01binary", json.dumps({"event": "dance", "stream_id": self.stream_id}),
                json.dumps({"event": "media", "stream_id": self.stream_id, "media": {"payload": "***"}}),
                json.dumps({"event": "dtmf", "stream_id": self.stream_id, "dtmf": {"digit": "Z"}})]
