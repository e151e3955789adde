"""Plivo's side for `switchboard call --carrier plivo` (docs/carriers.md, "Plivo", has the sources).

Given the server's http(s) address, it POSTs `/plivo/answer` as Plivo does (signed V3 with
PLIVO_AUTH_TOKEN when that is set), reads the `<Stream>` and opens the socket it names; given a ws(s)
URL, it opens it with the call's parameters in the query (an open route). Then: `start`, 20 ms μ-law
`media`, `playedStream` for each checkpoint whose audio has played (none for a cleared one), no `stop`
(Plivo closes the socket). Outbound messages that break Plivo's rules are reported as malformed.
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
from switchboard.callers import Checked, digits, json_object

RATE = 8000
CONTENT_TYPE = "audio/x-mulaw;rate=8000"


def sign_v3(token: str, url: str, params: dict[str, str], nonce: str) -> str:
    """Plivo's V3 signature of a POST (the SDK's own construction)."""
    from plivo.utils.signature_v3 import construct_post_url, get_signature_v3

    base = construct_post_url(url, dict(params)).decode()
    return get_signature_v3(token.encode(), base, nonce.encode()).decode()


class Wire:
    name = "Plivo"
    frame_samples = 160
    echoes_cleared_marks = False

    def __init__(self, sample_rate: int = RATE) -> None:
        if sample_rate != RATE:
            raise ValueError("this caller speaks Plivo's μ-law at 8 kHz only")
        self.call_sid = secrets.token_hex(8) + "-sim-call"
        self.stream_sid = secrets.token_hex(8) + "-sim-stream"
        self.account_sid = "MASIMULATEDCALLER000"

    async def open(self, url: str, parameters: dict[str, str]) -> tuple[str, dict[str, str]]:
        if url.startswith(("ws://", "wss://")):
            wanted = ("pipeline", "from", "to")
            query = {"call": self.call_sid, **{k: v for k, v in parameters.items() if k in wanted}}
            joiner = "&" if urlsplit(url).query else "?"
            return url + joiner + urlencode(query), {}
        answer = url.rstrip("/") + ("" if url.rstrip("/").endswith("/plivo/answer") else "/plivo/answer")
        form = {"CallUUID": self.call_sid, "From": digits(parameters.get("from", "")),
                "To": digits(parameters.get("to", "")), "Direction": "inbound", "CallStatus": "in-progress"}
        headers = {}
        token = os.environ.get("PLIVO_AUTH_TOKEN")
        if token:
            nonce = str(secrets.randbelow(10**20))
            headers = {"X-Plivo-Signature-V3": sign_v3(token, answer, form, nonce),
                       "X-Plivo-Signature-V3-Nonce": nonce}
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(answer, data=form, headers=headers)
        if response.status_code != 200:
            raise OSError(f"{answer} answered {response.status_code}: {response.text[:200]}")
        stream = ET.fromstring(response.text).find("Stream")
        if stream is None or stream.get("bidirectional") != "true" or not (stream.text or "").strip():
            raise OSError(f"{answer} answered no bidirectional <Stream>: {response.text[:200]}")
        if stream.get("contentType") != CONTENT_TYPE:
            raise OSError(f"the <Stream> asks for {stream.get('contentType')!r}; this caller speaks "
                          f"{CONTENT_TYPE}")
        return stream.text.strip(), {}

    def connected(self) -> None:
        return None

    def start(self, seq: int, parameters: dict[str, str]) -> dict[str, Any]:
        start = {"callId": self.call_sid, "streamId": self.stream_sid, "accountId": self.account_sid,
                 "tracks": ["inbound"], "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": RATE}}
        return {"event": "start", "sequenceNumber": seq, "start": start, "extra_headers": ""}

    def encode(self, pcm: np.ndarray) -> tuple[bytes, np.ndarray]:
        payload = ulaw_encode(pcm)
        return payload, ulaw_decode(payload)

    def media(self, seq: int, chunk: int, timestamp_ms: int, payload: bytes) -> dict[str, Any]:
        media = {"track": "inbound", "timestamp": str(timestamp_ms), "chunk": chunk,
                 "payload": base64.b64encode(payload).decode("ascii")}
        return {"event": "media", "sequenceNumber": seq, "streamId": self.stream_sid, "media": media}

    def mark(self, seq: int, name: str) -> dict[str, Any]:
        return {"event": "playedStream", "sequenceNumber": seq, "streamId": self.stream_sid, "name": name}

    def stop(self, seq: int) -> None:
        return None  # Plivo closes the socket

    def check(self, raw: str | bytes) -> Checked:
        msg = json_object(raw, self.name)
        if isinstance(msg, str):
            return msg
        event = msg.get("event")
        if event not in ("playAudio", "checkpoint", "clearAudio"):
            return f"unknown event {event!r} (Plivo takes playAudio, checkpoint, clearAudio)"
        if msg.get("streamId") != self.stream_sid:
            return f"{event}: wrong or missing streamId {msg.get('streamId')!r}"
        if event == "clearAudio":
            return "clear", None
        if event == "checkpoint":
            name = msg.get("name")
            return ("mark", name) if isinstance(name, str) and name else "checkpoint: no name"
        media = msg.get("media") if isinstance(msg.get("media"), dict) else {}
        if (media.get("contentType"), media.get("sampleRate")) != ("audio/x-mulaw", RATE):
            return (f"playAudio: {media.get('contentType')!r} at {media.get('sampleRate')!r} is not the "
                    "stream's audio/x-mulaw at 8000 (Plivo: codecs may not switch mid-stream)")
        try:
            data = base64.b64decode(media.get("payload") or "", validate=True)
        except (binascii.Error, ValueError):
            return "playAudio: payload is not valid base64"
        return ("media", ulaw_decode(data)) if data else "playAudio: empty payload"

