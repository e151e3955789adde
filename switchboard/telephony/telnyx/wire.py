"""Telnyx media streaming: parse what Telnyx sends, build what we send, and the TeXML that starts a stream.

What Telnyx sends and expects (docs/carriers.md has the sources):

- JSON text frames: `connected`, then `start` (`stream_id`; `start.call_control_id`, `from`, `to`,
  `custom_parameters` from the TeXML `<Parameter>`s, `media_format` {encoding, sample_rate, channels}),
  `media` (`media.track`, `chunk`, `timestamp`, `payload`: base64 RTP payload without RTP headers),
  `dtmf` (`dtmf.digit`), `mark` (the echo of ours once the audio before it has played, or was cleared),
  `error` (`payload.code`, `title`, `detail`), `stop`;
- we send `media` {payload}, `mark` {name} and `clear` (drops what Telnyx has queued; pending marks
  come back); in bidirectional RTP mode a media message may carry 20 ms to 30 s of audio.
- the codec is the stream's: PCMU or PCMA (G.711, 8 kHz) or L16 (16-bit big-endian linear PCM, RFC 2586,
  8 or 16 kHz; 16 kHz is halved and doubled by a 3 ms half-band filter, not soxr's stream, which would
  hold ~64 ms each way). Older accounts name the encoding `audio/x-mulaw` / `audio/x-alaw`: both are accepted.

`Decoder` is one connection's inbound side (the negotiated codec and rate → 8 kHz PCM16); `Encoder` the
outbound side (our 8 kHz frames → that codec and rate). Malformed frames raise `BadFrame`.
"""

from __future__ import annotations

import binascii
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import numpy as np

from switchboard.audio.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from switchboard.audio.resample import HalfbandResampler
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

CODECS = {"PCMU": "PCMU", "PCMA": "PCMA", "L16": "L16", "audio/x-mulaw": "PCMU", "audio/x-alaw": "PCMA"}
RATES = {"PCMU": (8000,), "PCMA": (8000,), "L16": (8000, 16000)}
MAX_PAYLOAD_BYTES = 16000 * 2  # one second of L16 at 16 kHz: anything bigger is not a real inbound frame
STREAM_PATH = "/telnyx/media-stream"
WEBHOOK_PATH = "/telnyx/incoming-call"


@dataclass(frozen=True)
class Codec:
    """A stream's audio: `name` PCMU, PCMA or L16, at `rate` Hz."""

    name: str = "PCMU"
    rate: int = LINE_RATE

    def decode(self, payload: bytes) -> np.ndarray:
        if self.name == "PCMU":
            return ulaw_decode(payload)
        if self.name == "PCMA":
            return alaw_decode(payload)
        if len(payload) % 2:
            raise BadFrame(f"media.payload: {len(payload)} bytes is not whole 16-bit samples")
        return np.frombuffer(payload, dtype=">i2").astype(np.int16)

    def encode(self, pcm: np.ndarray) -> bytes:
        if self.name == "PCMU":
            return ulaw_encode(pcm)
        if self.name == "PCMA":
            return alaw_encode(pcm)
        return pcm.astype(">i2").tobytes()


def _section(msg: dict[str, Any], name: str) -> dict[str, Any]:
    value = msg.get(name)
    if not isinstance(value, dict):
        got = "missing" if value is None else type(value).__name__
        raise BadFrame(f"{name}: expected an object, got {got}")
    return value


