"""Speech-to-speech models (`kind: realtime` pipelines): the events every vendor's session is turned into,
and the protocol its adapter offers the call engine (pipeline/realtime.py).

Audio crosses this boundary as int16 PCM at the phone line's 8 kHz in both directions: the adapter
converts to and from its vendor's format (OpenAI: G.711 μ-law, which is lossless from the carrier's
μ-law; Gemini: 16 kHz in, 24 kHz out, resampled), so the engine never knows a vendor's codec. One
exception, the caller's audio of a wideband call (a browser's: the carrier's `wideband_rate`): a model
that lists that rate in `input_rates` is connected with `rate=` it and given the carrier's own copy
(OpenAI: 24 kHz PCM, resampled; Gemini: 16 kHz as is), so it hears the band an 8 kHz line loses
(pipeline/realtime_caller.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from switchboard.core.carrier import LINE_RATE
from switchboard.core.messages import Message, Tool
from switchboard.core.settings import Timeouts


@dataclass
class RealtimeUsage:
    """Tokens of one response, audio and text apart (they are priced apart)."""

    text_in: int = 0
    audio_in: int = 0
    text_out: int = 0
    audio_out: int = 0


@dataclass
class BotAudio:
    """Reply audio, 8 kHz int16. `item_id` names the vendor's reply item (what a truncation points at)."""

    pcm: np.ndarray
    item_id: str


@dataclass
class BotText:
    """The transcript of the reply audio, as it streams."""

    text: str
    item_id: str


@dataclass
class CallerSpeechStarted:
    """The vendor's own voice activity detection heard the caller start (it stops its reply itself)."""


@dataclass
class CallerSpeechStopped:
    """The vendor's voice activity detection decided the caller has finished (its endpoint)."""


@dataclass
class CallerTranscript:
    """The vendor's transcription of what the caller said."""

    text: str


@dataclass
class ToolRequest:
    """The model calls a tool."""

    call_id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass
class ToolsCancelled:
    """The vendor withdrew tool calls it made (Gemini's `toolCallCancellation`: the caller talked over the
    model): their results are no longer wanted."""

    call_ids: list[str] = field(default_factory=list)


@dataclass
class ResponseDone:
    """A response ended: `status` completed, cancelled (interrupted), failed or incomplete."""

    status: str
    usage: RealtimeUsage | None = None
    error: str | None = None  # the vendor's reason, for a failed response


@dataclass
class SessionExpiring:
    """The vendor says it will end the session soon (Gemini's `goAway`): renew it at the next pause."""


@dataclass
class VendorError:
    """An `error` event: the session goes on (a bad request, a rate limit); the message is the vendor's."""

    message: str
    code: str | None = None


RealtimeEvent = (BotAudio | BotText | CallerSpeechStarted | CallerSpeechStopped | CallerTranscript
                 | ToolRequest | ToolsCancelled | ResponseDone | SessionExpiring | VendorError)


class RealtimeConnection(Protocol):
    """One open session with the vendor. Every method raises `ProviderError` when the socket is gone."""

    async def send_audio(self, pcm: np.ndarray) -> None: ...  # caller audio, int16 at connect's `rate`
    async def send_text(self, text: str) -> None: ...  # a user message (keypad digits)
    async def respond(self, instructions: str | None = None) -> None: ...  # ask for a reply now
    async def cancel(self) -> None: ...  # stop the response being generated
    async def truncate(self, item_id: str, audio_end_ms: int) -> None: ...  # the caller heard only this
    async def tool_result(self, call_id: str, output: str) -> None: ...  # acknowledge one call, no reply
    # a round of tool calls answered (call id, output): the model goes on with them (a reply follows)
    async def tool_results(self, results: list[tuple[str, str]]) -> None: ...
    # a barge-in dropped these calls' round: tell the model, where its protocol needs it (no reply)
    async def tools_cancelled(self, call_ids: list[str]) -> None: ...
    # a response outside the conversation (a filler while a tool runs); False: the vendor has none
    async def say_aside(self, instructions: str) -> bool: ...
    # ends when we close; raises ProviderError when the socket drops
    def events(self) -> AsyncIterator[RealtimeEvent]: ...
    async def close(self) -> None: ...


class RealtimeModel(Protocol):
    """A speech-to-speech vendor configured for one pipeline."""

    vendor: str
    model: str
    timeouts: Timeouts
    # a session the vendor ends by itself after this long (None: no limit); renewed before it expires
    session_limit_s: float | None
    # the rates of caller audio its sessions take (`connect`'s `rate`): LINE_RATE, and a wideband
    # carrier's rate (16 kHz) when the vendor hears that band (it is then given the carrier's own copy)
    input_rates: tuple[int, ...]

    async def connect(self, instructions: str, tools: list[Tool], history: list[Message] | None = None,
                      rate: int = LINE_RATE) -> RealtimeConnection:
        """Open a session (with `history` replayed as text when resuming after a drop) whose
        `send_audio` takes the caller's audio at `rate` (one of `input_rates`)."""
        ...
