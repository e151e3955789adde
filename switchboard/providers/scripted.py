"""The scripted responder: regex rules to canned replies, streamed like an LLM's but honestly a script.

The caller's last line is searched, case-insensitively, with each rule's regex in order; the first
rule that matches gives the reply (no match: the fallback). A rule with `end_call` asks to hang up
through the `end_call` tool when the call offers it, with the reply as the farewell. A rule with
`tool:` calls that tool (when the call offers it) with `arguments:` whose `{group}`s are the regex's
named groups (typed as the tool's parameters say: "4" for an integer is 4); once the result is back, the
reply is spoken with `{result}` (and, for a JSON object result, its top-level fields as `{field}`) and the
groups filled in; a result that is an error gets `failed:` instead. Nothing here pretends to be a model:
the vendor is "scripted", the model "rules", and Usage counts words.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

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
    tool: str | None = None  # a tool to call first (pipeline `tools:`); `reply` then uses {result}
    arguments: dict[str, Any] = Field(default_factory=dict)  # "{group}" = the regex's named group
    failed: str = "Sorry, that didn't work just now. Could you try again in a moment?"  # the tool failed

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
    tool: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    failed: str = ""


class ScriptedLLM:
    """The LLM interface over `ScriptedLLMConfig` rules."""

    vendor = "scripted"
    timeouts: Timeouts | None = None  # embedded: no deadlines
    model = "rules"

    def __init__(self, config: ScriptedLLMConfig) -> None:
        self.fallback = config.fallback
        self.words_per_second = config.words_per_second
        self._rules = [_compile(index, rule) for index, rule in enumerate(config.rules)]
        self._call_ids = itertools.count(1)

    def phrases(self) -> list[str]:
        """Every rule's phrases, in rule order: what callers are expected to say (for the embedded STT)."""
        return [phrase for rule in self._rules for phrase in rule.phrases]

    def respond(self, text: str) -> tuple[str, bool]:
        """The reply to `text` and whether it ends the call: the first matching rule, else the fallback."""
        rule, _ = self._match(text)
        return (rule.reply, rule.end_call) if rule is not None else (self.fallback, False)

    def _match(self, text: str) -> tuple[_Rule | None, dict[str, str]]:
        for rule in self._rules:
            if found := rule.pattern.search(text):
                return rule, {k: v for k, v in found.groupdict().items() if v is not None}
        return None, {}

    async def stream(self, messages: list[Message], tools: list[Tool]) -> AsyncIterator[LLMEvent]:
        heard = next((m.content for m in reversed(messages) if m.role == "user"), "")
        rule, groups = self._match(heard)
        reply, end_call = (rule.reply, rule.end_call) if rule is not None else (self.fallback, False)
        if rule is not None and rule.tool is not None:
            offered = next((tool for tool in tools if tool.name == rule.tool), None)
            results = _results_since_user(messages)
            if results:
                reply = _after_tool(rule, groups, results[-1])
            elif offered is not None:
                yield ToolCall(id=f"scripted-{next(self._call_ids)}", name=rule.tool,
                               arguments=_arguments(rule.arguments, groups, offered.parameters))
                yield Usage(input_tokens=sum(_words(m.content) for m in messages), output_tokens=0)
                return
            else:
                reply = rule.failed
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


def _compile(index: int, rule: ScriptedRule) -> _Rule:
    try:
        compiled = re.compile(rule.match, re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"scripted rule {index}: invalid regex {rule.match!r}: {exc}") from None
    return _Rule(compiled, rule.reply, rule.end_call, tuple(rule.phrases), rule.tool, dict(rule.arguments),
                 rule.failed)


def _results_since_user(messages: list[Message]) -> list[str]:
    """The tool results that came after the caller's last words (this turn's)."""
    results: list[str] = []
    for message in reversed(messages):
        if message.role == "user":
            break
        if message.role == "tool":
            results.insert(0, message.content)
    return results


_GROUP = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}")


def _fill(template: str, values: dict[str, Any]) -> str:
    """`{name}` -> its value (left as written when there is none)."""
    return _GROUP.sub(lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), template)


def _arguments(template: dict[str, Any], groups: dict[str, str], schema: dict[str, Any]) -> dict[str, Any]:
    """The rule's arguments with the regex's groups in, typed as the tool's parameters say."""
    properties = schema.get("properties") or {}
    arguments: dict[str, Any] = {}
    for name, value in template.items():
        if not isinstance(value, str):
            arguments[name] = value
            continue
        if any(name not in groups for name in _GROUP.findall(value)):
            continue  # an optional group that did not match: the argument is left out
        arguments[name] = _typed(_fill(value, groups), (properties.get(name) or {}).get("type"))
    return arguments


def _typed(text: str, kind: Any) -> Any:
    try:
        if kind == "integer":
            return int(text)
        if kind == "number":
            return float(text)
    except ValueError:
        return text  # the schema check will say what is wrong
    if kind == "boolean" and text.lower() in ("true", "yes", "false", "no"):
        return text.lower() in ("true", "yes")
    return text


def _after_tool(rule: _Rule, groups: dict[str, str], result: str) -> str:
    if result.startswith("Error:"):  # pipeline/tools.py reports every failure so
        return rule.failed
    values: dict[str, Any] = {**groups, "result": result}
    try:
        answer = json.loads(result)
    except ValueError:
        answer = None
    if isinstance(answer, dict):
        values.update({key: value for key, value in answer.items() if not isinstance(value, (dict, list))})
    return _fill(rule.reply, values)


def _words(text: str) -> int:
    return len(text.split())


register(Plugin("llm", "scripted", ScriptedLLMConfig, ScriptedLLM,
                expected_phrases=lambda config: ScriptedLLM(config).phrases()))
