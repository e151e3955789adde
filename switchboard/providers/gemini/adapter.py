"""Google Gemini (the Gemini Developer API) through the official google-genai SDK.

The wire: POST {base}/v1beta/models/{model}:streamGenerateContent?alt=sse with the key in the
`x-goog-api-key` header; Server-Sent Events of GenerateContentResponse JSON back. Our history becomes
`contents` (roles "user" / "model"; the system prompt goes to `systemInstruction`); an assistant's tool
calls become `functionCall` parts and tool results `functionResponse` parts. Gemini sends a function call
whole, never in fragments.

Limits are ours, not the SDK's: its retries are off (a retry is the fallback's decision); the connection
must open within `timeouts.connect_s`, the first chunk come within `first_token_s` of the request and the
whole stream within `total_s`.

Closing: the SDK's stream is a chain of async generators over one HTTP response, and closing the outer
one (google-genai 3.4) leaves the response open until the event loop ends. So the SDK is given our own
httpx client (`HttpOptions.httpx_async_client`), which notes each response it opens for the stream that
runs in the current task, and `stream()` closes them in its `finally`: a cancelled turn (barge-in), an
error or an early exit drops the connection at once. Connections are still pooled between turns.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from contextvars import ContextVar
from typing import Any

import httpx
from google import genai
from google.genai import errors, types

from switchboard.core.errors import ProviderError, api_key
from switchboard.core.messages import LLMEvent, Message, TextDelta, Tool, ToolCall, Usage
from switchboard.core.settings import VENDOR_KEEPALIVE_S
from switchboard.providers.gemini import KEY_ENV, GeminiLLMConfig

__all__ = ["GeminiLLM"]

VENDOR = "gemini"
_OUR_ID = "gemini-call-"  # ids we made up for calls Gemini sent without one; never sent back


_opened: ContextVar[list[httpx.Response] | None] = ContextVar("gemini_opened", default=None)


class _TrackingClient(httpx.AsyncClient):
    """An httpx client that lists the responses it opens for the stream running in this task, and
    applies `connect_s` (the SDK sets one timeout, in ms, for everything)."""

    def __init__(self, connect_s: float) -> None:
        # httpx's default limits, but idle connections kept VENDOR_KEEPALIVE_S (core/settings.py)
        super().__init__(timeout=None, limits=httpx.Limits(max_connections=100, max_keepalive_connections=20,
                                                           keepalive_expiry=VENDOR_KEEPALIVE_S))
        self.connect_s = connect_s

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        request.extensions["timeout"] = {**request.extensions.get("timeout", {}), "connect": self.connect_s}
        response = await super().send(request, **kwargs)
        opened = _opened.get()
        if opened is not None:
            opened.append(response)
        return response


class GeminiLLM:
    """The LLM interface over Gemini's streamGenerateContent."""

    vendor = VENDOR

    def __init__(self, config: GeminiLLMConfig) -> None:
        self.model = config.model
        self.timeouts = config.timeouts  # the failover holds it to these
        self.config = config
        self._http = _TrackingClient(config.timeouts.connect_s)
        self.client = genai.Client(
            vertexai=False,  # the Developer API even if GOOGLE_GENAI_USE_VERTEXAI is set
            api_key=api_key(VENDOR, config.api_key_env, *KEY_ENV),
            http_options=types.HttpOptions(
                base_url=config.base_url,
                api_version="v1beta",  # pinned: SDK 3.x defaults to v1; v1beta is the documented API
                timeout=int(config.timeouts.total_s * 1000),  # milliseconds; a backstop to ours below
                retry_options=types.HttpRetryOptions(attempts=1),  # one attempt: no retries
                httpx_async_client=self._http,
            ),
        )
        self._ids = itertools.count(1)

    async def aclose(self) -> None:
        """Close pooled connections (at shutdown; the next stream would open new ones)."""
        await self._http.aclose()

    async def stream(self, messages: list[Message], tools: list[Tool]) -> AsyncIterator[LLMEvent]:
        system, contents = to_contents(messages)
        config = types.GenerateContentConfig(
            system_instruction=system or None,
            temperature=self.config.temperature,
            max_output_tokens=self.config.max_tokens,
            tools=[types.Tool(function_declarations=[
                types.FunctionDeclaration(name=t.name, description=t.description,
                                          parameters_json_schema=t.parameters) for t in tools
            ])] if tools else None,
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )
        timeouts = self.config.timeouts
        start = asyncio.get_running_loop().time()
        usage: types.GenerateContentResponseUsageMetadata | None = None
        got_first = finished = False
        opened: list[httpx.Response] = []
        _opened.set(opened)
        try:
            async with asyncio.timeout(timeouts.first_token_s):  # the SDK sends on the first anext()
                chunks = await self.client.aio.models.generate_content_stream(
                    model=self.model, contents=contents, config=config)
            async with aclosing(chunks):
                while True:
                    limit = min(timeouts.total_s if got_first else timeouts.first_token_s, timeouts.total_s)
                    try:
                        async with asyncio.timeout_at(start + limit):
                            chunk = await anext(chunks)
                    except StopAsyncIteration:
                        break
                    got_first = True
                    usage = chunk.usage_metadata or usage
                    candidate = chunk.candidates[0] if chunk.candidates else None
                    if candidate is None:
                        blocked = chunk.prompt_feedback and chunk.prompt_feedback.block_reason
                        if blocked:  # no candidates at all: the prompt itself was refused
                            raise ProviderError(VENDOR, "bad_request", f"prompt blocked: {blocked}")
                        continue
                    finished = finished or candidate.finish_reason is not None
                    for part in candidate.content.parts or [] if candidate.content else []:
                        if part.function_call is not None:
                            call = part.function_call
                            yield ToolCall(id=call.id or f"{_OUR_ID}{next(self._ids)}", name=call.name or "",
                                           arguments=dict(call.args or {}))
                        elif part.text and not part.thought:
                            yield TextDelta(part.text)
        except (errors.APIError, errors.UnknownApiResponseError, TimeoutError, httpx.HTTPError) as exc:
            raise _error(exc) from None
        finally:
            for response in opened:  # a no-op for a stream read to its end
                await response.aclose()
        if not finished:  # the connection closed cleanly but early (a proxy, a crash): not a reply
            raise ProviderError(VENDOR, "connection", "the stream ended before the reply finished", True)
        if usage is not None:
            yield Usage(usage.prompt_token_count or 0, usage.candidates_token_count or 0)


