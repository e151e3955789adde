"""OpenAI speech to text, chat and text to speech through the official SDK (`openai.AsyncOpenAI`).

`base_url` points any stage at another server speaking the same API: vLLM, Ollama, llama.cpp, a proxy,
or the test fake. The SDK makes no retries (`max_retries=0`): failover and retries belong to the call's
resilience wrapper, which also enforces the first-token and total deadlines; the client only carries the
connect and overall timeouts.

Wire choices (the `openai` 3.x SDK sends exactly what is passed, over `httpx2`):
- STT uploads a 16 kHz mono PCM16 WAV as multipart `file`, `response_format=json`. Under 0.1 s of audio
  no request is made (the API answers 400 `audio_too_short`); the transcript is then empty.
- LLM streams chat completions with `stream_options.include_usage`, so the last chunk (empty `choices`)
  carries the usage. The output bound goes as `max_completion_tokens` to OpenAI itself (its newer
  models reject `max_tokens`) and as `max_tokens` when `base_url` is set: every OpenAI-compatible server
  accepts that one, while some ignore or reject `max_completion_tokens`. The request goes through the
  client's generic `post` (the SDK's way to any endpoint) and the chunks are read as the JSON objects
  the API documents: `chat.completions.create` first walks the whole body against its typed parameters
  (a no-op for these plain JSON bodies: tests/test_openai.py checks) and builds a typed model of every
  chunk: ~1.4 ms of CPU for a 3-message request, 13 ms for 41 messages, and ~0.1 ms per chunk, on the
  event loop every call's audio shares.
- TTS streams raw 24 kHz little-endian PCM16 (`response_format=pcm`) and yields it as it arrives.
"""

from __future__ import annotations

import io
import json
import os
import wave
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx2
import numpy as np
import openai

from switchboard.core.errors import ProviderError, api_key
from switchboard.core.messages import LLMEvent, Message, TextDelta, Tool, ToolCall, Transcript, Usage
from switchboard.core.settings import VENDOR_KEEPALIVE_S, VendorConfig
from switchboard.providers.openai import KEY_ENV, OpenAILLMConfig, OpenAISTTConfig, OpenAITTSConfig

__all__ = ["OpenAILLM", "OpenAISTT", "OpenAITTS", "provider_error"]

VENDOR = "openai"
STT_RATE = 16000
TTS_RATE = 24000
MIN_AUDIO_S = 0.1  # the API rejects shorter uploads with 400 audio_too_short
# the SDK's own limits, with idle connections kept VENDOR_KEEPALIVE_S (core/settings.py) instead of 5 s
LIMITS = httpx2.Limits(max_connections=1000, max_keepalive_connections=100,
                       keepalive_expiry=VENDOR_KEEPALIVE_S)


def _needs_key(config: VendorConfig) -> bool:
    """OpenAI itself needs a key; a local OpenAI-compatible server (Ollama, vLLM...) often has none."""
    host = urlsplit(config.base_url).hostname if config.base_url else "api.openai.com"
    return bool(config.api_key_env) or host is None or host.endswith("openai.com")


def _client(config: VendorConfig) -> tuple[openai.AsyncOpenAI, str]:
    if _needs_key(config):
        key = api_key(VENDOR, config.api_key_env, *KEY_ENV)  # MissingCredential: a start-up error
    else:
        key = os.environ.get(KEY_ENV[0]) or "no-key"  # the SDK insists on some value
    client = openai.AsyncOpenAI(
        api_key=key,
        base_url=config.base_url,
        max_retries=0,
        timeout=openai.Timeout(config.timeouts.total_s, connect=config.timeouts.connect_s),
        http_client=openai.DefaultAsyncHttpxClient(limits=LIMITS),
    )
    return client, key


def provider_error(exc: BaseException, key: str = "") -> ProviderError:
    """Any failure of an OpenAI call as a ProviderError; the key never appears in the message."""
    if isinstance(exc, ProviderError):
        return exc
    # APIStatusError reads "Error code: 429 - <the body's message>"; "Connection error." gets its cause.
    status = exc.status_code if isinstance(exc, openai.APIStatusError) else None
    message = str(exc) or type(exc).__name__
    if exc.__cause__ is not None and isinstance(exc, openai.APIConnectionError):
        message += f" ({type(exc.__cause__).__name__}: {exc.__cause__})"
    message = (message.replace(key, "***") if key else message)[:300]
    if isinstance(exc, (openai.APITimeoutError, httpx2.TimeoutException)):
        return ProviderError(VENDOR, "timeout", message, retryable=True)
    if isinstance(exc, (openai.APIConnectionError, httpx2.TransportError)):
        return ProviderError(VENDOR, "connection", message, retryable=True)
    if status == 429:
        return ProviderError(VENDOR, "rate_limit", message, retryable=True)
    if status in (401, 403):
        return ProviderError(VENDOR, "auth", message)
    if isinstance(status, int) and status >= 500:
        return ProviderError(VENDOR, "server", message, retryable=True)
    if isinstance(status, int) and status >= 400:
        return ProviderError(VENDOR, "bad_request", message)
    if isinstance(exc, openai.APIError):  # an error event inside an otherwise good stream
        return ProviderError(VENDOR, "server", message, retryable=True)
    return ProviderError(VENDOR, "internal", message)


def _wav(pcm: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.asarray(pcm, dtype="<i2").tobytes())
    return buffer.getvalue()


