"""The simulated caller's side of each carrier beyond Twilio and Exotel (whose wires live in caller/wire.py):
one module per carrier, named in `WIRES`, imported when `switchboard call --carrier X` picks it.

A wire is what `caller.sender.MediaSender` and `caller.session._Call` use to speak the carrier's protocol:

- `name`, `frame_samples` (8 kHz samples of caller audio per inbound media message), `stream_sid`,
  `account_sid`, `call_sid`;
- `async open(url, parameters) -> (ws_url, headers)`: what the carrier does before the socket (its
  answer webhook, signed with the key in the environment if set) when `url` is http(s); a ws(s) URL is
  used as it is;
- `connected()`, `start(seq, parameters)`, `stop(seq)`: the opening and closing messages (None: the
  carrier sends none), `media(seq, chunk, timestamp_ms, payload)`, `mark(seq, name)` (a mark's echo):
  a dict (sent as JSON), str or bytes (sent as they are);
- `encode(pcm) -> (payload, heard)`: one frame of 8 kHz caller audio for the wire, and what the server
  decodes from it;
- `check(raw)`: a server message as `("media", pcm 8 kHz)`, `("mark", name)`, `("clear", None)`, or the
  sentence saying which of the carrier's rules it breaks (reported as malformed);
- `echoes_cleared_marks`: does a clear send back the marks it dropped (Twilio: yes; Plivo, Vonage: no).
"""

from __future__ import annotations

import importlib
import json
from typing import Any

WIRES = {  # carrier -> module with its `Wire`
    "plivo": "switchboard.callers.plivo",
    "vonage": "switchboard.callers.vonage",
    "telnyx": "switchboard.callers.telnyx",
}

Checked = tuple[str, Any] | str


def make(carrier: str, sample_rate: int) -> Any:
    """The wire of `carrier`, one of `WIRES`."""
    return importlib.import_module(WIRES[carrier]).Wire(sample_rate)


def json_object(raw: str | bytes, carrier: str) -> dict[str, Any] | str:
    """A server message's JSON object, or why it is not one."""
    if isinstance(raw, bytes):
        return f"binary frame ({carrier} takes JSON text frames only)"
    try:
        msg = json.loads(raw)
    except ValueError:
        return "not JSON"
    return msg if isinstance(msg, dict) else "not a JSON object"


def digits(number: str) -> str:
    """A number as these carriers send it: country code first, no '+'."""
    return number.lstrip("+")