def _text(obj: dict[str, Any], name: str, where: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        got = "missing" if value is None else type(value).__name__
        raise BadFrame(f"{where}.{name}: expected str, got {got}")
    return value


def codec_of(start: dict[str, Any]) -> Codec:
    """The stream's codec from `start.media_format` (PCMU at 8 kHz when Telnyx leaves it out)."""
    media_format = start.get("media_format") or {}
    if not isinstance(media_format, dict):
        raise BadFrame("start.media_format: expected an object")
    encoding = media_format.get("encoding") or "PCMU"
    name = CODECS.get(encoding) if isinstance(encoding, str) else None
    if name is None:
        raise BadFrame(f"start.media_format.encoding: expected one of PCMU, PCMA, L16, got {encoding!r}")
    rate = frame_number(media_format.get("sample_rate") or LINE_RATE, "start.media_format.sample_rate")
    if rate not in RATES[name]:
        rates = " or ".join(map(str, RATES[name]))
        raise BadFrame(f"start.media_format.sample_rate: {name} runs at {rates} Hz, got {rate}")
    return Codec(name, rate)


PCMU = Codec()


def parse(raw: str | bytes, codec: Codec = PCMU) -> InboundEvent:
    """One WebSocket message from Telnyx as an event, or BadFrame. `Media.pcm` is at `codec.rate`."""
    msg = json_object(raw, "Telnyx")
    event = _text(msg, "event", "message")
    if event == "connected":
        return Connected()
    if event == "start":
        return _start(msg)
    if event == "media":
        media = _section(msg, "media")
        track = media.get("track", "inbound")
        if track not in ("inbound", "inbound_track"):
            raise BadFrame(f"media.track: {track!r} is not the caller's audio (stream inbound_track only)")
        payload = _text(media, "payload", "media")
        audio = payload_audio(payload, MAX_PAYLOAD_BYTES, "frame")
        timestamp = media.get("timestamp")
        timestamp_ms = frame_number(timestamp, "media.timestamp") if timestamp is not None else None
        return Media(pcm=codec.decode(audio), timestamp_ms=timestamp_ms)
    if event == "mark":
        return Mark(name=_text(_section(msg, "mark"), "name", "mark"))
    if event == "dtmf":
        return Dtmf(digit=keypad_digit(_section(msg, "dtmf").get("digit"), "dtmf.digit"))
    if event == "stop":
        return Stop()
    if event == "error":
        error = msg.get("payload") if isinstance(msg.get("payload"), dict) else {}
        code, title = caller_text(error.get("code", "?"), 16), caller_text(error.get("title", ""), 80)
        raise BadFrame(f"Telnyx reports error {code}: {title} {caller_text(error.get('detail', ''), 200)}")
    raise BadFrame(f"unknown event {event!r}")


def _start(msg: dict[str, Any]) -> Start:
    start = _section(msg, "start")
    stream_id = msg.get("stream_id") or start.get("stream_id")
    if not isinstance(stream_id, str) or not stream_id:
        raise BadFrame("stream_id: expected a non-empty str")
    params = start.get("custom_parameters") or {}
    if not isinstance(params, dict):
        raise BadFrame("start.custom_parameters: expected an object")
    codec = codec_of(start)
    return Start(
        stream_sid=caller_text(stream_id, ID_CHARS),
        call_sid=caller_text(start.get("call_control_id") or "", ID_CHARS),
        account_sid=caller_text(params.get("account_sid") or start.get("user_id") or "", ID_CHARS),
        custom_parameters=caller_parameters(params),
        from_number=caller_text(start.get("from") or "", NUMBER_CHARS),
        to_number=caller_text(start.get("to") or "", NUMBER_CHARS),
        sample_rate=codec.rate,
    )


class Decoder:
    """One connection's inbound side: `parse` in the stream's codec, then the caller's audio at 8 kHz
    (16 kHz L16 through a `HalfbandResampler`: 3 ms of delay, where soxr's stream holds ~64 ms)."""

    def __init__(self) -> None:
        self.codec = Codec()
        self._to_line: HalfbandResampler | None = None

    def parse(self, raw: str | bytes) -> InboundEvent:
        event = parse(raw, self.codec)
        if isinstance(event, Start) and self._to_line is None:
            self.codec = codec_of(json.loads(raw)["start"])
            if self.codec.rate != LINE_RATE:
                self._to_line = HalfbandResampler(up=False)
        elif isinstance(event, Media) and self._to_line is not None:
            if len(event.pcm) % 2:
                raise BadFrame(f"media.payload: {len(event.pcm)} samples at 16 kHz: not whole 8 kHz samples")
            event.pcm = self._to_line.process(event.pcm)
        return event


class Encoder:
    """Our 8 kHz frames in the stream's codec and rate: a 20 ms frame in, a 20 ms message out (16 kHz L16
    through a `HalfbandResampler`, which holds nothing back)."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self._to_wire = HalfbandResampler(up=True) if codec.rate != LINE_RATE else None

    def encode(self, pcm: np.ndarray) -> bytes:
        return self.codec.encode(self._to_wire.process(pcm) if self._to_wire is not None else pcm)

    def clear(self) -> None:
        """A clear starts the bot's audio afresh: no filter state carried over from what was dropped."""
        if self._to_wire is not None:
            self._to_wire.reset()


_MEDIA = json.dumps({"event": "media", "media": {"payload": ""}})
_MEDIA_HEAD, _MEDIA_TAIL = _MEDIA[:-3], _MEDIA[-3:]  # the JSON around the payload, built once (base64 needs
# no escaping), not per 20 ms frame


def media_message(payload: bytes) -> str:
    return _MEDIA_HEAD + binascii.b2a_base64(payload, newline=False).decode("ascii") + _MEDIA_TAIL


def mark_message(name: str) -> str:
    return json.dumps({"event": "mark", "mark": {"name": name}})


def clear_message() -> str:
    return json.dumps({"event": "clear"})


# --- TeXML ------------------------------------------------------------------------------------------------


def stream_url(public_url: str | None, request_host: str, forwarded_proto: str | None,
               token: str | None) -> str:
    """The wss:// URL Telnyx should open. PUBLIC_URL wins; else the host the webhook came in on. TeXML's
    `<Stream>` has no auth-token attribute, so the stream token rides in the query string."""
    if public_url:
        parts = urlsplit(public_url if "://" in public_url else f"https://{public_url}")
        host, secure = parts.netloc, parts.scheme in ("https", "wss")
    else:
        host, secure = request_host, (forwarded_proto or "https") != "http"
    query = f"?{urlencode({'token': token})}" if token else ""
    return f"{'wss' if secure else 'ws'}://{host}{STREAM_PATH}{query}"


def _xml(response: ET.Element) -> str:
    return '<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(response, encoding="unicode")


def connect_texml(url: str, parameters: dict[str, str], codec: Codec = PCMU) -> str:
    """`<Connect><Stream>` to our media WebSocket, bidirectional RTP in `codec`, then `<Hangup/>`."""
    response = ET.Element("Response")
    stream = ET.SubElement(ET.SubElement(response, "Connect"), "Stream", {
        "url": url, "track": "inbound_track", "codec": codec.name, "bidirectionalMode": "rtp",
        "bidirectionalCodec": codec.name, "bidirectionalSamplingRate": str(codec.rate)})
    for name, value in parameters.items():
        if value:
            ET.SubElement(stream, "Parameter", {"name": name, "value": value})
    ET.SubElement(response, "Hangup")
    return _xml(response)


def dial_texml(target: str) -> str:
    """`<Dial>` the number (E.164) or SIP URI the call is transferred to."""
    response = ET.Element("Response")
    dial = ET.SubElement(response, "Dial")
    ET.SubElement(dial, "Sip" if target.lower().startswith("sip:") else "Number").text = target
    return _xml(response)


def busy_texml(message: str) -> str:
    response = ET.Element("Response")
    ET.SubElement(response, "Say").text = message
    ET.SubElement(response, "Hangup")
    return _xml(response)
