"""Telnyx's side for `switchboard call --carrier telnyx` (docs/carriers.md, "Telnyx", has the sources).

Given the server's http(s) address, it POSTs `/telnyx/incoming-call` as a TeXML application does (a
form with `CallSid`, `From`, `To`; unsigned: only Telnyx holds the account's signing key, so this works
against a server without TELNYX_PUBLIC_KEY), checks the TeXML's `<Connect><Stream>` and opens the socket
it names; given a ws(s) URL, it opens it (with TELNYX_STREAM_TOKEN as `?token=` when that is set and the
URL has none). Then: `connected`, `start` (with the `<Parameter>`s), 20 ms `media` frames in PCMU at
8 kHz (or L16 big-endian at 16 kHz with `--sample-rate 16000`), a `mark` echo for each mark whose audio
has played and for every queued one at a `clear`, `stop`. Outbound messages that break Telnyx's rules
(not JSON text, unknown events, media outside 20 ms to 30 s, L16 not whole samples) are reported.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import numpy as np

from switchboard.audio.g711 import ulaw_decode, ulaw_encode
from switchboard.audio.resample import resample
from switchboard.callers import Checked, json_object

RATE = 8000
WEBHOOK = "/telnyx/incoming-call"


class Wire:
    name = "Telnyx"
    frame_samples = 160  # 20 ms a media message
    echoes_cleared_marks = True

    def __init__(self, sample_rate: int = RATE) -> None:
        if sample_rate not in (8000, 16000):
            raise ValueError("this caller speaks Telnyx's PCMU at 8 kHz or L16 at 16 kHz")
        self.sample_rate = sample_rate
        self.codec = "PCMU" if sample_rate == RATE else "L16"
        self.stream_sid = secrets.token_hex(16)
        self.call_sid = "v3:" + secrets.token_urlsafe(24)
        self.account_sid = secrets.token_hex(16)
        self.parameters: dict[str, str] | None = None  # from the TeXML, when the webhook was played

    async def open(self, url: str, parameters: dict[str, str]) -> tuple[str, dict[str, str]]:
        if url.startswith(("ws://", "wss://")):
            token = os.environ.get("TELNYX_STREAM_TOKEN")
            if token and "token=" not in urlsplit(url).query:
                url += ("&" if urlsplit(url).query else "?") + urlencode({"token": token})
            return url, {}
        webhook = url.rstrip("/") + ("" if url.rstrip("/").endswith(WEBHOOK) else WEBHOOK)
        form = {"AccountSid": self.account_sid, "CallSid": self.call_sid, "CallStatus": "ringing",
                "From": parameters.get("from", ""), "To": parameters.get("to", ""), "Direction": "inbound"}
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(webhook, data=form)
        if response.status_code != 200:
            raise OSError(f"{webhook} answered {response.status_code}: {response.text[:200]} (a server "
                          "with TELNYX_PUBLIC_KEY takes only webhooks signed by Telnyx: give the ws:// URL)")
        stream = ET.fromstring(response.text).find("Connect/Stream")
        if stream is None or stream.get("bidirectionalMode") != "rtp":
            raise OSError(f"{webhook} answered no bidirectional RTP <Connect><Stream>: {response.text[:200]}")
        codec = stream.get("bidirectionalCodec", "PCMU")
        rate = int(stream.get("bidirectionalSamplingRate", RATE))
        if (codec, rate) != (self.codec, self.sample_rate):
            raise OSError(f"the <Stream> asks for {codec} at {rate} Hz; this caller speaks {self.codec} at "
                          f"{self.sample_rate} (--sample-rate {rate} for L16 at 16 kHz)")
        self.parameters = {p.get("name", ""): p.get("value", "") for p in stream.iter("Parameter")}
        return stream.get("url", ""), {}

    def connected(self) -> dict[str, Any]:
        return {"event": "connected", "version": "1.0.0"}

    def start(self, seq: int, parameters: dict[str, str]) -> dict[str, Any]:
        params = dict(parameters if self.parameters is None else self.parameters)
        start = {"user_id": self.account_sid, "call_control_id": self.call_sid,
                 "call_session_id": secrets.token_hex(8), "from": params.get("from", ""),
                 "to": params.get("to", ""), "tags": [], "client_state": None, "custom_parameters": params,
                 "media_format": {"encoding": self.codec, "sample_rate": self.sample_rate, "channels": 1}}
        return {"event": "start", "sequence_number": str(seq), "stream_id": self.stream_sid, "start": start}

    def encode(self, pcm: np.ndarray) -> tuple[bytes, np.ndarray]:
        if self.codec == "PCMU":
            payload = ulaw_encode(pcm)
            return payload, ulaw_decode(payload)
        return resample(pcm, RATE, self.sample_rate).astype(">i2").tobytes(), pcm

    def media(self, seq: int, chunk: int, timestamp_ms: int, payload: bytes) -> dict[str, Any]:
        media = {"track": "inbound", "chunk": str(chunk), "timestamp": str(timestamp_ms),
                 "payload": base64.b64encode(payload).decode("ascii")}
        return {"event": "media", "sequence_number": str(seq), "stream_id": self.stream_sid, "media": media}

    def mark(self, seq: int, name: str) -> dict[str, Any]:
        mark = {"name": name}
        return {"event": "mark", "sequence_number": str(seq), "stream_id": self.stream_sid, "mark": mark}

    def stop(self, seq: int) -> dict[str, Any]:
        stop = {"user_id": self.account_sid, "call_control_id": self.call_sid}
        return {"event": "stop", "sequence_number": str(seq), "stream_id": self.stream_sid, "stop": stop}

    def check(self, raw: str | bytes) -> Checked:
        msg = json_object(raw, self.name)
        if isinstance(msg, str):
            return msg
        event = msg.get("event")
        if event == "clear":
            return "clear", None
        if event == "mark":
            mark = msg.get("mark")
            name = mark.get("name") if isinstance(mark, dict) else None
            return ("mark", name) if isinstance(name, str) and name else "mark: no mark.name string"
        if event != "media":
            return f"unknown event {event!r} (Telnyx takes media, mark, clear)"
        media = msg.get("media") if isinstance(msg.get("media"), dict) else {}
        try:
            data = base64.b64decode(media.get("payload") or "", validate=True)
        except (binascii.Error, ValueError):
            return "media: payload is not valid base64"
        width = 1 if self.codec == "PCMU" else 2
        seconds = len(data) / width / self.sample_rate
        if not 0.02 <= seconds <= 30 or len(data) % width:
            return f"media: {len(data)} bytes of {self.codec}: {seconds * 1000:.1f} ms (Telnyx: 20 ms-30 s)"
        if self.codec == "PCMU":
            return "media", ulaw_decode(data)
        return "media", resample(np.frombuffer(data, ">i2").astype(np.int16), self.sample_rate, RATE)
