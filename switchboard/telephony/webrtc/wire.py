"""A browser call's frames: what the server's call loop reads from a WebRTC call, and how each becomes a
`core.carrier` event.

A WebRTC call has no WebSocket: its audio comes as Opus RTP (decoded by aiortc, brought to the
pipeline's 8 kHz by `media.Inbound`) and the page talks over a data channel. The call's `Channel`
(peer.py) hands the server's loop two kinds of frames:

- **text**: a data-channel message from the page, untrusted: a JSON object
  `{"type": "dtmf", "digit": "5"}` (a keypad key) or `{"type": "hangup"}` (the caller hung up).
  Anything else raises `BadFrame`, which the server logs and drops; the call goes on.
- **bytes**: our own frames, made on the server (the page cannot send these: a binary data-channel
  message is read as text), a one-byte tag and a body: `w` + 8 kHz PCM16 then the same stretch at
  16 kHz (the caller's audio, both ways the call uses it: one third, then two thirds of the body), `a` +
  8 kHz PCM16 alone, `m` + a mark's name (the audio before it was sent, or cleared), `s` + JSON (the
  call's start).
"""

from __future__ import annotations

import json

import numpy as np

from switchboard.core.carrier import (
    ID_CHARS,
    BadFrame,
    Dtmf,
    InboundEvent,
    Mark,
    Media,
    Start,
    Stop,
    caller_parameters,
    caller_text,
    json_object,
    keypad_digit,
)

AUDIO, WIDE_AUDIO, MARK, START = b"a", b"w", b"m", b"s"
WIDE_RATE = 16000  # the caller's audio for the recognisers that want wideband (WebRTCLink.wideband_rate)
WIDE_RATIO = WIDE_RATE // 8000
MAX_MESSAGE_CHARS = 1024  # the page sends only small control messages


def audio_frame(pcm: np.ndarray, wide: np.ndarray | None = None) -> bytes:
    """The caller's 8 kHz audio, and with `wide` the same stretch at WIDE_RATE, as one frame."""
    if wide is None:
        return AUDIO + pcm.astype("<i2", copy=False).tobytes()
    if len(wide) != WIDE_RATIO * len(pcm):
        raise ValueError(f"{len(wide)} samples at {WIDE_RATE} Hz are not the {len(pcm)} at 8 kHz")
    return WIDE_AUDIO + pcm.astype("<i2", copy=False).tobytes() + wide.astype("<i2", copy=False).tobytes()


def mark_frame(name: str) -> bytes:
    return MARK + name.encode()


def start_frame(call_id: str, pipeline: str, arm: str | None, caller: str) -> bytes:
    parameters = {"pipeline": pipeline, "from": caller, **({"arm": arm} if arm else {})}
    return START + json.dumps({"call_id": call_id, "parameters": parameters}).encode()


def hangup_message() -> str:
    """What the server tells the page before it closes the call."""
    return json.dumps({"type": "hangup"})


def parse(raw: str | bytes) -> InboundEvent:
    """One frame -> an event, or BadFrame saying why not. Total."""
    if isinstance(raw, bytes):
        return _own(raw)
    if not isinstance(raw, str):
        raise BadFrame(f"expected a text or binary frame, got {type(raw).__name__}")
    if len(raw) > MAX_MESSAGE_CHARS:
        raise BadFrame(f"data-channel message of {len(raw)} characters (at most {MAX_MESSAGE_CHARS})")
    message = json_object(raw, "the page")
    kind = message.get("type")
    if kind == "dtmf":
        return Dtmf(keypad_digit(message.get("digit"), "dtmf.digit"))
    if kind == "hangup":
        return Stop("the caller hung up")
    raise BadFrame(f"unknown data-channel message type {caller_text(kind, 40)!r} "
                   "(expected 'dtmf' or 'hangup')")


def _own(raw: bytes) -> InboundEvent:
    tag, body = raw[:1], raw[1:]
    if tag == AUDIO:
        if len(body) % 2:
            raise BadFrame(f"odd-length PCM16 ({len(body)} bytes)")
        return Media(np.frombuffer(body, dtype="<i2").astype(np.int16), None)
    if tag == WIDE_AUDIO:
        if len(body) % (2 * (1 + WIDE_RATIO)):
            raise BadFrame(f"wideband audio frame of {len(body)} bytes is not 8 kHz + {WIDE_RATE} Hz PCM16")
        samples = np.frombuffer(body, dtype="<i2").astype(np.int16)
        narrow = len(samples) // (1 + WIDE_RATIO)
        return Media(samples[:narrow], None, wide=samples[narrow:])
    if tag == MARK:
        return Mark(body.decode("utf-8", "replace"))
    if tag == START:
        try:
            start = json.loads(body)
            call_id = caller_text(start["call_id"], ID_CHARS)
            parameters = caller_parameters(start["parameters"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BadFrame(f"bad start frame: {exc}") from None
        return Start(stream_sid=call_id, call_sid=call_id, account_sid="", custom_parameters=parameters,
                     from_number=parameters.get("from", ""))
    raise BadFrame(f"unknown frame tag {tag!r}")