def to_contents(messages: list[Message]) -> tuple[str, list[types.Content]]:
    """(system instruction, contents): roles user/model, tool calls and results as function parts."""
    system = "\n\n".join(m.content for m in messages if m.role == "system" and m.content)
    names = {call.id: call.name for m in messages for call in m.tool_calls}
    contents: list[types.Content] = []
    for m in messages:
        if m.role == "system":
            continue
        if m.role == "tool":
            role, parts = "user", [types.Part(function_response=types.FunctionResponse(
                id=_their_id(m.tool_call_id), name=names.get(m.tool_call_id or "", "unknown"),
                response=_as_object(m.content)))]
        else:
            role = "model" if m.role == "assistant" else "user"
            parts = [types.Part(text=m.content)] if m.content else []
            parts += [types.Part(function_call=types.FunctionCall(
                id=_their_id(c.id), name=c.name, args=c.arguments)) for c in m.tool_calls]
        if not parts:
            continue
        if contents and contents[-1].role == role:  # one turn per role: tool results join in one content
            contents[-1].parts = [*(contents[-1].parts or []), *parts]
        else:
            contents.append(types.Content(role=role, parts=parts))
    return system, contents


def _their_id(call_id: str | None) -> str | None:
    return None if not call_id or call_id.startswith(_OUR_ID) else call_id


def _as_object(content: str) -> dict[str, Any]:
    """A functionResponse's `response` must be a JSON object: a JSON object result as is, else wrapped."""
    try:
        value = json.loads(content)
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {"result": content}


def _error(exc: BaseException) -> ProviderError:
    """The SDK's exception as a ProviderError (message: status and Google's text; never the key)."""
    if isinstance(exc, errors.APIError):
        code, text = exc.code or 0, f"{exc.code} {exc.status or ''}: {exc.message or ''}".strip()
        if code == 429:
            return ProviderError(VENDOR, "rate_limit", text, retryable=True)
        if code in (408, 504):
            return ProviderError(VENDOR, "timeout", text, retryable=True)
        if code >= 500:
            return ProviderError(VENDOR, "server", text, retryable=True)
        if code in (401, 403) or "API_KEY_INVALID" in json.dumps(exc.details, default=str):  # a bad key: 400
            return ProviderError(VENDOR, "auth", text)
        return ProviderError(VENDOR, "bad_request", text)
    if isinstance(exc, (TimeoutError, httpx.TimeoutException)):
        return ProviderError(VENDOR, "timeout", "no answer in time", retryable=True)
    if isinstance(exc, errors.UnknownApiResponseError) or not isinstance(exc, httpx.TransportError):
        return ProviderError(VENDOR, "server", f"unreadable response: {exc}"[:300], retryable=True)
    return ProviderError(VENDOR, "connection", f"{type(exc).__name__}: {exc}", retryable=True)
