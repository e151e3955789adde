"""Plivo's side of a call (Audio Streaming), for the carrier conformance suite, from Plivo's documentation:
docs.plivo.com/docs/voice/xml/audiostream (the `<Stream>` element), plivo.com/docs/voice/audio-streaming/
audio-streaming (the Stream Event Protocol), and "Validate requests from Plivo" (signature V3).

- the answer URL gets a form POST (`CallUUID`, `From`, `To` as digits with the country code, no "+",
  `Direction`, `CallStatus`) signed with `X-Plivo-Signature-V3` = base64(HMAC-SHA256(auth token,
  URL + "?" + sorted name+value pairs + "." + nonce)) and `X-Plivo-Signature-V3-Nonce`; it must answer
  XML whose `<Stream bidirectional="true">` holds the wss:// URL Plivo then opens;
- JSON text frames in: `start` {callId, streamId, accountId, tracks, mediaFormat}, `media` (base64
  μ-law, here 20 ms a chunk), `dtmf` {digit}, `playedStream` {name}; Plivo sends no `stop` (it closes);
- out: `playAudio` whose `media` says contentType audio/x-mulaw, sampleRate 8000 (the `<Stream>`'s
  contentType) with a base64 payload, `checkpoint` {name}, `clearAudio` — each with our `streamId`.
  A checkpoint pending at a clear is never confirmed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import parse_qsl

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

AUTH_ID = "MAZDQ1ZJIYMDZKMTGWNZ"  # 20 characters, MA…: what the SDK accepts as a main account's id
AUTH_TOKEN = "conformance-plivo-token"


def v3_signature(token: str, url: str, params: dict[str, str], nonce: str) -> str:
    """Plivo's V3 signature of a POST to `url` with form `params`: the URL without its query, "?", its
    query's name=value pairs sorted and joined by "&" then "." (when it has one), the form's sorted
    name+value pairs."""
    path, _, query = url.partition("?")
    pairs = "&".join(f"{key}={value}" for key, value in sorted(parse_qsl(query, keep_blank_values=True)))
    form = "".join(f"{key}{params[key]}" for key in sorted(params))
    base = path + "?" + (f"{pairs}." if pairs else "") + form
    digest = hmac.new(token.encode(), f"{base}.{nonce}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class PlivoSide:
    name = "plivo"
    frame_ms = 20
    clears = True
    marks_on_clear = False  # playedStream only for audio that played

    def __init__(self) -> None:
        self.call_uuid = secrets.token_hex(4) + "-conformance-call"
        self.stream_id = secrets.token_hex(4) + "-conformance-stream"
        self.seq = 0
        self.stream_url = ""

    def server_env(self) -> dict[str, str]:
        return {"PLIVO_AUTH_TOKEN": AUTH_TOKEN}

    async def answer(self, base_url: str, to: str, from_: str, *, signed: bool = True,
                     url: str | None = None) -> str:
        """POST the answer URL (ours, or the `answer_url` an outbound call was placed with) as Plivo does;
        returns the `<Stream>`'s URL."""
        direction = "outbound" if url else "inbound"
        url = url or f"{base_url}/plivo/answer"
        form = {"CallUUID": self.call_uuid, "From": from_.lstrip("+"), "To": to.lstrip("+"),
                "Direction": direction, "CallStatus": "in-progress", "Event": "StartApp"}
        nonce = str(secrets.randbelow(10**20))
        token = AUTH_TOKEN if signed else "not-the-token"
        headers = {"X-Plivo-Signature-V3": v3_signature(token, url, form, nonce),
                   "X-Plivo-Signature-V3-Nonce": nonce}
        async with httpx.AsyncClient() as client:
            response = await client.post(url, data=form, headers=headers)
        if response.status_code != 200:
            raise Refused(response.status_code, "the answer URL")
        stream = ET.fromstring(response.text).find("Stream")
        if stream is None or stream.get("bidirectional") != "true":
            raise Violation(f"the answer XML has no bidirectional <Stream>: {response.text[:200]}")
        if stream.get("contentType") not in (None, "audio/x-mulaw;rate=8000"):
            raise Violation(f"a contentType this fake does not speak: {stream.get('contentType')}")
        return (stream.text or "").strip()

    async def open(self, base_url: str, to: str, from_: str, *, signed: bool = True,
                   url: str | None = None) -> Any:
        self.stream_url = await self.answer(base_url, to, from_, signed=signed, url=url)
        try:
            return await websockets.connect(self.stream_url)
        except InvalidStatus as refused:
            raise Refused(refused.response.status_code, "the media socket") from None

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def start(self) -> list[Frame]:
        start = {"callId": self.call_uuid, "streamId": self.stream_id, "accountId": AUTH_ID,
                 "tracks": ["inbound"], "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}}
        return [json.dumps({"event": "start", "sequenceNumber": self._next(), "start": start,
                            "extra_headers": ""})]

    def media(self, pcm: np.ndarray) -> Frame:
        n = self._next()
        media = {"track": "inbound", "timestamp": str(1_765_000_000_000 + n * 20), "chunk": n,
                 "payload": base64.b64encode(ulaw_encode(pcm)).decode()}
        return json.dumps({"event": "media", "sequenceNumber": n, "streamId": self.stream_id, "media": media})

    def dtmf(self, digit: str) -> Frame:
        return json.dumps({"event": "dtmf", "sequenceNumber": self._next(), "streamId": self.stream_id,
                           "dtmf": {"track": "inbound", "digit": digit, "timestamp": "1765000000000"}})

    def stop(self) -> Frame | None:
        return None  # Plivo just closes the socket

    def mark_played(self, name: str) -> Frame:
        return json.dumps({"event": "playedStream", "sequenceNumber": self._next(),
                           "streamId": self.stream_id, "name": name})

    def read(self, raw: Frame) -> Outbound:
        msg = json_text(raw, "Plivo")
        event = msg.get("event")
        if msg.get("streamId") != self.stream_id:
            raise Violation(f"{event}: wrong or missing streamId {msg.get('streamId')!r}")
        if event == "clearAudio":
            return Clear()
        if event == "checkpoint":
            if not isinstance(msg.get("name"), str) or not msg["name"]:
                raise Violation("checkpoint without a name")
            return MarkOut(msg["name"])
        if event == "playAudio":
            media = msg.get("media") if isinstance(msg.get("media"), dict) else {}
            if media.get("contentType") != "audio/x-mulaw" or media.get("sampleRate") != 8000:
                raise Violation(f"playAudio as {media.get('contentType')!r} at {media.get('sampleRate')!r} "
                                "(the stream is audio/x-mulaw at 8000: codecs may not switch mid-stream)")
            audio = base64_payload({"playAudio": media}, "playAudio")
            if not audio:
                raise Violation("playAudio with an empty payload")
            return Audio(ulaw_decode(audio), 8000)
        raise Violation(f"not a message Plivo takes: {raw[:80]!r}")

    def malformed(self) -> list[Frame]:
        return ["{not json", b"\x00\x01binary", json.dumps({"event": "dance", "streamId": self.stream_id}),
                json.dumps({"event": "media", "streamId": self.stream_id, "media": {"payload": "***"}}),
                json.dumps({"event": "dtmf", "streamId": self.stream_id, "dtmf": {"digit": "Z"}})]
