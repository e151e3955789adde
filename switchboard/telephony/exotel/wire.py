"""Exotel's Voicebot applet: parse what Exotel sends, build what we send, and the chunking its media needs.

The messages mirror Twilio Media Streams (telephony/twilio/wire.py) with three differences that matter:

- field names are snake_case (`stream_sid`, `custom_parameters`, `media_format.sample_rate`); some
  Exotel samples use camelCase, so both spellings are accepted; we send `stream_sid`;
- audio is base64 16-bit little-endian PCM ("slin") at the rate negotiated in `start.media_format`
  (8 kHz by default, 16 or 24 kHz possible), not μ-law; inbound chunks are 20–100 ms, of any size;
- outbound `media` must carry at least 3,200 bytes, at most 100 KB, a multiple of 320 bytes.

Inbound events are the carrier-neutral ones of core/carrier.py, so the server handles both carriers
with one loop. `Decoder` is one connection's inbound side: it remembers the
negotiated rate and brings the caller's audio to the pipeline's 8 kHz. `Chunker` is the outbound side:
8 kHz frames in, payloads that follow Exotel's size rules out. Malformed frames raise `BadFrame`.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np

from switchboard.audio.resample import HalfbandResampler, StreamResampler, line_resampler
from switchboard.core.carrier import (
    ID_CHARS,
    LINE_RATE,
    NUMBER_CHARS,
    BadFrame,
    Connected,
    Dtmf,
    InboundEvent,
    Mark,
    Media,
    Start,
    Stop,
    caller_parameters,
    caller_text,
    frame_number,
    json_object,
    keypad_digit,
    payload_audio,
)

__all__ = [
    "CHUNK_MULTIPLE",
    "LINE_RATE",
    "MAX_CHUNK_BYTES",
    "MIN_CHUNK_BYTES",
    "BadFrame",
    "Chunker",
    "Connected",
    "Decoder",
    "Dtmf",
    "InboundEvent",
    "Mark",
    "Media",
    "Start",
    "Stop",
    "check_chunk",
    "clear_message",
    "mark_message",
    "media_message",
    "parse",
]

SAMPLE_RATES = (8000, 16000, 24000)
ENCODING = "audio/x-raw"
MIN_CHUNK_BYTES = 3200
CHUNK_MULTIPLE = 320
MAX_CHUNK_BYTES = 100 * 1024
MAX_INBOUND_BYTES = 100 * 1024  # anything bigger is not a real Exotel chunk (≈ 2 s at 24 kHz)
# 16 kHz goes through the half-band filter (audio.resample.line_resampler: 3 ms, nothing held back); for
# 24 kHz soxr's stream at MQ (still anti-aliased, flat to 3.4 kHz; HQ would hold back more)
RESAMPLE_QUALITY = "MQ"


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _get(obj: dict[str, Any], name: str) -> Any:
    """`obj[name]` under its snake_case or camelCase spelling (snake_case wins)."""
    value = obj.get(name)
    return obj.get(_camel(name)) if value is None else value


def _section(msg: dict[str, Any], name: str) -> dict[str, Any]:
    value = msg.get(name)
    if not isinstance(value, dict):
        got = "missing" if value is None else type(value).__name__
        raise BadFrame(f"{name}: expected an object, got {got}")
    return value


def _string(obj: dict[str, Any], name: str, where: str) -> str:
    value = _get(obj, name)
    if not isinstance(value, str):
        got = "missing" if value is None else type(value).__name__
        raise BadFrame(f"{where}.{name}: expected str, got {got}")
    return value


def _number(value: Any, where: str) -> int | None:
    """Exotel sends numbers as numbers or as strings."""
    return None if value is None else frame_number(value, where)


def parse(raw: str | bytes) -> InboundEvent:
    """Turn one WebSocket message from Exotel into an event, or raise BadFrame.

    `Media.pcm` is at the wire's rate here; `Decoder.parse` brings it to 8 kHz."""
    msg = json_object(raw, "Exotel")
    event = _string(msg, "event", "message")
    if event == "connected":
        return Connected()
    if event == "start":
        return _start(msg)
    if event == "media":
        media = _section(msg, "media")
        payload = _string(media, "payload", "media")
        audio = payload_audio(payload, MAX_INBOUND_BYTES, "chunk")
        if len(audio) % 2:
            raise BadFrame(f"media.payload: {len(audio)} bytes is not whole 16-bit samples")
        timestamp = _number(_get(media, "timestamp"), "media.timestamp")
        return Media(pcm=np.frombuffer(audio, dtype="<i2").astype(np.int16), timestamp_ms=timestamp)
    if event == "mark":
        return Mark(name=_string(_section(msg, "mark"), "name", "mark"))
    if event == "dtmf":
        dtmf = _section(msg, "dtmf")
        digit = keypad_digit(_get(dtmf, "digit"), "dtmf.digit")
        return Dtmf(digit=digit, duration_ms=_number(_get(dtmf, "duration"), "dtmf.duration"))
    if event == "stop":
        stop = msg.get("stop")
        reason = _get(stop, "reason") if isinstance(stop, dict) else None
        return Stop(reason=str(reason or ""))
    raise BadFrame(f"unknown event {event!r}")


