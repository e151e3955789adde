"""The scripted responder: regex rules to canned replies, streamed like an LLM's but honestly a script.

The caller's last line is searched, case-insensitively, with each rule's regex in order; the first
rule that matches gives the reply (no match: the fallback). A rule with `end_call` asks to hang up
through the `end_call` tool when the call offers it, with the reply as the farewell. Nothing here
pretends to be a model: the vendor is "scripted", the model "rules", and Usage counts words.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, field_validator

from switchboard.core.messages import LLMEvent, Message, TextDelta, Tool, ToolCall, Usage
from switchboard.core.settings import ProviderConfig, Strict, Timeouts
from switchboard.core.tools import END_CALL_TOOL
from switchboard.providers.registry import Plugin, register

__all__ = ["ScriptedLLM"]

_WORD = re.compile(r"\S+\s*|\s+")  # a word with the spaces after it (or leading spaces): joins back exactly


# --- its section of pipeline.yaml ---------------------------------------------------------------------


class ScriptedRule(Strict):
    """One rule of the scripted responder; rules are tried in order and the first match wins."""

    match: str  # a Python regex, searched case-insensitively in the caller's transcript
    reply: str
    end_call: bool = False
    phrases: list[str] = Field(default_factory=list)  # what callers say; taught to the embedded STT

    @field_validator("match")
    @classmethod
    def _match_compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"invalid regex: {exc}") from None
        return pattern

class ScriptedLLMConfig(ProviderConfig):
    """The embedded responder: regex rules to canned replies, honest about being a script."""

    provider: Literal["scripted"]
    rules: list[ScriptedRule] = Field(default_factory=list)
    fallback: str = "Sorry, I didn't catch that. Could you say it again?"
    words_per_second: float = Field(0, ge=0, le=1000)  # 0 = stream words as fast as possible


@dataclass(frozen=True)
class _Rule:
    pattern: re.Pattern[str]
    reply: str
    end_call: bool
    phrases: tuple[str, ...]


class ScriptedLLM:
    """The LLM interface over `ScriptedLLMConfig` rules."""

    vendor = "scripted"
    timeouts: Timeouts | None = None  # embedded: no deadlines
    model = "rules"

    def __init__(self, config: ScriptedLLMConfig) -> None:
        self.fallback = config.fallback
        self.words_per_second = config.words_per_second
        self._rules = [_compile(index, rule.match, rule.reply, rule.end_call, rule.phrases)
                       for index, rule in enumerate(config.rules)]
        self._call_ids = itertools.count(1)

    def phrases(self) -> list[str]:
        """Every rule's phrases, in rule order: what callers are expected to say (for the embedded STT)."""
        return [phrase for rule in self._rules for phrase in rule.phrases]

    def respond(self, text: str) -> tuple[str, bool]:
        """The reply to `text` and whether it ends the call: the first matching rule, else the fallback."""
        for rule in self._rules:
            if rule.pattern.search(text):
                return rule.reply, rule.end_call
        return self.fallback, False

    async def stream(self, messages: list[Message], tools: list[Tool]) -> AsyncIterator[LLMEvent]:
        heard = next((m.content for m in reversed(messages) if m.role == "user"), "")
        reply, end_call = self.respond(heard)
        if end_call and any(tool.name == END_CALL_TOOL.name for tool in tools):
            yield ToolCall(id=f"scripted-{next(self._call_ids)}", name=END_CALL_TOOL.name,
                           arguments={"farewell": reply})
        else:
            for index, word in enumerate(_WORD.findall(reply)):
                if index:
                    # Also when there is no pace: each await is a point where barge-in can cancel the turn.
                    await asyncio.sleep(1 / self.words_per_second if self.words_per_second else 0)
                yield TextDelta(word)
        # Not tokens: word counts, the closest honest figure a script has.
        yield Usage(input_tokens=sum(_words(m.content) for m in messages), output_tokens=_words(reply))


def _compile(index: int, pattern: str, reply: str, end_call: bool, phrases: list[str]) -> _Rule:
    try:
        compiled = re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"scripted rule {index}: invalid regex {pattern!r}: {exc}") from None
    return _Rule(compiled, reply, end_call, tuple(phrases))


def _words(text: str) -> int:
    return len(text.split())


register(Plugin("llm", "scripted", ScriptedLLMConfig, ScriptedLLM,
                expected_phrases=lambda config: ScriptedLLM(config).phrases()))
