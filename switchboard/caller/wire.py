"""The carrier's wire format the caller speaks: Twilio Media Streams and Exotel's Voicebot applet here,
Plivo, Vonage and Telnyx in `switchboard/callers/` (one module each); `make_wire` picks one."""

from __future__ import annotations

import base64
import binascii
import secrets
from typing import Any

import numpy as np

from switchboard import callers
from switchboard.audio.g711 import ulaw_decode, ulaw_encode
from switchboard.audio.resample import resample
from switchboard.caller.timeline import FRAME_SAMPLES, RATE

CARRIERS = ("twilio", "exotel", *callers.WIRES)


Checked = tuple[str, Any] | str  # ("media", pcm 8 kHz) | ("mark", name) | ("clear", None) | why malformed


class TwilioWire:
    """Twilio Media Streams: camelCase JSON, 20 ms μ-law frames."""

    name = "Twilio"
    frame_samples = FRAME_SAMPLES  # what one inbound media message carries, at 8 kHz

    def __init__(self) -> None:
        self.stream_sid = "MZ" + secrets.token_hex(16)
        self.account_sid = "AC" + secrets.token_hex(16)
        self.call_sid = "CA" + secrets.token_hex(16)

    def connected(self) -> dict[str, Any]:
        return {"event": "connected", "protocol": "Call", "version": "1.0.0"}

    def start(self, seq: int, custom_parameters: dict[str, str]) -> dict[str, Any]:
        return {
            "event": "start",
            "sequenceNumber": str(seq),
            "streamSid": self.stream_sid,
            "start": {
                "streamSid": self.stream_sid,
                "accountSid": self.account_sid,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "customParameters": dict(custom_parameters),
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": RATE, "channels": 1},
            },
        }

    def encode(self, pcm: np.ndarray) -> tuple[bytes, np.ndarray]:
        """One frame's payload, and the audio the server decodes from it (8 kHz)."""
        payload = ulaw_encode(pcm)
        return payload, ulaw_decode(payload)

    def media(self, seq: int, chunk: int, timestamp_ms: int, payload: bytes) -> dict[str, Any]:
        return {
            "event": "media",
            "sequenceNumber": str(seq),
            "streamSid": self.stream_sid,
            "media": {
                "track": "inbound",
                "chunk": str(chunk),
                "timestamp": str(timestamp_ms),
                "payload": base64.b64encode(payload).decode("ascii"),
            },
        }

    def mark(self, seq: int, name: str) -> dict[str, Any]:
        mark = {"name": name}
        return {"event": "mark", "sequenceNumber": str(seq), "streamSid": self.stream_sid, "mark": mark}

    def stop(self, seq: int) -> dict[str, Any]:
        return {
            "event": "stop",
            "sequenceNumber": str(seq),
            "streamSid": self.stream_sid,
            "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
        }

    def check(self, raw: str | bytes) -> Checked:
        """Validate a server message, or say why it is malformed."""
        msg = callers.json_object(raw, self.name)
        if isinstance(msg, str):
            return msg
        event = msg.get("event")
        if event not in ("media", "mark", "clear"):
            return f"unknown event {event!r}"
        if msg.get("streamSid") != self.stream_sid:
            return f"{event}: wrong or missing streamSid {msg.get('streamSid')!r}"
        return self._check_event(msg)

    def _check_event(self, msg: dict[str, Any]) -> Checked:
        event = msg["event"]
        if event == "clear":
            return "clear", None
        if event == "mark":
            mark = msg.get("mark")
            name = mark.get("name") if isinstance(mark, dict) else None
            return ("mark", name) if isinstance(name, str) else "mark: no mark.name string"
        media = msg.get("media")
        payload = media.get("payload") if isinstance(media, dict) else None
        if not isinstance(payload, str):
            return "media: no media.payload string"
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            return "media: payload is not valid base64"
        return self._decode(data) if data else "media: empty payload"

    def _decode(self, data: bytes) -> Checked:
        return "media", ulaw_decode(data)