def _start(msg: dict[str, Any]) -> Start:
    start = _section(msg, "start")
    stream_sid = _get(start, "stream_sid") or _get(msg, "stream_sid")
    if not isinstance(stream_sid, str) or not stream_sid:
        raise BadFrame("start.stream_sid: expected a non-empty str")
    params = _get(start, "custom_parameters") or {}
    if not isinstance(params, dict):
        raise BadFrame("start.custom_parameters: expected an object")
    media_format = _get(start, "media_format") or {}
    if not isinstance(media_format, dict):
        raise BadFrame("start.media_format: expected an object")
    encoding = _get(media_format, "encoding") or ENCODING
    if encoding != ENCODING:
        raise BadFrame(f"start.media_format.encoding: expected {ENCODING}, got {encoding!r}")
    rate = _number(_get(media_format, "sample_rate"), "start.media_format.sample_rate") or LINE_RATE
    if rate not in SAMPLE_RATES:
        raise BadFrame(f"start.media_format.sample_rate: expected one of {SAMPLE_RATES}, got {rate}")
    return Start(
        stream_sid=caller_text(stream_sid, ID_CHARS),
        call_sid=caller_text(_get(start, "call_sid") or "", ID_CHARS),
        account_sid=caller_text(_get(start, "account_sid") or "", ID_CHARS),
        custom_parameters=caller_parameters(params),
        from_number=caller_text(start.get("from") or "", NUMBER_CHARS),
        to_number=caller_text(start.get("to") or "", NUMBER_CHARS),
        sample_rate=rate,
    )


class Decoder:
    """One connection's inbound side: `parse`, then the caller's audio resampled to 8 kHz (16 kHz through
    the half-band filter, 3 ms and nothing held back; 24 kHz through soxr's stream; either way one state
    for the call, so chunk edges leave no artefacts)."""

    def __init__(self) -> None:
        self.sample_rate = LINE_RATE
        self._to_line: HalfbandResampler | StreamResampler | None = None

    def parse(self, raw: str | bytes) -> InboundEvent:
        event = parse(raw)
        if isinstance(event, Start) and self._to_line is None:
            self.sample_rate = event.sample_rate
            self._to_line = line_resampler(event.sample_rate, LINE_RATE, RESAMPLE_QUALITY)
        elif isinstance(event, Media) and self._to_line is not None:
            if isinstance(self._to_line, HalfbandResampler) and len(event.pcm) % 2:
                raise BadFrame(f"media.payload: {len(event.pcm)} samples at 16 kHz: not whole 8 kHz samples")
            event.pcm = self._to_line.process(event.pcm)
        return event


def check_chunk(payload: bytes) -> str | None:
    """Why Exotel would refuse this outbound media payload, or None if it follows the rules."""
    size = len(payload)
    if size < MIN_CHUNK_BYTES or size % CHUNK_MULTIPLE or size > MAX_CHUNK_BYTES:
        return (f"{size} bytes of media (Exotel needs at least {MIN_CHUNK_BYTES}, at most {MAX_CHUNK_BYTES}, "
                f"a multiple of {CHUNK_MULTIPLE})")
    return None


class Chunker:
    """Our 8 kHz frames -> PCM16 payloads at the call's rate that follow Exotel's size rules.

    `push` holds audio until it has at least MIN_CHUNK_BYTES and returns whole multiples of
    CHUNK_MULTIPLE; `flush` (before a mark) returns the rest padded with silence to a valid chunk;
    `clear` drops what is held. So Exotel receives our audio up to `HOLD_MS` later than we send it.
    """

    HOLD_MS = 200  # at most this much audio waits here for a chunk to fill (at 8 kHz; less at 16/24)

    def __init__(self, sample_rate: int = LINE_RATE) -> None:
        self.sample_rate = sample_rate
        self._to_wire = line_resampler(LINE_RATE, sample_rate, RESAMPLE_QUALITY)
        self._held = bytearray()

    def push(self, pcm: np.ndarray) -> list[bytes]:
        self._held += self._to_wire.process(pcm).astype("<i2").tobytes()
        if len(self._held) < MIN_CHUNK_BYTES:
            return []
        return self._take(len(self._held) - len(self._held) % CHUNK_MULTIPLE)

    def flush(self) -> list[bytes]:
        self._held += self._to_wire.flush().astype("<i2").tobytes()
        if not self._held:
            return []
        size = max(MIN_CHUNK_BYTES, -(-len(self._held) // CHUNK_MULTIPLE) * CHUNK_MULTIPLE)
        self._held += bytes(size - len(self._held))
        return self._take(size)

    def clear(self) -> None:
        self._to_wire.reset()
        self._held.clear()

    def _take(self, size: int) -> list[bytes]:
        """The first `size` held bytes (a valid total) as valid chunks of at most MAX_CHUNK_BYTES."""
        chunks = []
        while size:
            step = min(size, MAX_CHUNK_BYTES - MAX_CHUNK_BYTES % CHUNK_MULTIPLE)
            if 0 < size - step < MIN_CHUNK_BYTES:
                step = size - MIN_CHUNK_BYTES  # keep the last piece valid too
            chunks.append(bytes(self._held[:step]))
            del self._held[:step]
            size -= step
        return chunks


def media_message(stream_sid: str, payload: bytes) -> str:
    encoded = base64.b64encode(payload).decode("ascii")
    return json.dumps({"event": "media", "stream_sid": stream_sid, "media": {"payload": encoded}})


def mark_message(stream_sid: str, name: str) -> str:
    return json.dumps({"event": "mark", "stream_sid": stream_sid, "mark": {"name": name}})


def clear_message(stream_sid: str) -> str:
    return json.dumps({"event": "clear", "stream_sid": stream_sid})
