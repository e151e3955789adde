"""Plivo Audio Streaming: parse what Plivo sends, build what we send, and the XML that starts a stream.

Sources (read 2026-12): docs.plivo.com/docs/voice/xml/audiostream (the `<Stream>` element),
plivo.com/docs/voice/audio-streaming/audio-streaming (the Stream Event Protocol) and the
checkpoint / clearAudio / playAudio pages. What matters here:

- Plivo -> us, JSON text frames: `start` (`start.callId`, `start.streamId`, `start.accountId`,
  `start.mediaFormat.{encoding, sampleRate}`, top-level `extra_headers`), `media`
  (`media.payload` base64, `media.timestamp` a string of Unix ms, `media.chunk`), `dtmf`
  (`dtmf.digit`), `playedStream` (`name`: a checkpoint whose audio has played), `clearedAudio`.
  `stop` is not in the current reference (the socket closing ends the stream); it is accepted anyway.
- us -> Plivo: `playAudio` (`media.{contentType, sampleRate, payload}`), `checkpoint` (`name`),
  `clearAudio`. A checkpoint is confirmed (`playedStream`) only if the audio before it played: one
  pending when we clear is never confirmed, which the player already counts as unheard.
- We ask for `audio/x-mulaw;rate=8000` both ways: the pipeline's rate, the codec Twilio uses too.

Inbound frames become the carrier-neutral events of core/carrier.py; anything malformed raises
`BadFrame` with the reason, which the server logs and drops.
"""

from __future__ import annotations

import binascii
import json
from typing import Any

import numpy as np
from plivo import plivoxml

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

CONTENT_TYPE = "audio/x-mulaw;rate=8000"  # what the `<Stream>` asks for, and what playAudio carries
ENCODING, SAMPLE_RATE = "audio/x-mulaw", 8000
MAX_PAYLOAD_BYTES = 8000 * 2  # two seconds of μ-law: anything bigger is not a real Plivo chunk


def _section(msg: dict[str, Any], name: str) -> dict[str, Any]:
    value = msg.get(name)
    if not isinstance(value, dict):
        got = "missing" if value is None else type(value).__name__
        raise BadFrame(f"{name}: expected an object, got {got}")
    return value


def _string(obj: dict[str, Any], name: str, where: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        got = "missing" if value is None else type(value).__name__
        raise BadFrame(f"{where}.{name}: expected str, got {got}")
    return value


def extra_headers(text: object) -> dict[str, str]:
    """`extra_headers` ("k=v;k2=v2", or comma-separated as the XML attribute is written) as a dict."""
    if not isinstance(text, str):
        return {}
    pairs = (part.partition("=") for part in text.replace(",", ";").split(";") if "=" in part)
    return caller_parameters({key.strip(): value.strip() for key, _, value in pairs})


def parse(raw: str | bytes) -> InboundEvent:
    """Turn one WebSocket message from Plivo into an event, or raise BadFrame."""
    msg = json_object(raw, "Plivo")
    event = _string(msg, "event", "message")
    if event == "media":
        media = _section(msg, "media")
        payload = _string(media, "payload", "media")
        audio = payload_audio(payload, MAX_PAYLOAD_BYTES, "chunk")
        timestamp = media.get("timestamp")
        timestamp_ms = frame_number(timestamp, "media.timestamp") if timestamp is not None else None
        return Media(pcm=ulaw_decode(audio), timestamp_ms=timestamp_ms)
    if event == "start":
        return _start(msg)
    if event == "playedStream":
        return Mark(name=_string(msg, "name", "playedStream"))
    if event == "clearedAudio":  # Plivo confirms a clear: nothing for the call to do (it dropped its marks)
        return Connected()
    if event == "dtmf":
        dtmf = _section(msg, "dtmf")
        return Dtmf(digit=keypad_digit(dtmf.get("digit"), "dtmf.digit"))
    if event == "stop":
        return Stop()
    raise BadFrame(f"unknown event {event!r}")


def _start(msg: dict[str, Any]) -> Start:
    start = _section(msg, "start")
    stream_id = _string(start, "streamId", "start")
    if not stream_id:
        raise BadFrame("start.streamId: empty")
    media_format = start.get("mediaFormat") or {}
    if not isinstance(media_format, dict):
        raise BadFrame("start.mediaFormat: expected an object")
    encoding = media_format.get("encoding", ENCODING)
    if encoding != ENCODING:  # we asked for μ-law in the <Stream>: anything else is not our stream
        raise BadFrame(f"start.mediaFormat.encoding: expected {ENCODING}, got {encoding!r}")
    rate = media_format.get("sampleRate", SAMPLE_RATE)
    if frame_number(rate, "start.mediaFormat.sampleRate") != SAMPLE_RATE:
        raise BadFrame(f"start.mediaFormat.sampleRate: expected {SAMPLE_RATE}, got {rate!r}")
    return Start(
        stream_sid=caller_text(stream_id, ID_CHARS),
        call_sid=caller_text(start.get("callId") or "", ID_CHARS),
        account_sid=caller_text(start.get("accountId") or "", ID_CHARS),
        custom_parameters=extra_headers(msg.get("extra_headers")),
    )


# --- what we send -------------------------------------------------------------------------------------


def play_audio_message(stream_id: str, pcm: np.ndarray) -> str:
    return PlayAudioMessages(stream_id)(pcm)


class PlayAudioMessages:
    """One stream's playAudio messages, as `json.dumps` writes them: the JSON around the payload is
    built once per stream (base64 needs no escaping), not per 20 ms frame."""

    def __init__(self, stream_id: str) -> None:
        media = {"contentType": ENCODING, "sampleRate": SAMPLE_RATE, "payload": ""}
        text = json.dumps({"event": "playAudio", "streamId": stream_id, "media": media})
        self._head, self._tail = text[:-3], text[-3:]  # ...{"payload": "  and  "}}

    def __call__(self, pcm: np.ndarray) -> str:
        payload = binascii.b2a_base64(ulaw_encode(pcm), newline=False).decode("ascii")
        return self._head + payload + self._tail


def checkpoint_message(stream_id: str, name: str) -> str:
    return json.dumps({"event": "checkpoint", "streamId": stream_id, "name": name})


def clear_message(stream_id: str) -> str:
    return json.dumps({"event": "clearAudio", "streamId": stream_id})


# --- Plivo XML ----------------------------------------------------------------------------------------


def stream_xml(url: str) -> str:
    """A bidirectional `<Stream>` to our socket (`url` carries the call's pipeline, numbers and token),
    kept alone while it runs (`keepCallAlive`), then `<Hangup/>` once we close it."""
    response = plivoxml.ResponseElement()
    response.add(plivoxml.StreamElement(url, bidirectional=True, keepCallAlive=True, audioTrack="inbound",
                                        contentType=CONTENT_TYPE))
    response.add(plivoxml.HangupElement())
    return response.to_string(pretty=False)


def dial_xml(target: str) -> str:
    """`<Dial>` the number (E.164) or SIP URI the call is transferred to."""
    response = plivoxml.ResponseElement()
    dial = plivoxml.DialElement()
    dial.add(plivoxml.UserElement(target) if target.lower().startswith("sip:")
             else plivoxml.NumberElement(target.lstrip("+")))
    response.add(dial)
    return response.to_string(pretty=False)


def busy_xml(message: str) -> str:
    """`<Speak>` the busy message, then `<Hangup/>`: a call this server can't take now."""
    response = plivoxml.ResponseElement()
    response.add(plivoxml.SpeakElement(message))
    response.add(plivoxml.HangupElement())
    return response.to_string(pretty=False)
