"""Anthropic Messages API (Claude) as an LLM, through the official SDK (`anthropic.AsyncAnthropic`).

`import anthropic` below is the SDK, not this module: imports are absolute (this one is
`providers.anthropic`). The SDK makes no retries (`max_retries=0`): failover, retries and the first-token
and total deadlines belong to pipeline/failover.py; the client carries the connect and read timeouts.

Wire choices (the SDK speaks `httpx2`, sends exactly what is passed):
- `POST /v1/messages` with `stream: true`; system messages go to the top-level `system`, the rest
  become alternating user/assistant turns (consecutive same-role messages merged into one turn of
  content blocks; a leading assistant turn, such as the greeting, gets a short user turn before it).
- An assistant message with tool calls becomes `[text?, tool_use{id, name, input}]`; a tool message
  becomes a user turn with a `tool_result` block. Tools go as `{name, description, input_schema}`.
- `temperature` is capped at 1.0 (the API's maximum; the config allows 2 for other vendors).
- The request goes through the client's generic `post` (the SDK's way to any endpoint: its auth,
  headers, timeouts, SSE reading and error mapping) and the events are read as the JSON objects the API
  documents: `messages.create` would build a typed model of every event (a discriminated union of
  pydantic models), CPU on the event loop every call's audio shares, for each token of every reply.
- Events: text deltas as they come; a tool call when its `tool_use` block stops (its
  `input_json_delta` fragments joined and parsed); Usage after `message_stop` (input tokens from
  `message_start`, cache reads/writes included, output tokens from the last `message_delta`).
  A stream that ends without `message_stop` is a retryable connection error; an `event: error`
  mid-stream (e.g. `overloaded_error`) is mapped by its error type.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx2

from switchboard.core.errors import ProviderError, api_key
from switchboard.core.messages import LLMEvent, Message, TextDelta, Tool, ToolCall, Usage
from switchboard.core.settings import VENDOR_KEEPALIVE_S
from switchboard.providers.anthropic import KEY_ENV, AnthropicLLMConfig

__all__ = ["AnthropicLLM", "provider_error", "to_anthropic"]

VENDOR = "anthropic"
MAX_TEMPERATURE = 1.0
LEADING_USER_TURN = "(The call has started.)"  # the API wants the first turn to be the user's
# the SDK's own limits, with idle connections kept VENDOR_KEEPALIVE_S (core/settings.py) instead of 5 s
LIMITS = httpx2.Limits(max_connections=1000, max_keepalive_connections=100,
                       keepalive_expiry=VENDOR_KEEPALIVE_S)

# `error.type` of an error body or of an `event: error` in a stream -> the HTTP status it stands for.
_ERROR_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def provider_error(exc: BaseException, key: str = "") -> ProviderError:
    """Any failure of an Anthropic call as a ProviderError; the key never appears in the message."""
    if isinstance(exc, ProviderError):
        return exc
    message = str(exc) or type(exc).__name__
    message = (message.replace(key, "***") if key else message)[:300]
    if isinstance(exc, (anthropic.APITimeoutError, httpx2.TimeoutException)):
        return ProviderError(VENDOR, "timeout", message, retryable=True)
    if isinstance(exc, (anthropic.APIConnectionError, httpx2.TransportError)):
        return ProviderError(VENDOR, "connection", message, retryable=True)
    if not isinstance(exc, anthropic.APIStatusError):
        return ProviderError(VENDOR, "internal", message)
    status = exc.status_code
    if status < 400:  # an `event: error` inside a 200 stream: its error type tells what happened
        status = _ERROR_TYPE_STATUS.get(str(exc.type), 500)
    if status == 429:
        return ProviderError(VENDOR, "rate_limit", message, retryable=True)
    if status in (401, 403):
        return ProviderError(VENDOR, "auth", message)
    if status >= 500:  # 529 overloaded_error included
        return ProviderError(VENDOR, "server", message, retryable=True)
    return ProviderError(VENDOR, "bad_request", message)


def to_anthropic(messages: list[Message]) -> tuple[str, list[dict[str, Any]]]:
    """The system prompt and the alternating user/assistant turns (lists of content blocks)."""
    system = "\n\n".join(m.content for m in messages if m.role == "system" and m.content)
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks: list[dict[str, Any]] = []
        if message.role == "tool":
            result: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id or ""}
            if message.content:
                result["content"] = message.content
            blocks.append(result)
        elif message.content:  # the API rejects empty text blocks
            blocks.append({"type": "text", "text": message.content})
        for call in message.tool_calls if message.role == "assistant" else ():
            blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments})
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:  # tool results must open their user turn
        turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    if turns and turns[0]["role"] == "assistant":
        turns.insert(0, {"role": "user", "content": [{"type": "text", "text": LEADING_USER_TURN}]})
    return system, turns


def _tool(tool: Tool) -> dict[str, Any]:
    return {"name": tool.name, "description": tool.description, "input_schema": tool.parameters}


class AnthropicLLM:
    """Streaming Claude replies as TextDelta / ToolCall / Usage."""

    vendor = VENDOR

    def __init__(self, config: AnthropicLLMConfig) -> None:
        self.model = config.model
        self.max_tokens = config.max_tokens
        self.temperature = config.temperature
        self.timeouts = config.timeouts
        self._key = api_key(VENDOR, config.api_key_env, *KEY_ENV)  # MissingCredential
        self._client = anthropic.AsyncAnthropic(
            api_key=self._key,
            base_url=config.base_url,
            max_retries=0,
            timeout=anthropic.Timeout(config.timeouts.total_s, connect=config.timeouts.connect_s),
            http_client=anthropic.DefaultAsyncHttpxClient(limits=LIMITS),
        )

    async def stream(self, messages: list[Message], tools: list[Tool]) -> AsyncIterator[LLMEvent]:
        system, turns = to_anthropic(messages)
        body: dict[str, Any] = {"model": self.model, "max_tokens": self.max_tokens, "messages": turns,
                                "stream": True}
        if system:
            body["system"] = system
        if tools:
            body["tools"] = [_tool(tool) for tool in tools]
        if self.temperature is not None:
            body["temperature"] = min(self.temperature, MAX_TEMPERATURE)
        calls: dict[int, dict[str, str]] = {}  # content block index -> id, name, input JSON so far
        input_tokens = output_tokens = 0
        finished = False
        try:
            response = await self._client.post("/v1/messages", body=body, cast_to=object, stream=True,
                                               stream_cls=anthropic.AsyncStream[object])
            async with response:  # closes the HTTP response however we leave, cancellation included
                async for event in response:
                    kind = event.get("type")
                    if kind == "content_block_delta":
                        delta = event.get("delta") or {}
                        if delta.get("type") == "text_delta" and delta.get("text"):
                            yield TextDelta(delta["text"])
                        elif delta.get("type") == "input_json_delta" and event.get("index") in calls:
                            calls[event["index"]]["json"] += delta.get("partial_json") or ""
                    elif kind == "message_start":
                        usage = (event.get("message") or {}).get("usage") or {}
                        input_tokens = _input_tokens(usage)
                        output_tokens = usage.get("output_tokens") or 0
                    elif kind == "content_block_start":
                        block = event.get("content_block") or {}
                        if block.get("type") == "tool_use":
                            calls[event.get("index", 0)] = {"id": block.get("id") or "",
                                                            "name": block.get("name") or "", "json": ""}
                    elif kind == "content_block_stop" and event.get("index") in calls:
                        yield _tool_call(calls.pop(event["index"]))
                    elif kind == "message_delta":
                        usage = event.get("usage") or {}
                        output_tokens = usage.get("output_tokens") or output_tokens
                        if usage.get("input_tokens") is not None:  # cumulative totals, when repeated here
                            input_tokens = max(input_tokens, _input_tokens(usage))
                    elif kind == "message_stop":
                        finished = True
        except Exception as exc:
            raise provider_error(exc, self._key) from exc
        if not finished:
            raise ProviderError(VENDOR, "connection", "the stream ended before message_stop", retryable=True)
        yield Usage(input_tokens, output_tokens)


def _input_tokens(usage: dict[str, Any]) -> int:
    """Total input tokens: uncached plus cache writes plus cache reads."""
    return (
        (usage.get("input_tokens") or 0)
        + (usage.get("cache_creation_input_tokens") or 0)
        + (usage.get("cache_read_input_tokens") or 0)
    )


def _tool_call(call: dict[str, str]) -> ToolCall:
    try:
        arguments = json.loads(call["json"] or "{}")
    except json.JSONDecodeError as exc:
        raise ProviderError(
            VENDOR, "bad_request", f"tool {call['name']!r}: input is not JSON: {exc}"
        ) from None
    if not isinstance(arguments, dict):
        raise ProviderError(VENDOR, "bad_request", f"tool {call['name']!r}: input is not a JSON object")
    return ToolCall(call["id"], call["name"], arguments)
