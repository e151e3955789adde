"""Vonage Voice API WebSockets: parse what Vonage sends, build what we send, and the NCCOs.

Sources (read 2026-12): developer.vonage.com/en/voice/voice-api/concepts/websockets and
.../guides/websockets, the NCCO reference (the `connect` action's `websocket` endpoint), and the
`vonage` SDK's NCCO models (vonage_voice.models), which build every NCCO here. What matters:

- Vonage -> us: the first message is a JSON text frame `{"event": "websocket:connected",
  "content-type": "audio/l16;rate=8000", …}` carrying the `headers` we put in the endpoint; then
  binary frames of 16-bit signed little-endian linear PCM, mono, 20 ms each (320 bytes at 8 kHz, 640 at
  16 kHz); JSON text events: `websocket:dtmf` (`digit`, `duration`), `websocket:notify` (the
  `payload` of a `notify` we sent, once the audio before it has played), `websocket:cleared`.
- us -> Vonage: binary frames of the same format, 20 ms each, which Vonage buffers and plays in order;
  `{"action": "notify", "payload": {…}}` and `{"action": "clear"}` (drops the buffered audio).
- The rate is the `content-type` we ask for: 8 kHz (our choice, see `SAMPLE_RATES`) or 16 kHz.

Inbound frames become the carrier-neutral events of core/carrier.py; anything malformed raises
`BadFrame`, which the server logs and drops. `Decoder` is one connection's inbound side (the rate
comes with `websocket:connected`); `Framer` is the outbound side (8 kHz frames in, 20 ms frames at the
call's rate out).
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import numpy as np
from vonage_voice.models.common import WebsocketAuthorization
from vonage_voice.models.connect_endpoints import PhoneEndpoint, SipEndpoint, WebsocketEndpoint
from vonage_voice.models.ncco import Connect, Talk

from switchboard.audio.resample import HalfbandResampler, StreamResampler, line_resampler
from switchboard.core.carrier import (
    ID_CHARS,
    LINE_RATE,
    MAX_FRAME_CHARS,
    BadFrame,
    Connected,
    Dtmf,
    InboundEvent,
    Mark,
    Media,
    Start,
    caller_parameters,
    caller_text,
    frame_number,
    json_object,
    keypad_digit,
)

# 8 kHz is the default: the pipeline runs at 8 kHz, so a 16 kHz line only adds a resampler each way
# (and its delay); 16 kHz is there for a team whose recogniser is fed the wire's audio some day
SAMPLE_RATES = (8000, 16000)
CONTENT_TYPE = "audio/l16;rate={rate}"
FRAME_MS = 20
RESAMPLE_QUALITY = "MQ"  # for a rate the half-band filter does not serve (line_resampler): flat to 3.4 kHz
MAX_AUDIO_BYTES = 16000 * 2  # one second at 16 kHz: anything bigger is not a real Vonage frame


def frame_bytes(rate: int) -> int:
    return rate * FRAME_MS // 1000 * 2


def content_rate(content_type: object) -> int:
    """The rate in `audio/l16;rate=N`, or BadFrame."""
    text = str(content_type or "").replace(" ", "").lower()
    kind, _, rate = text.partition(";rate=")
    if kind != "audio/l16" or not rate.isdigit() or int(rate) not in SAMPLE_RATES:
        raise BadFrame(f"content-type: expected audio/l16;rate=8000 or 16000, got {str(content_type)[:60]!r}")
    return int(rate)


def parse_text(raw: str) -> InboundEvent:
    """One JSON text frame from Vonage as an event (`websocket:connected` becomes `Start`)."""
    msg = json_object(raw, "Vonage")
    event = msg.get("event")
    if event == "websocket:connected":
        return _start(msg)
    if event == "websocket:dtmf":
        dtmf = msg.get("dtmf") if isinstance(msg.get("dtmf"), dict) else msg
        duration = dtmf.get("duration")
        duration_ms = frame_number(duration, "websocket:dtmf duration") if duration is not None else None
        return Dtmf(digit=keypad_digit(dtmf.get("digit"), "websocket:dtmf digit"), duration_ms=duration_ms)
    if event == "websocket:notify":
        payload = msg.get("payload")
        name = payload.get("name") if isinstance(payload, dict) else None
        if not isinstance(name, str):
            raise BadFrame("websocket:notify: no payload.name string (not a notify we sent)")
        return Mark(name=name)
    if event == "websocket:cleared":  # Vonage confirms a clear: nothing for the call to do
        return Connected()
    raise BadFrame(f"unknown event {str(event)[:40]!r}")


def _start(msg: dict[str, Any]) -> Start:
    rate = content_rate(msg.get("content-type"))
    headers = {key: value for key, value in msg.items() if key not in ("event", "content-type")
               and isinstance(value, (str, int, float))}
    params = caller_parameters(headers)
    call = params.pop("call", "")
    return Start(
        stream_sid=caller_text(call or "VS" + secrets.token_hex(8), ID_CHARS),
        call_sid=caller_text(call, ID_CHARS),
        account_sid="",
        custom_parameters=params,
        from_number=params.get("from", ""),
        to_number=params.get("to", ""),
        sample_rate=rate,
    )


def audio(raw: bytes, rate: int) -> np.ndarray:
    """One binary frame as int16 samples at the wire's rate, or BadFrame."""
    if not raw:
        raise BadFrame("empty binary frame")
    if len(raw) > MAX_AUDIO_BYTES:
        raise BadFrame(f"binary frame of {len(raw)} bytes is too large for 20 ms of audio")
    if len(raw) % 2:
        raise BadFrame(f"binary frame of {len(raw)} bytes is not whole 16-bit samples")
    return np.frombuffer(raw, dtype="<i2").astype(np.int16)


