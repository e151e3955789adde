"""Twilio Media Streams: parse what Twilio sends, build what we send, and the TwiML that starts a stream.

Nothing outside telephony/twilio/ knows this wire format. Inbound frames become typed events; anything
malformed raises `BadFrame` with a reason, which the caller of `parse` logs and drops.
"""

from __future__ import annotations

import binascii
import json
from urllib.parse import urlencode, urlsplit

import numpy as np
from twilio.twiml.voice_response import Connect, Dial, VoiceResponse

from switchboard.audio.g711 import ulaw_decode, ulaw_encode
from switchboard.core.carrier import (
    ID_CHARS,
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
    "BadFrame", "Connected", "Dtmf", "InboundEvent", "Mark", "Media", "Start", "Stop",
    "clear_message", "connect_twiml", "mark_message", "media_message", "parse", "stream_url",
]

SAMPLE_RATE = 8000
MAX_PAYLOAD_BYTES = 8000 * 2  # one second of μ-law; anything bigger is not a real Twilio frame


def _field(obj: dict, key: str, kind: type, where: str) -> object:
    value = obj.get(key)
    if not isinstance(value, kind):
        got = "missing" if value is None else f"{type(value).__name__}"
        raise BadFrame(f"{where}.{key}: expected {kind.__name__}, got {got}")
    return value


def parse(raw: str | bytes) -> InboundEvent:
    """Turn one WebSocket message from Twilio into an event, or raise BadFrame."""
    msg = json_object(raw, "Twilio")
    if msg.get("event") == "media":  # 50 a second per call: its fields checked inline, first
        media = msg.get("media")
        payload = media.get("payload") if type(media) is dict else None
        if type(payload) is not str:  # not as expected: the checks that say why
            media = _field(msg, "media", dict, "media")
            payload = _field(media, "payload", str, "media")
        audio = payload_audio(payload, MAX_PAYLOAD_BYTES, "frame")
        timestamp = media.get("timestamp")
        timestamp_ms = frame_number(timestamp, "media.timestamp") if timestamp is not None else None
        return Media(pcm=ulaw_decode(audio), timestamp_ms=timestamp_ms)
    event = _field(msg, "event", str, "message")
    if event == "connected":
        return Connected()
    if event == "start":
        start = _field(msg, "start", dict, "start")
        params = start.get("customParameters") or {}
        if not isinstance(params, dict):
            raise BadFrame("start.customParameters: expected an object")
        media_format = start.get("mediaFormat") or {}
        encoding = media_format.get("encoding", "audio/x-mulaw") if isinstance(media_format, dict) else None
        if encoding != "audio/x-mulaw":
            raise BadFrame(f"start.mediaFormat.encoding: expected audio/x-mulaw, got {encoding!r}")
        return Start(
            stream_sid=caller_text(_field(start, "streamSid", str, "start"), ID_CHARS),
            call_sid=caller_text(start.get("callSid", ""), ID_CHARS),
            account_sid=caller_text(start.get("accountSid", ""), ID_CHARS),
            custom_parameters=caller_parameters(params),
        )
    if event == "mark":
        mark = _field(msg, "mark", dict, "mark")
        return Mark(name=str(_field(mark, "name", str, "mark")))
    if event == "dtmf":
        dtmf = _field(msg, "dtmf", dict, "dtmf")
        return Dtmf(digit=keypad_digit(_field(dtmf, "digit", str, "dtmf"), "dtmf.digit"))
    if event == "stop":
        return Stop()
    raise BadFrame(f"unknown event {event!r}")


def media_message(stream_sid: str, pcm: np.ndarray) -> str:
    return MediaMessages(stream_sid)(pcm)


class MediaMessages:
    """One stream's media messages, as `json.dumps` writes them: the JSON around the payload is built
    once per stream (base64 needs no escaping), not per 20 ms frame."""

    def __init__(self, stream_sid: str) -> None:
        text = json.dumps({"event": "media", "streamSid": stream_sid, "media": {"payload": ""}})
        self._head, self._tail = text[:-3], text[-3:]  # ...{"payload": "  and  "}}

    def __call__(self, pcm: np.ndarray) -> str:
        payload = binascii.b2a_base64(ulaw_encode(pcm), newline=False).decode("ascii")
        return self._head + payload + self._tail


def mark_message(stream_sid: str, name: str) -> str:
    return json.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def clear_message(stream_sid: str) -> str:
    return json.dumps({"event": "clear", "streamSid": stream_sid})


def stream_url(public_url: str | None, request_host: str, forwarded_proto: str | None) -> str:
    """The wss:// URL Twilio should open. PUBLIC_URL wins; else the host the request came in on."""
    if public_url:
        parts = urlsplit(public_url if "://" in public_url else f"https://{public_url}")
        host = parts.netloc
        secure = parts.scheme in ("https", "wss")
    else:
        host = request_host
        secure = (forwarded_proto or "https") != "http"
    return f"{'wss' if secure else 'ws'}://{host}/media-stream"


def webhook_url(public_url: str, pipeline: str) -> str:
    """Our /incoming-call at PUBLIC_URL, for an outbound call's TwiML, naming the pipeline that answers."""
    base = public_url if "://" in public_url else f"https://{public_url}"
    return f"{base.rstrip('/')}/incoming-call?{urlencode({'pipeline': pipeline})}"


def dial_twiml(target: str) -> str:
    """`<Dial>` the number (E.164) or SIP URI the call is transferred to."""
    response = VoiceResponse()
    dial = Dial()
    if target.lower().startswith("sip:"):
        dial.sip(target)
    else:
        dial.number(target)
    response.append(dial)
    return str(response)


def connect_twiml(url: str, parameters: dict[str, str]) -> str:
    """`<Connect><Stream>` to our media WebSocket, then `<Hangup/>` once we close it."""
    response = VoiceResponse()
    connect = Connect()
    stream = connect.stream(url=url)
    for name, value in parameters.items():
        if value:
            stream.parameter(name=name, value=value)
    response.append(connect)
    response.hangup()
    return str(response)


def busy_twiml(message: str) -> str:
    """`<Say>` the busy message, then `<Hangup/>`: a call this server can't take now."""
    response = VoiceResponse()
    response.say(message)
    response.hangup()
    return str(response)
