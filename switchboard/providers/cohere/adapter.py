"""Cohere chat (v2 API) as an LLM, through the official SDK (`cohere.AsyncClientV2`).

`import cohere` below is the SDK, not this module: imports are absolute (this one is `providers.cohere`).
The SDK makes no retries (`max_retries=0`; its chat stream is not resumable, so it never reconnects):
failover, retries and the first-token / total deadlines belong to pipeline/failover.py. The SDK's
`timeout` is one float for everything, so the client gets its own `httpx.AsyncClient` carrying the
connect and read timeouts.

Wire choices (the SDK speaks plain `httpx`; `POST /v2/chat` with `stream: true`, answered as SSE whose
`data:` JSON carries the event's `type`):
- Messages keep their roles (system / user / assistant / tool). An assistant message with tool calls
  carries them as `tool_calls` (arguments a JSON string) with its text as `tool_plan`; a tool message
  is `{role: tool, tool_call_id, content: [{type: text, text}]}`. Tools go as
  `{type: function, function: {name, description, parameters}}`.
- Events: `content-delta` text as it comes (thinking content is skipped); `tool-plan-delta` is not
  spoken; a tool call is assembled from `tool-call-start` / `tool-call-delta` and yielded at
  `tool-call-end`; Usage at `message-end` (billed units, else raw token counts). A stream that ends
  without `message-end` is a retryable connection error; a `message-end` reporting an error (finish
  reason ERROR / TIMEOUT) is a retryable server / timeout error.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import cohere
import httpx
from cohere.core.api_error import ApiError

from switchboard.core.errors import ProviderError, api_key
from switchboard.core.messages import LLMEvent, Message, TextDelta, Tool, ToolCall, Usage
from switchboard.core.settings import VENDOR_KEEPALIVE_S
from switchboard.providers.cohere import KEY_ENV, CohereLLMConfig

__all__ = ["CohereLLM", "provider_error", "to_cohere"]

VENDOR = "cohere"


def provider_error(exc: BaseException, key: str = "") -> ProviderError:
    """Any failure of a Cohere call as a ProviderError; the key never appears in the message."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, ApiError):  # its str() repeats the response headers: keep the status and body
        message = f"status {exc.status_code}: {exc.body}"
    else:
        message = str(exc) or type(exc).__name__
    message = (message.replace(key, "***") if key else message)[:300]
    if isinstance(exc, httpx.TimeoutException):
        return ProviderError(VENDOR, "timeout", message, retryable=True)
    if isinstance(exc, httpx.TransportError):
        return ProviderError(VENDOR, "connection", message, retryable=True)
    status = exc.status_code if isinstance(exc, ApiError) else None
    if status is None:
        return ProviderError(VENDOR, "internal", message)
    if status == 429:
        return ProviderError(VENDOR, "rate_limit", message, retryable=True)
    if status in (401, 403, 498):  # 498: invalid token
        return ProviderError(VENDOR, "auth", message)
    if status >= 500:
        return ProviderError(VENDOR, "server", message, retryable=True)
    return ProviderError(VENDOR, "bad_request", message)


def to_cohere(messages: list[Message]) -> list[dict[str, Any]]:
    """The v2 chat messages for our history."""
    converted: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "tool":
            converted.append(
                {
                    "role": "tool",
                    "tool_call_id": message.tool_call_id or "",
                    "content": [{"type": "text", "text": message.content}],
                }
            )
        elif message.role == "assistant" and message.tool_calls:
            assistant: dict[str, Any] = {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
                    }
                    for call in message.tool_calls
                ],
            }
            if message.content:
                assistant["tool_plan"] = message.content
            converted.append(assistant)
        elif message.content:
            converted.append({"role": message.role, "content": message.content})
    return converted


def _tool(tool: Tool) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
    }


