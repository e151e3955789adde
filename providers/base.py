"""The three provider interfaces and the one internal message format.

A vendor module implements STT, LLM or TTS (or several), converts these types to and from its
vendor's, and raises ProviderError for anything that goes wrong. Nothing outside `providers/` knows
a vendor's types.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

Role = Literal["system", "user", "assistant", "tool"]


@dataclass
class ToolCall:
    """The LLM asks for a tool. `arguments` is already parsed JSON."""

    id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass
class Message:
    role: Role
    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)  # assistant messages only
    tool_call_id: str | None = None  # tool messages only


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass
class TextDelta:
    text: str


@dataclass
class Usage:
    input_tokens: int
    output_tokens: int


LLMEvent = TextDelta | ToolCall | Usage


@dataclass
class Transcript:
    text: str
    confidence: float | None = None


ErrorKind = Literal["auth", "rate_limit", "timeout", "server", "bad_request", "connection", "internal"]


class ProviderError(Exception):
    """Every failure of a provider, whatever the vendor, ends up as one of these."""

    def __init__(self, vendor: str, kind: ErrorKind, message: str, retryable: bool = False) -> None:
        super().__init__(f"{vendor}: {kind}: {message}")
        self.vendor = vendor
        self.kind = kind
        self.retryable = retryable


class STT(Protocol):
    vendor: str
    model: str
    sample_rate: int  # what it wants; the call resamples the utterance for it

    async def transcribe(self, pcm: np.ndarray) -> Transcript: ...


class LLM(Protocol):
    vendor: str
    model: str

    def stream(self, messages: list[Message], tools: list[Tool]) -> AsyncIterator[LLMEvent]: ...


class TTS(Protocol):
    vendor: str
    model: str
    sample_rate: int  # what it produces

    def stream(self, text: str) -> AsyncIterator[np.ndarray]: ...  # int16 mono chunks


END_CALL_TOOL = Tool(
    name="end_call",
    description=(
        "End the phone call. Use it when the caller says goodbye or the conversation is over. "
        "`farewell` is spoken to the caller before hanging up."
    ),
    parameters={
        "type": "object",
        "properties": {"farewell": {"type": "string", "description": "What to say before hanging up."}},
        "required": ["farewell"],
    },
)


class MissingCredential(Exception):
    """A vendor's key is not in the environment: a start-up error naming the variable to set."""


def api_key(vendor: str, override_env: str | None, *default_envs: str) -> str:
    """The key from the first set variable (`override_env`, else the vendor's usual ones)."""
    names = [override_env] if override_env else list(default_envs)
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    raise MissingCredential(f"{vendor}: set {' or '.join(names)}")
