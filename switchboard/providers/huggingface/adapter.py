"""Hugging Face: Inference Providers (a model id) or a TGI / Inference Endpoint (`base_url`), through the
official huggingface_hub SDK (`AsyncInferenceClient.chat_completion`).

The wire is OpenAI's chat completions: POST .../v1/chat/completions with `stream: true`, Server-Sent Events
of `chat.completion.chunk` JSON ending with `data: [DONE]`. Without `base_url` the request goes to the
router (https://router.huggingface.co/v1/chat/completions, or .../{inference_provider}/v1/... when a
provider is named); with `base_url` the SDK posts to {base_url}/v1/chat/completions (a URL already ending
in /v1 or /chat/completions is kept) and `inference_provider` does not apply. Tool-call arguments arrive in
fragments (accumulated by index) or, from TGI, as one JSON object.

The token is HF_TOKEN (or `api_key_env`). It is required for Hugging Face's own hosts — the router, an
Inference Endpoint (*.huggingface.cloud) — and optional for any other `base_url` (a self-hosted TGI usually
has no auth); naming `api_key_env` always makes it required. Without one the SDK sends whatever `hf auth
login` stored, if anything.

Closing: the SDK keeps a streamed response open on the client until the client is closed, so each stream
gets its own `AsyncInferenceClient` (cheap), closed in a `finally`: a cancelled turn (barge-in) or an
error drops the connection at once. Those clients share one pooled HTTP client, so turns reuse connections.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import httpx2
from huggingface_hub import AsyncInferenceClient, get_async_session
from huggingface_hub.errors import HfHubHTTPError, OverloadedError, TextGenerationError, ValidationError

from switchboard.core.errors import ProviderError, api_key
from switchboard.core.messages import LLMEvent, Message, TextDelta, Tool, ToolCall, Usage
from switchboard.providers.huggingface import KEY_ENV, HuggingFaceLLMConfig

__all__ = ["HuggingFaceLLM"]

VENDOR = "huggingface"
_HF_HOSTS = ("huggingface.co", "hf.co", "huggingface.cloud")
_INCLUDE_USAGE: Any = {"include_usage": True}  # a final chunk with the token counts


class _Client(AsyncInferenceClient):
    """One stream's client over a shared HTTP client. (Without this override — a private method — every
    client would make its own httpx2 client: a new TLS context, ~35 ms of loop time, and no reuse.)"""

    def __init__(self, http: httpx2.AsyncClient, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._shared_http = http

    async def _get_async_client(self) -> httpx2.AsyncClient:
        return self._shared_http


class HuggingFaceLLM:
    """The LLM interface over chat completions from Inference Providers or a TGI server."""

    vendor = VENDOR

    def __init__(self, config: HuggingFaceLLMConfig) -> None:
        self.model = config.model
        self.timeouts = config.timeouts  # the failover holds it to these
        self.config = config
        self.token: str | None = None
        if config.api_key_env or not config.base_url or _is_hf_host(config.base_url):
            self.token = api_key(VENDOR, config.api_key_env, *KEY_ENV)
        self._http: tuple[asyncio.AbstractEventLoop, httpx2.AsyncClient] | None = None
        self._ids = itertools.count(1)

    async def _pooled(self) -> httpx2.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._http is None or self._http[0] is not loop:  # connections belong to one loop
            http = await asyncio.to_thread(get_async_session)  # its TLS setup takes ~35 ms: off the loop
            if self._http is None or self._http[0] is not loop:
                self._http = (loop, http)
            else:  # another stream made one meanwhile
                await http.aclose()
        return self._http[1]

    async def aclose(self) -> None:
        """Close pooled connections (at shutdown; the next stream would open new ones)."""
        if self._http is not None:
            http, self._http = self._http[1], None
            await http.aclose()

    async def stream(self, messages: list[Message], tools: list[Tool]) -> AsyncIterator[LLMEvent]:
        cfg, timeouts = self.config, self.config.timeouts
        client = _Client(
            await self._pooled(),
            model=None if cfg.base_url else cfg.model, base_url=cfg.base_url,
            provider=None if cfg.base_url else cfg.inference_provider,  # type: ignore[arg-type]
            token=self.token,
            timeout=httpx2.Timeout(timeouts.total_s, connect=timeouts.connect_s),  # type: ignore[arg-type]
        )
        functions: Any = [{"type": "function", "function": {
            "name": t.name, "description": t.description, "parameters": t.parameters}} for t in tools]
        start = asyncio.get_running_loop().time()
        calls: dict[int, _PartialCall] = {}
        usage: Usage | None = None
        finished = False
        try:
            async with asyncio.timeout(timeouts.first_token_s):
                chunks: Any = await client.chat_completion(
                    to_openai(messages), model=cfg.model, stream=True, max_tokens=cfg.max_tokens,
                    temperature=cfg.temperature, stream_options=_INCLUDE_USAGE,
                    tools=functions or None, tool_choice="auto" if functions else None,
                )
            got_first = False
            while True:
                limit = min(timeouts.total_s if got_first else timeouts.first_token_s, timeouts.total_s)
                try:
                    async with asyncio.timeout_at(start + limit):
                        chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                got_first = True
                if chunk.usage:
                    usage = Usage(chunk.usage.prompt_tokens or 0, chunk.usage.completion_tokens or 0)
                for choice in chunk.choices or []:
                    finished = finished or bool(choice.finish_reason)
                    delta = choice.delta
                    if delta is None:
                        continue
                    for part in delta.tool_calls or []:
                        calls.setdefault(part.index or 0, _PartialCall()).add(part)
                    if delta.content:
                        yield TextDelta(delta.content)
        except (HfHubHTTPError, TextGenerationError, TimeoutError, httpx2.TransportError, ValueError) as exc:
            raise _error(exc) from None
        finally:
            await client.close()  # closes the response (a no-op for a stream read to its end)
        if not finished:  # [DONE] or the connection's end came before any finish_reason: a cut stream
            raise ProviderError(VENDOR, "connection", "the stream ended before the reply finished", True)
        for index in sorted(calls):
            yield calls[index].tool_call(f"hf-call-{next(self._ids)}")
        if usage is not None:
            yield usage


@dataclass
class _PartialCall:
    """A tool call streamed in pieces: id and name once, arguments as string fragments or one object."""

    id: str = ""
    name: str = ""
    fragments: list[str] = field(default_factory=list)
    whole: dict[str, Any] | None = None

    def add(self, part: Any) -> None:
        self.id = self.id or part.id or ""
        function = part.function
        if function is None:
            return
        self.name = self.name or function.name or ""
        if isinstance(function.arguments, dict):  # TGI sends the arguments as an object
            self.whole = function.arguments
        elif function.arguments:
            self.fragments.append(function.arguments)

    def tool_call(self, fallback_id: str) -> ToolCall:
        if self.whole is not None:
            arguments: Any = self.whole
        else:
            text = "".join(self.fragments).strip() or "{}"
            try:
                arguments = json.loads(text)
            except ValueError:
                raise ProviderError(VENDOR, "server", f"tool call {self.name!r}: arguments are not JSON",
                                    retryable=True) from None
        if not isinstance(arguments, dict):
            raise ProviderError(VENDOR, "server", f"tool call {self.name!r}: arguments are not an object",
                                retryable=True)
        return ToolCall(id=self.id or fallback_id, name=self.name, arguments=arguments)


def to_openai(messages: list[Message]) -> list[dict[str, Any]]:
    """Our history as OpenAI chat messages (system / user / assistant with tool_calls / tool)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        item: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.role == "assistant" and m.tool_calls:
            item["tool_calls"] = [{"id": c.id, "type": "function",
                                   "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
                                  for c in m.tool_calls]
            if not m.content:
                del item["content"]
        if m.role == "tool":
            item["tool_call_id"] = m.tool_call_id
        out.append(item)
    return out


def _is_hf_host(url: str) -> bool:
    host = (urlparse(url).hostname or "").lower()
    return any(host == h or host.endswith("." + h) for h in _HF_HOSTS)


def _error(exc: BaseException) -> ProviderError:
    """The SDK's exception as a ProviderError (status and the server's text; never the token)."""
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        code = exc.response.status_code
        text = f"{code}: {exc.server_message or str(exc).splitlines()[0]}"  # the server's words, or the SDK's
        if code == 429:
            return ProviderError(VENDOR, "rate_limit", text, retryable=True)
        if code in (408, 504):
            return ProviderError(VENDOR, "timeout", text, retryable=True)
        if code >= 500:
            return ProviderError(VENDOR, "server", text, retryable=True)
        if code in (401, 403):
            return ProviderError(VENDOR, "auth", text)
        return ProviderError(VENDOR, "bad_request", text)
    if isinstance(exc, (TimeoutError, httpx2.TimeoutException)):  # ours, and the SDK's InferenceTimeoutError
        return ProviderError(VENDOR, "timeout", "no answer in time", retryable=True)
    if isinstance(exc, httpx2.TransportError):
        return ProviderError(VENDOR, "connection", f"{type(exc).__name__}: {exc}", retryable=True)
    if isinstance(exc, ValidationError):  # an error event in the stream (TGI)
        return ProviderError(VENDOR, "bad_request", str(exc))
    if isinstance(exc, OverloadedError):
        return ProviderError(VENDOR, "rate_limit", str(exc), retryable=True)
    if isinstance(exc, TextGenerationError):
        return ProviderError(VENDOR, "server", f"{type(exc).__name__}: {exc}", retryable=True)
    return ProviderError(VENDOR, "bad_request", f"{type(exc).__name__}: {exc}")  # the SDK's ValueErrors