class Decoder:
    """One connection's inbound side: text events, and binary audio brought to 8 kHz (16 kHz through the
    half-band filter, 3 ms and nothing held back; its state carried across frames, so their edges leave
    no artefacts)."""

    def __init__(self) -> None:
        self.sample_rate: int | None = None
        self._to_line: HalfbandResampler | StreamResampler | None = None

    def parse(self, raw: str | bytes) -> InboundEvent:
        if isinstance(raw, (bytes, bytearray)):
            if self.sample_rate is None:
                raise BadFrame("audio before websocket:connected")
            pcm = audio(bytes(raw), self.sample_rate)
            if self._to_line is not None:
                if len(pcm) % 2:
                    raise BadFrame(f"binary frame of {len(pcm)} samples at 16 kHz: not whole 8 kHz samples")
                pcm = self._to_line.process(pcm)
            return Media(pcm=pcm, timestamp_ms=None)
        if len(raw) > MAX_FRAME_CHARS:
            raise BadFrame(f"{len(raw)} characters is too large for a frame")
        event = parse_text(raw)
        if isinstance(event, Start) and self.sample_rate is None:
            self.sample_rate = event.sample_rate
            if event.sample_rate != LINE_RATE:
                self._to_line = line_resampler(event.sample_rate, LINE_RATE, RESAMPLE_QUALITY)
        return event


class Framer:
    """Our 8 kHz frames -> binary 20 ms frames at the call's rate, as Vonage wants them.

    At 8 kHz every player frame is one wire frame; at 16 kHz the half-band filter doubles each 20 ms
    frame into one 640-byte frame at once (nothing held: `holds_ms` 0); what does not fill a frame (a
    chunk that is not whole frames) waits for the next; `flush` (before a notify) pads it with silence;
    `clear` drops it and the filter's state."""

    def __init__(self, sample_rate: int = LINE_RATE) -> None:
        self.sample_rate = sample_rate
        self.size = frame_bytes(sample_rate)
        self._to_wire = (line_resampler(LINE_RATE, sample_rate, RESAMPLE_QUALITY)
                         if sample_rate != LINE_RATE else None)
        self._held = bytearray()

    @property
    def holds_ms(self) -> int:
        return FRAME_MS if isinstance(self._to_wire, StreamResampler) else 0

    def push(self, pcm: np.ndarray) -> list[bytes]:
        if self._to_wire is None and not self._held and len(pcm) * 2 == self.size:  # 8 kHz: the frame is it
            return [pcm.astype("<i2", copy=False).tobytes()]
        wire = pcm if self._to_wire is None else self._to_wire.process(pcm)
        self._held += wire.astype("<i2").tobytes()
        return self._take(len(self._held) - len(self._held) % self.size)

    def flush(self) -> list[bytes]:
        if self._to_wire is not None:
            self._held += self._to_wire.flush().astype("<i2").tobytes()
        self._held += bytes(-len(self._held) % self.size)
        return self._take(len(self._held))

    def clear(self) -> None:
        if self._to_wire is not None:
            self._to_wire.reset()
        self._held.clear()

    def _take(self, size: int) -> list[bytes]:
        frames = [bytes(self._held[offset:offset + self.size]) for offset in range(0, size, self.size)]
        del self._held[:size]
        return frames


def notify_message(name: str) -> str:
    return json.dumps({"action": "notify", "payload": {"name": name}})


def clear_message() -> str:
    return json.dumps({"action": "clear"})


# --- NCCOs (the SDK's models) ----------------------------------------------------------------------


def _dump(*actions: Any) -> list[dict[str, Any]]:
    return [action.model_dump(mode="json", by_alias=True, exclude_none=True) for action in actions]


def _from(number: str) -> dict[str, Any]:
    """The `connect` action's caller id: our number (Vonage's digits-only form), or any of the app's."""
    digits = number.lstrip("+")
    return {"from_": digits} if digits.isdigit() and 7 <= len(digits) <= 15 else {"randomFromNumber": True}


def connect_ncco(url: str, rate: int, headers: dict[str, str], our_number: str,
                 authorization: str | None = None) -> list[dict[str, Any]]:
    """`connect` the call to our WebSocket at `rate`; `headers` come back in `websocket:connected`;
    `authorization` ("Bearer …") is sent as the upgrade's Authorization header."""
    endpoint = WebsocketEndpoint(
        uri=url, contentType=CONTENT_TYPE.format(rate=rate), headers=headers,
        authorization=WebsocketAuthorization(type="custom", value=authorization) if authorization else None)
    return _dump(Connect(endpoint=[endpoint], **_from(our_number)))


def transfer_ncco(target: str, our_number: str) -> list[Any]:
    """`connect` the call to the number (E.164) or SIP URI it is transferred to (SDK models, for
    `transfer_call_ncco`)."""
    endpoint = (SipEndpoint(uri=target) if target.lower().startswith("sip")
                else PhoneEndpoint(number=target.lstrip("+")))
    return [Connect(endpoint=[endpoint], **_from(our_number))]


def busy_ncco(message: str) -> list[dict[str, Any]]:
    """`talk` the busy message; the call ends with the NCCO."""
    return _dump(Talk(text=message[:1500]))