class CohereLLM:
    """Streaming Command replies as TextDelta / ToolCall / Usage."""

    vendor = VENDOR

    def __init__(self, config: CohereLLMConfig) -> None:
        self.model = config.model
        self.max_tokens = config.max_tokens
        self.temperature = config.temperature
        self.timeouts = config.timeouts
        self._key = api_key(VENDOR, config.api_key_env, *KEY_ENV)  # MissingCredential
        endpoint = {"base_url": config.base_url} if config.base_url else {}  # else CO_API_URL or the SDK's
        self._client = cohere.AsyncClientV2(
            api_key=self._key,
            max_retries=0,
            httpx_client=httpx.AsyncClient(
                timeout=httpx.Timeout(config.timeouts.total_s, connect=config.timeouts.connect_s),
                # httpx's default limits, but idle connections kept VENDOR_KEEPALIVE_S (core/settings.py)
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=20,
                                    keepalive_expiry=VENDOR_KEEPALIVE_S),
                follow_redirects=True,
            ),
            **endpoint,
        )

    async def stream(self, messages: list[Message], tools: list[Tool]) -> AsyncIterator[LLMEvent]:
        options: dict[str, Any] = {}
        if tools:
            options["tools"] = [_tool(tool) for tool in tools]
        if self.temperature is not None:
            options["temperature"] = self.temperature
        calls: dict[int, dict[str, str]] = {}  # tool call index -> id, name, arguments so far
        finished = False
        try:
            events = self._client.chat_stream(
                model=self.model,
                messages=to_cohere(messages),  # type: ignore[arg-type]
                max_tokens=self.max_tokens,
                **options,
            )
            async with contextlib.aclosing(events):  # closes the HTTP response on cancel or error
                async for event in events:
                    if event.type == "content-delta":
                        text = _get(event, "delta", "message", "content", "text")
                        if text:
                            yield TextDelta(text)
                    elif event.type == "tool-call-start":
                        call = _get(event, "delta", "message", "tool_calls")
                        calls[event.index or 0] = {
                            "id": call.id,
                            "name": _get(call, "function", "name") or "",
                            "arguments": _get(call, "function", "arguments") or "",
                        }
                    elif event.type == "tool-call-delta" and (event.index or 0) in calls:
                        fragment = _get(event, "delta", "message", "tool_calls", "function", "arguments")
                        calls[event.index or 0]["arguments"] += fragment or ""
                    elif event.type == "tool-call-end" and (event.index or 0) in calls:
                        yield _tool_call(calls.pop(event.index or 0))
                    elif event.type == "message-end":
                        finished = True
                        _raise_for_end(event.delta)
                        yield _usage(_get(event, "delta", "usage"))
        except Exception as exc:
            raise provider_error(exc, self._key) from exc
        if not finished:
            raise ProviderError(VENDOR, "connection", "the stream ended before message-end", retryable=True)


def _get(obj: Any, *names: str) -> Any:
    """obj.a.b.c, or None where a link is missing (every field of the SDK's stream types is optional)."""
    for name in names:
        obj = getattr(obj, name, None)
    return obj


def _raise_for_end(delta: Any) -> None:
    reason, error = _get(delta, "finish_reason"), _get(delta, "error")
    if reason == "TIMEOUT":
        raise ProviderError(VENDOR, "timeout", error or "generation timed out", retryable=True)
    if reason == "ERROR" or error:
        raise ProviderError(VENDOR, "server", error or "generation failed", retryable=True)


def _usage(usage: Any) -> Usage:
    counts = _get(usage, "billed_units") or _get(usage, "tokens")
    return Usage(int(_get(counts, "input_tokens") or 0), int(_get(counts, "output_tokens") or 0))


def _tool_call(call: dict[str, str]) -> ToolCall:
    try:
        arguments = json.loads(call["arguments"] or "{}")
    except json.JSONDecodeError as exc:
        raise ProviderError(
            VENDOR, "bad_request", f"tool {call['name']!r}: arguments are not JSON: {exc}"
        ) from None
    if not isinstance(arguments, dict):
        raise ProviderError(VENDOR, "bad_request", f"tool {call['name']!r}: arguments are not a JSON object")
    return ToolCall(call["id"], call["name"], arguments)