class ExotelWire(TwilioWire):
    """Exotel's Voicebot applet: snake_case JSON, PCM16 little-endian at ``sample_rate``, ``chunk_ms``
    inbound chunks; outbound media must be ≥ 3,200 bytes, ≤ 100 KB, a multiple of 320 bytes."""

    name = "Exotel"
    MIN_BYTES, MULTIPLE, MAX_BYTES = 3200, 320, 100 * 1024

    def __init__(self, sample_rate: int = RATE, chunk_ms: int = 100) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.frame_samples = RATE * chunk_ms // 1000

    def connected(self) -> dict[str, Any]:
        return {"event": "connected"}

    def start(self, seq: int, custom_parameters: dict[str, str]) -> dict[str, Any]:
        params = dict(custom_parameters)
        return {
            "event": "start",
            "sequence_number": seq,
            "stream_sid": self.stream_sid,
            "start": {
                "stream_sid": self.stream_sid,
                "call_sid": self.call_sid,
                "account_sid": self.account_sid,
                "from": params.pop("from", ""),
                "to": params.pop("to", ""),
                "custom_parameters": params,
                "media_format": {
                    "encoding": "audio/x-raw",
                    "sample_rate": str(self.sample_rate),
                    "bit_rate": f"{self.sample_rate * 16 // 1000}kbps",
                },
            },
        }

    def encode(self, pcm: np.ndarray) -> tuple[bytes, np.ndarray]:
        # chunk by chunk, so every chunk carries its own audio (a soxr stream releases ~100 ms blocks)
        wire = resample(pcm, RATE, self.sample_rate) if self.sample_rate != RATE else pcm
        return wire.astype("<i2").tobytes(), pcm  # lossless at 8 kHz: the server hears what was said

    def media(self, seq: int, chunk: int, timestamp_ms: int, payload: bytes) -> dict[str, Any]:
        encoded = base64.b64encode(payload).decode("ascii")
        media = {"chunk": chunk, "timestamp": str(timestamp_ms), "payload": encoded}
        return {"event": "media", "sequence_number": seq, "stream_sid": self.stream_sid, "media": media}

    def mark(self, seq: int, name: str) -> dict[str, Any]:
        mark = {"name": name}
        return {"event": "mark", "sequence_number": seq, "stream_sid": self.stream_sid, "mark": mark}

    def stop(self, seq: int) -> dict[str, Any]:
        stop = {"call_sid": self.call_sid, "account_sid": self.account_sid, "reason": "callended"}
        return {"event": "stop", "sequence_number": seq, "stream_sid": self.stream_sid, "stop": stop}

    def check(self, raw: str | bytes) -> Checked:
        msg = callers.json_object(raw, self.name)
        if isinstance(msg, str):
            return msg
        event = msg.get("event")
        if event not in ("media", "mark", "clear"):
            return f"unknown event {event!r}"
        if msg.get("stream_sid") != self.stream_sid:
            return f"{event}: wrong or missing stream_sid {msg.get('stream_sid')!r}"
        return self._check_event(msg)

    def _decode(self, data: bytes) -> Checked:
        size = len(data)
        if size < self.MIN_BYTES or size % self.MULTIPLE or size > self.MAX_BYTES:
            return (f"media: {size} bytes breaks Exotel's chunk rules "
                    f"(≥ {self.MIN_BYTES}, a multiple of {self.MULTIPLE}, ≤ {self.MAX_BYTES})")
        pcm = np.frombuffer(data, dtype="<i2").astype(np.int16)
        return "media", resample(pcm, self.sample_rate, RATE) if self.sample_rate != RATE else pcm


def make_wire(carrier: str = "twilio", sample_rate: int = RATE) -> TwilioWire:
    """The wire format of ``carrier`` (one of CARRIERS; ``sample_rate`` is Exotel's or Vonage's)."""
    if carrier in callers.WIRES:  # one module each (switchboard/callers/)
        return callers.make(carrier, sample_rate)
    if carrier == "exotel":
        return ExotelWire(sample_rate)
    if carrier == "twilio":
        if sample_rate != RATE:
            raise ValueError("Twilio media is 8 kHz only")
        return TwilioWire()
    raise ValueError(f"unknown carrier {carrier!r}; choose one of {', '.join(CARRIERS)}")
