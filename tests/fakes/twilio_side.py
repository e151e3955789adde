"""Twilio's side of a call, for the carrier conformance suite, from Twilio's documentation:

- the voice webhook: `POST /incoming-call` with the call's form fields, signed with `X-Twilio-Signature`
  = base64(HMAC-SHA1(auth token, URL + each POST field sorted by name as name + value));
- the TwiML answer `<Connect><Stream url>` with `<Parameter>`s, which come back in
  `start.customParameters`; Twilio opens the stream URL signed the same way (the wss URL, no fields);
- Media Streams: JSON text frames only; `connected`, `start`, `media` (20 ms of base64 μ-law 8 kHz),
  `dtmf`, `mark`, `stop` in; `media`/`mark`/`clear` with the right `streamSid` out; a clear sends the
  pending marks back.
https://www.twilio.com/docs/voice/media-streams/websocket-messages,
https://www.twilio.com/docs/usage/security#validating-requests
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import xml.etree.ElementTree as ET
from typing import Any

import httpx
import numpy as np
import websockets
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

TOKEN = "conformance-twilio-token-0123456789"


def signature(token: str, url: str, fields: dict[str, str]) -> str:
    signed = url + "".join(name + fields[name] for name in sorted(fields))
    return base64.b64encode(hmac.new(token.encode(), signed.encode(), hashlib.sha1).digest()).decode()


class TwilioSide:
    name = "twilio"
    frame_ms = 20
    clears = True
    marks_on_clear = True

    def __init__(self) -> None:
        self.stream_sid = "MZ" + secrets.token_hex(16)
        self.call_sid = "CA" + secrets.token_hex(16)
        self.parameters: dict[str, str] = {}
        self.seq = 0

    def server_env(self) -> dict[str, str]:
        return {"TWILIO_AUTH_TOKEN": TOKEN}

    async def open(self, base_url: str, to: str, from_: str, *, signed: bool = True) -> Any:
        token = TOKEN if signed else "not-the-token"
        fields = {"CallSid": self.call_sid, "AccountSid": "AC" + "0" * 32, "From": from_, "To": to,
                  "CallStatus": "ringing", "Direction": "inbound"}
        url = f"{base_url}/incoming-call"
        async with httpx.AsyncClient() as http:
            signed = {"X-Twilio-Signature": signature(token, url, fields)}
            answer = await http.post(url, data=fields, headers=signed)
        if answer.status_code != 200:
            raise Refused(answer.status_code, "the webhook")
        stream = ET.fromstring(answer.text).find("./Connect/Stream")
        if stream is None:
            raise Violation(f"the webhook's TwiML has no <Connect><Stream>: {answer.text}")
        ws_url = stream.get("url", "")
        if "?" in ws_url:
            raise Violation(f"Twilio's <Stream url> takes no query string: {ws_url}")
        self.parameters = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
        try:
            return await websockets.connect(ws_url, additional_headers={
                "X-Twilio-Signature": signature(token, ws_url, {})})
        except InvalidStatus as refused:
            raise Refused(refused.response.status_code, "the media socket") from None

    def _next(self) -> str:
        self.seq += 1
        return str(self.seq)

    def start(self) -> list[Frame]:
        start = {"streamSid": self.stream_sid, "accountSid": "AC" + "0" * 32, "callSid": self.call_sid,
                 "tracks": ["inbound"], "customParameters": self.parameters,
                 "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}
        return [json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
                json.dumps({"event": "start", "sequenceNumber": self._next(), "streamSid": self.stream_sid,
                            "start": start})]

    def media(self, pcm: np.ndarray) -> Frame:
        payload = base64.b64encode(ulaw_encode(pcm)).decode()
        return json.dumps({"event": "media", "sequenceNumber": self._next(), "streamSid": self.stream_sid,
                           "media": {"track": "inbound", "chunk": self.seq, "timestamp": str(self.seq * 20),
                                     "payload": payload}})

    def dtmf(self, digit: str) -> Frame:
        return json.dumps({"event": "dtmf", "sequenceNumber": self._next(), "streamSid": self.stream_sid,
                           "dtmf": {"track": "inbound_track", "digit": digit}})

    def stop(self) -> Frame | None:
        return json.dumps({"event": "stop", "sequenceNumber": self._next(), "streamSid": self.stream_sid,
                           "stop": {"accountSid": "AC" + "0" * 32, "callSid": self.call_sid}})

    def mark_played(self, name: str) -> Frame:
        return json.dumps({"event": "mark", "sequenceNumber": self._next(), "streamSid": self.stream_sid,
                           "mark": {"name": name}})

    def read(self, raw: Frame) -> Outbound:
        msg = json_text(raw, "Twilio warning 31950: Twilio")
        if msg.get("streamSid") != self.stream_sid:
            raise Violation(f"wrong or missing streamSid: {msg.get('streamSid')!r}")
        event = msg.get("event")
        if event == "clear":
            return Clear()
        if event == "mark" and isinstance(msg.get("mark", {}).get("name"), str):
            return MarkOut(msg["mark"]["name"])
        if event == "media":
            return Audio(ulaw_decode(base64_payload(msg, "media")), 8000)
        raise Violation(f"not a message Twilio takes: {raw[:80]!r}")

    def malformed(self) -> list[Frame]:
        return ["{not json", b"\x00\x01binary", json.dumps({"event": "dance", "streamSid": self.stream_sid}),
                json.dumps({"event": "media", "streamSid": self.stream_sid, "media": {"payload": "***"}}),
                json.dumps({"event": "dtmf", "streamSid": self.stream_sid, "dtmf": {"digit": "Z"}})]