class OpenAISTT:
    """Transcription of one utterance (16 kHz mono WAV upload)."""

    vendor = VENDOR
    sample_rate = STT_RATE
    wideband = True  # a browser call's own 16 kHz, not its 8 kHz upsampled: the model hears the full band

    def __init__(self, config: OpenAISTTConfig) -> None:
        self.model = config.model
        self.timeouts = config.timeouts  # the failover holds it to these
        self.language, self.prompt = config.language, config.prompt
        self._client, self._key = _client(config)

    async def warm(self) -> None:
        """Nothing to build: the HTTP client connects on the first request."""

    async def transcribe(self, pcm: np.ndarray) -> Transcript:
        if len(pcm) < MIN_AUDIO_S * self.sample_rate:
            return Transcript("")
        options: dict[str, Any] = {}
        if self.language:
            options["language"] = self.language
        if self.prompt:
            options["prompt"] = self.prompt
        try:
            result = await self._client.audio.transcriptions.create(
                model=self.model,
                file=("utterance.wav", _wav(pcm, self.sample_rate), "audio/wav"),
                response_format="json",
                **options,
            )
        except Exception as exc:
            raise provider_error(exc, self._key) from exc
        return Transcript(result.text.strip())


def _message(message: Message) -> dict[str, Any]:
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    if message.role == "assistant" and message.tool_calls:
        converted: dict[str, Any] = {"role": "assistant", "tool_calls": [
            {"id": call.id, "type": "function",
             "function": {"name": call.name, "arguments": json.dumps(call.arguments)}}
            for call in message.tool_calls
        ]}
        if message.content:
            converted["content"] = message.content
        return converted
    return {"role": message.role, "content": message.content}


def _tool(tool: Tool) -> dict[str, Any]:
    return {"type": "function",
            "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters}}


class OpenAILLM:
    """Streaming chat completions, from OpenAI or any server speaking its API (`base_url`)."""

    vendor = VENDOR

    def __init__(self, config: OpenAILLMConfig) -> None:
        self.model = config.model
        self.timeouts = config.timeouts  # the failover holds it to these
        self.temperature = config.temperature
        # OpenAI's own API: max_completion_tokens (newer models reject max_tokens); compatible servers:
        # max_tokens (all accept it; some ignore or reject max_completion_tokens).
        limit = "max_tokens" if config.base_url else "max_completion_tokens"
        self._limit = {limit: config.max_tokens}
        self._client, self._key = _client(config)

    async def stream(self, messages: list[Message], tools: list[Tool]) -> AsyncIterator[LLMEvent]:
        options: dict[str, Any] = dict(self._limit)
        if tools:
            options["tools"] = [_tool(tool) for tool in tools]
        if self.temperature is not None:
            options["temperature"] = self.temperature
        calls: dict[int, dict[str, str]] = {}  # index -> id, name, arguments so far
        finished = False
        body = {"model": self.model, "messages": [_message(m) for m in messages], "stream": True,
                "stream_options": {"include_usage": True}, **options}
        try:
            response = await self._client.post("/chat/completions", body=body, cast_to=object, stream=True,
                                               stream_cls=openai.AsyncStream[object])
            async with response:  # closes the HTTP response however we leave, cancellation included
                async for chunk in response:
                    usage = chunk.get("usage")
                    if usage:
                        finished = True
                        yield Usage(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)
                    for choice in (chunk.get("choices") or ())[:1]:
                        delta = choice.get("delta") or {}
                        if delta.get("content"):
                            yield TextDelta(delta["content"])
                        for part in delta.get("tool_calls") or ():
                            call = calls.setdefault(part.get("index", 0),
                                                    {"id": "", "name": "", "arguments": ""})
                            call["id"] = part.get("id") or call["id"]
                            function = part.get("function") or {}
                            call["name"] = call["name"] or function.get("name") or ""
                            call["arguments"] += function.get("arguments") or ""
                        if choice.get("finish_reason") is not None:
                            finished = True
                            for index in sorted(calls):
                                yield _tool_call(calls.pop(index))
        except Exception as exc:
            raise provider_error(exc, self._key) from exc
        if not finished:
            raise ProviderError(VENDOR, "connection", "the stream ended before its last chunk",
                                retryable=True)


def _tool_call(call: dict[str, str]) -> ToolCall:
    try:
        arguments = json.loads(call["arguments"] or "{}")
    except json.JSONDecodeError:
        arguments = None
    if not isinstance(arguments, dict):
        raise ProviderError(VENDOR, "bad_request",
                            f"tool {call['name']!r}: arguments are not a JSON object")
    return ToolCall(call["id"], call["name"], arguments)


class OpenAITTS:
    """Speech streamed as raw 24 kHz PCM16, yielded chunk by chunk as the bytes arrive."""

    vendor = VENDOR
    sample_rate = TTS_RATE

    def __init__(self, config: OpenAITTSConfig) -> None:
        self.model, self.voice, self.speed = config.model, config.voice, config.speed
        self.timeouts = config.timeouts  # the failover holds it to these
        self.instructions = config.instructions
        self._client, self._key = _client(config)

    async def stream(self, text: str) -> AsyncIterator[np.ndarray]:
        if not text.strip():
            return
        options: dict[str, Any] = {"instructions": self.instructions} if self.instructions else {}
        carry = b""  # an odd trailing byte waits for the next chunk
        try:
            async with self._client.audio.speech.with_streaming_response.create(
                model=self.model, voice=self.voice, input=text, response_format="pcm", speed=self.speed,
                **options,
            ) as response:
                async for data in response.iter_bytes():
                    data = carry + data
                    even = len(data) - len(data) % 2
                    carry = data[even:]
                    if even:
                        yield np.frombuffer(data[:even], dtype="<i2").astype(np.int16)
        except Exception as exc:
            raise provider_error(exc, self._key) from exc
