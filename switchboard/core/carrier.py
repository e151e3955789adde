"""What a carrier plug-in (telephony/*) and the call engine share: the events a carrier's frames become,
and the `CarrierLink` a call answers on.

Every carrier parses its own wire format into these events; anything malformed raises `BadFrame` with
the reason, which the server logs and drops. Fields a carrier does not send keep their defaults.
"""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

E164 = re.compile(r"\+[1-9][0-9]{1,14}")  # a phone number: + country code and number, at most 15 digits
LINE_RATE = 8000  # the pipeline's rate: every carrier's audio is brought to 8 kHz PCM16


class BadFrame(ValueError):
    """A frame that does not follow the protocol. The message says why."""


@dataclass
class Connected:
    pass


@dataclass
class Start:
    stream_sid: str
    call_sid: str
    account_sid: str
    custom_parameters: dict[str, str] = field(default_factory=dict)
    from_number: str = ""
    to_number: str = ""
    sample_rate: int = LINE_RATE  # the wire's rate (the carrier's decoder brings it to LINE_RATE)


@dataclass
class Media:
    pcm: np.ndarray  # int16, 8 kHz once the carrier has decoded it
    timestamp_ms: int | None
    # a wideband carrier's copy of the same audio at its link's `wideband_rate` (a whole multiple of
    # 8 kHz: len(wide) == len(pcm) * rate // 8000), for the recognisers that hear better with it
    wide: np.ndarray | None = None


@dataclass
class Mark:
    name: str


@dataclass
class Dtmf:
    digit: str
    duration_ms: int | None = None


@dataclass
class Stop:
    reason: str = ""  # why the call ended, when the carrier says


InboundEvent = Connected | Start | Media | Mark | Dtmf | Stop


MAX_FRAME_CHARS = 512 * 1024  # far above any real frame (Exotel's largest chunk is ≈ 137 K of base64)
MAX_FRAME_NUMBER = 2**53  # timestamps, durations, rates: anything larger is not a real value


def json_object(raw: str | bytes, carrier: str) -> dict:
    """The JSON object in one text frame (Twilio and Exotel send only these), or BadFrame saying why not.
    Total: whatever the frame holds, this returns an object or raises BadFrame."""
    if isinstance(raw, bytes):
        raise BadFrame(f"binary frame ({carrier} sends JSON text frames only)")
    if len(raw) > MAX_FRAME_CHARS:
        raise BadFrame(f"{len(raw)} characters is too large for a frame (at most {MAX_FRAME_CHARS})")
    try:
        msg = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadFrame(f"not JSON: {exc.msg} at position {exc.pos}") from None
    except RecursionError:
        raise BadFrame("JSON nested too deeply") from None
    if not isinstance(msg, dict):
        raise BadFrame(f"top level is {type(msg).__name__}, expected an object")
    return msg


ID_CHARS = 128  # a call or stream id (the store's column)
NUMBER_CHARS = 64  # a phone number or caller id
PARAMETER_CHARS = 256  # a custom parameter's name or value
MAX_PARAMETERS = 32


def caller_text(value: object, limit: int) -> str:
    """A string from the caller's side, safe for the log, the store and the pages: at most `limit`
    characters, with lone surrogates and control characters replaced."""
    text = str(value)[:limit]
    text = text.encode("utf-8", "replace").decode("utf-8")  # a lone surrogate would not encode anywhere
    return "".join(char if char.isprintable() else "?" for char in text)


def caller_parameters(params: dict) -> dict[str, str]:
    """`customParameters` made safe: at most MAX_PARAMETERS, names and values bounded and cleaned."""
    return {caller_text(key, PARAMETER_CHARS): caller_text(value, PARAMETER_CHARS)
            for key, value in list(params.items())[:MAX_PARAMETERS]}


KEYPAD = frozenset("0123456789*#ABCD")  # what a phone's keypad can send


def keypad_digit(value: object, where: str) -> str:
    """One key of a phone's keypad (a digit may come as a number), or BadFrame."""
    digit = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if digit is None or digit.upper() not in KEYPAD:
        raise BadFrame(f"{where}: expected a keypad key (0-9, *, #, A-D), got {_short(value)}")
    return digit.upper()


def frame_number(value: object, where: str) -> int:
    """A whole number a carrier sent (as a number or a string), 0 to MAX_FRAME_NUMBER, or BadFrame."""
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        raise BadFrame(f"{where}: expected a number, got {_short(value)}") from None
    if not 0 <= number <= MAX_FRAME_NUMBER:
        raise BadFrame(f"{where}: {_short(value)} is out of range (0 to 2^53)")
    return number


def payload_audio(payload: str, max_bytes: int, unit: str) -> bytes:
    """A media message's base64 `payload` as bytes, or BadFrame: too large for one `unit` (frame,
    chunk) of at most `max_bytes`, not strict base64, or empty."""
    if len(payload) > max_bytes * 4 // 3 + 4:
        raise BadFrame(f"media.payload: {len(payload)} characters is too large for one {unit}")
    try:  # base64.b64decode(validate=True) is this plus a regex: 3x the cost, on every frame of every call
        audio = binascii.a2b_base64(payload, strict_mode=True)
    except (binascii.Error, ValueError):
        raise BadFrame("media.payload: invalid base64") from None
    if not audio:
        raise BadFrame("media.payload: empty")
    return audio


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class CarrierLink(Protocol):
    """The call's way back to the caller, already encoded for its carrier. Marks come back as `Mark`
    events once the audio before them has played (or was cleared): that is how the call learns what
    the caller heard."""

    # audio the link holds back before sending (to fill its carrier's chunks); the player runs that
    # much further ahead to make up for it
    holds_ms: int
    # can it hand the live call to another number or SIP URI (`transfer`)? The `transfer_call` tool is
    # offered only then; a link that can't says why (`switchboard check` shows it)
    transfers: bool
    # a carrier whose line is wider than 8 kHz (a browser call) may hand the call a copy of the caller's
    # audio at this rate beside the 8 kHz one (`Media.wide`), for the recognisers that want it; None: 8 kHz
    wideband_rate: int | None

    async def send_audio(self, pcm: np.ndarray) -> None: ...  # int16, 8 kHz, a whole number of frames
    async def send_mark(self, name: str) -> None: ...
    async def send_clear(self) -> None: ...
    async def hang_up(self) -> None: ...
    async def transfer(self, target: str) -> bool: ...  # True: the call went on to `target`, we are out


@dataclass
class Connection:
    """One carrier connection, as the server's call loop needs it."""

    carrier: str  # "twilio", "exotel": recorded on the call
    parse: Callable[[str | bytes], InboundEvent]  # one frame -> an event; raises BadFrame
    link: Callable[[Start], CarrierLink]  # the call's way back, made once `start` arrives
