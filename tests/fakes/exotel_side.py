"""Exotel's side of a call (the Voicebot applet), for the carrier conformance suite, from Exotel's
documentation (https://support.exotel.com/support/solutions/articles/3000108630):

- no webhook: the applet opens the configured stream URL; with HTTP Basic auth in it (`key:token`);
- snake_case JSON text frames: `connected`, `start` (`stream_sid`, `call_sid`, `from`, `to`,
  `media_format` {encoding "audio/x-raw", sample_rate}), `media` (base64 16-bit little-endian PCM,
  here in 100 ms chunks), `dtmf` {digit, duration}, `mark`, `stop` {reason};
- out: `media` whose payload is at least 3,200 bytes, at most 100 KB, a multiple of 320 bytes;
  `mark`, `clear` with the right `stream_sid`.
"""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

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

AUTH = "conformance-key:conformance-token"


class ExotelSide:
    name = "exotel"
    frame_ms = 100
    clears = True
    marks_on_clear = True

    def __init__(self) -> None:
        self.stream_sid = secrets.token_hex(16)
        self.call_sid = secrets.token_hex(16)
        self.to = self.from_ = ""
        self.seq = 0

    def server_env(self) -> dict[str, str]:
        return {"EXOTEL_BASIC_AUTH": AUTH}

    async def open(self, base_url: str, to: str, from_: str, *, signed: bool = True) -> Any:
        self.to, self.from_ = to, from_
        credentials = AUTH if signed else "conformance-key:wrong"
        ws_url = base_url.replace("http://", "ws://") + "/exotel"
        basic = base64.b64encode(credentials.encode()).decode()
        try:
            return await websockets.connect(ws_url, additional_headers={"Authorization": f"Basic {basic}"})
        except InvalidStatus as refused:
            raise Refused(refused.response.status_code, "the media socket") from None

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def start(self) -> list[Frame]:
        start = {"stream_sid": self.stream_sid, "call_sid": self.call_sid, "account_sid": "conformance",
                 "from": self.from_, "to": self.to, "custom_parameters": {},
                 "media_format": {"encoding": "audio/x-raw", "sample_rate": "8000", "bit_rate": "128kbps"}}
        return [json.dumps({"event": "connected"}),
                json.dumps({"event": "start", "sequence_number": self._next(), "stream_sid": self.stream_sid,
                            "start": start})]

    def media(self, pcm: np.ndarray) -> Frame:
        payload = base64.b64encode(pcm.astype("<i2").tobytes()).decode()
        n = self._next()
        return json.dumps({"event": "media", "sequence_number": n, "stream_sid": self.stream_sid,
                           "media": {"chunk": n, "timestamp": str(n * 100), "payload": payload}})

    def dtmf(self, digit: str) -> Frame:
        return json.dumps({"event": "dtmf", "sequence_number": self._next(), "stream_sid": self.stream_sid,
                           "dtmf": {"digit": digit, "duration": "200"}})

    def stop(self) -> Frame | None:
        return json.dumps({"event": "stop", "sequence_number": self._next(), "stream_sid": self.stream_sid,
                           "stop": {"call_sid": self.call_sid, "reason": "callended"}})

    def mark_played(self, name: str) -> Frame:
        return json.dumps({"event": "mark", "sequence_number": self._next(), "stream_sid": self.stream_sid,
                           "mark": {"name": name}})

    def read(self, raw: Frame) -> Outbound:
        msg = json_text(raw, "Exotel")
        if msg.get("stream_sid") != self.stream_sid:
            raise Violation(f"wrong or missing stream_sid: {msg.get('stream_sid')!r}")
        event = msg.get("event")
        if event == "clear":
            return Clear()
        if event == "mark" and isinstance(msg.get("mark", {}).get("name"), str):
            return MarkOut(msg["mark"]["name"])
        if event == "media":
            audio = base64_payload(msg, "media")
            if len(audio) < 3200 or len(audio) % 320 or len(audio) > 100 * 1024:
                raise Violation(f"a media chunk of {len(audio)} bytes (Exotel: ≥ 3,200, ≤ 100 KB, × 320)")
            return Audio(np.frombuffer(audio, "<i2").astype(np.int16), 8000)
        raise Violation(f"not a message Exotel takes: {raw[:80]!r}")

    def malformed(self) -> list[Frame]:
        return ["{not json", b"\x00\x01binary", json.dumps({"event": "dance", "stream_sid": self.stream_sid}),
                json.dumps({"event": "media", "stream_sid": self.stream_sid, "media": {"payload": "AAAA"}}),
                json.dumps({"event": "dtmf", "stream_sid": self.stream_sid, "dtmf": {"digit": "Z"}})]
