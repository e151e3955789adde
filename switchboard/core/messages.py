"""The one internal message format: what the call engine, every LLM adapter and the store share.

A vendor module converts these to and from its vendor's types; nothing outside it knows those.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

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
