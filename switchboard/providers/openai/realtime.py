"""OpenAI Realtime through the official SDK's realtime client (`AsyncOpenAI.realtime.connect`).

The session takes and gives G.711 μ-law (`audio/pcmu`) at 8 kHz: the carrier's own format, so the caller's
audio goes to OpenAI and the model's comes back without resampling (the call engine speaks int16 PCM at
8 kHz; μ-law → PCM → μ-law is bit-exact). A wideband call's session (`connect(rate=16000)`: a browser
caller) takes the caller's 16 kHz audio as 24 kHz PCM instead (`audio/pcm`, the only other rate the API
takes), one soxr stream per session, so the model hears what an 8 kHz line loses; its replies still come
as μ-law. `base_url` `http://host/v1` makes the SDK connect to
`ws://host/v1/realtime?model=…` (the test fake). The SDK's own reconnection is off (no `on_reconnecting`):
the call engine reconnects once itself, with the conversation replayed, and otherwise apologises.
Server events are read as the API's JSON (`recv_bytes`, both public SDK calls, as `send_raw` for the
caller's audio): the SDK's typed model of an event costs ~70 µs against ~3 µs for the JSON, and a
speaking bot's audio deltas come tens of times a second per call.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import openai
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

from switchboard.audio.g711 import ulaw_decode, ulaw_encode
from switchboard.audio.resample import StreamResampler
from switchboard.core.carrier import LINE_RATE
from switchboard.core.errors import ProviderError
from switchboard.core.messages import Message, Tool
from switchboard.core.realtime import (
    BotAudio,
    BotText,
    CallerSpeechStarted,
    CallerSpeechStopped,
    CallerTranscript,
    RealtimeEvent,
    RealtimeUsage,
    ResponseDone,
    ToolRequest,
    VendorError,
)
from switchboard.providers.openai import OpenAIRealtimeConfig
from switchboard.providers.openai.adapter import VENDOR, _client, provider_error

AUDIO_FORMAT = {"type": "audio/pcmu"}  # G.711 μ-law, 8 kHz: what Twilio sends and plays
WIDE_RATE, PCM_RATE = 2 * LINE_RATE, 24000  # a browser call's caller audio, the API's PCM
WIDE_FORMAT = {"type": "audio/pcm", "rate": PCM_RATE}  # a wideband call's caller audio
CANCELLED = "Cancelled: the caller spoke before the result came; nothing is known about the outcome."
AUDIO_DELTAS = ("response.output_audio.delta", "response.audio.delta")  # GA name, then the beta's


def session_settings(config: OpenAIRealtimeConfig, instructions: str, tools: list[Tool],
                     rate: int = LINE_RATE) -> dict[str, Any]:
    """The `session.update` body for a pipeline's section (`rate`: the caller audio's, 8 or 16 kHz)."""
    detection = config.turn_detection.model_dump(exclude_none=True)
    detection.update(create_response=True, interrupt_response=True)
    audio_in: dict[str, Any] = {"format": AUDIO_FORMAT if rate == LINE_RATE else WIDE_FORMAT,
                                "turn_detection": detection}
    if config.transcription_model:
        transcription = {"model": config.transcription_model}
        if config.language:
            transcription["language"] = config.language
        audio_in["transcription"] = transcription
    session: dict[str, Any] = {
        "type": "realtime",
        "model": config.model,
        "instructions": instructions,
        "output_modalities": ["audio"],
        "audio": {"input": audio_in, "output": {"format": AUDIO_FORMAT, "voice": config.voice}},
        "tools": [{"type": "function", "name": tool.name, "description": tool.description,
                   "parameters": tool.parameters} for tool in tools],
        "tool_choice": "auto",
    }
    if config.max_output_tokens is not None:
        session["max_output_tokens"] = config.max_output_tokens
    return session


def _history_items(message: Message) -> list[dict[str, Any]]:
    """A message of the call's history as conversation items: words, a tool call, a tool's result."""
    if message.role == "tool":
        return [{"type": "function_call_output", "call_id": message.tool_call_id, "output": message.content}]
    items: list[dict[str, Any]] = []
    if message.role in ("user", "assistant") and message.content:
        kind = "input_text" if message.role == "user" else "output_text"
        items.append({"type": "message", "role": message.role,
                      "content": [{"type": kind, "text": message.content}]})
    items += [{"type": "function_call", "call_id": call.id, "name": call.name,
               "arguments": json.dumps(call.arguments)} for call in message.tool_calls]
    return items


class OpenAIRealtime:
    """A pipeline's OpenAI Realtime model: opens one session per call (and per reconnection)."""

    vendor = VENDOR
    input_rates = (LINE_RATE, WIDE_RATE)

    def __init__(self, config: OpenAIRealtimeConfig) -> None:
        self.config = config
        self.model = config.model
        self.timeouts = config.timeouts
        self.session_limit_s: float | None = config.session_limit_s
        self._client, self._key = _client(config)

    async def connect(self, instructions: str, tools: list[Tool], history: list[Message] | None = None,
                      rate: int = LINE_RATE) -> OpenAIRealtimeConnection:
        if rate not in self.input_rates:
            raise ValueError(f"OpenAI Realtime takes caller audio at {self.input_rates} Hz, not {rate}")
        try:
            async with asyncio.timeout(self.timeouts.connect_s):
                connection = await self._client.realtime.connect(model=self.model).enter()
        except TimeoutError:
            raise ProviderError(VENDOR, "timeout", f"the Realtime socket did not open within "
                                f"{self.timeouts.connect_s:g} s", retryable=True) from None
        except Exception as exc:
            raise _error(exc, self._key) from exc
        opened = OpenAIRealtimeConnection(connection, self._key, rate)
        await opened.setup(session_settings(self.config, instructions, tools, rate), history or [])
        return opened


class OpenAIRealtimeConnection:
    """One Realtime session: the SDK's connection, in the events of core/realtime.py."""

    def __init__(self, connection: Any, key: str, rate: int = LINE_RATE) -> None:
        self._connection = connection
        self._key = key
        self._closing = False
        # a wideband call's caller audio, 16 kHz → the API's 24 kHz PCM (None: μ-law at 8 kHz)
        self._up = StreamResampler(rate, PCM_RATE) if rate != LINE_RATE else None

    async def setup(self, session: dict[str, Any], history: list[Message]) -> None:
        await self._send({"type": "session.update", "session": session})
        for message in history:
            for item in _history_items(message):
                await self._send({"type": "conversation.item.create", "item": item})

    async def _send(self, event: dict[str, Any]) -> None:
        try:
            await self._connection.send(event)
        except Exception as exc:
            raise _error(exc, self._key) from exc

    async def send_audio(self, pcm: np.ndarray) -> None:
        if self._up is None:
            payload = ulaw_encode(pcm)
        else:
            payload = self._up.process(pcm).astype("<i2", copy=False).tobytes()
            if not payload:
                return  # soxr holds the first few ms back: they come with the next frame
        audio = base64.b64encode(payload).decode("ascii")
        try:  # 50 a second per call: the raw JSON, without the SDK's per-event type transform
            await self._connection.send_raw(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
        except Exception as exc:
            raise _error(exc, self._key) from exc

    async def send_text(self, text: str) -> None:
        await self._send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}})

    async def respond(self, instructions: str | None = None) -> None:
        event: dict[str, Any] = {"type": "response.create"}
        if instructions:
            event["response"] = {"instructions": instructions}
        await self._send(event)

    async def cancel(self) -> None:
        await self._send({"type": "response.cancel"})

    async def truncate(self, item_id: str, audio_end_ms: int) -> None:
        await self._send({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                          "audio_end_ms": audio_end_ms})

    async def tool_result(self, call_id: str, output: str) -> None:
        await self._send({"type": "conversation.item.create",
                          "item": {"type": "function_call_output", "call_id": call_id, "output": output}})

    async def tool_results(self, results: list[tuple[str, str]]) -> None:
        """Each output as a `function_call_output` item, then `response.create`: the model does not answer
        a function call's output by itself."""
        for call_id, output in results:
            await self.tool_result(call_id, output)
        await self.respond()

    async def say_aside(self, instructions: str) -> bool:
        """An out-of-band response (`conversation: "none"`): spoken, never added to the conversation."""
        await self._send({"type": "response.create", "response": {  # words only: it must not call a tool
            "conversation": "none", "instructions": instructions, "output_modalities": ["audio"],
            "tool_choice": "none"}})
        return True

    async def tools_cancelled(self, call_ids: list[str]) -> None:
        """An output for each (no reply asked): a function call left without one confuses the model's next
        turn, and the caller's words that cut the round are answered by its turn detection."""
        for call_id in call_ids:
            await self.tool_result(call_id, CANCELLED)

    async def events(self) -> AsyncIterator[RealtimeEvent]:
        try:
            while True:
                try:  # the raw message: the SDK's typed event costs ~70 µs each, 50 audio deltas a second
                    raw = await self._connection.recv_bytes()
                except ConnectionClosedOK:
                    break
                converted = _convert(json.loads(raw))
                if converted is not None:
                    yield converted
        except (ConnectionClosed, openai.OpenAIError, OSError, ValueError) as exc:
            if self._closing:
                return
            raise _error(exc, self._key) from exc
        if not self._closing:  # a clean close we did not ask for still ends the session mid-call
            raise ProviderError(VENDOR, "connection", "the Realtime socket was closed by the server",
                                retryable=True)

    async def close(self) -> None:
        self._closing = True
        try:
            await self._connection.close()
        except Exception:  # already gone
            pass


def _error(exc: BaseException, key: str) -> ProviderError:
    if isinstance(exc, ConnectionClosed):
        code = exc.rcvd.code if exc.rcvd is not None else 1006
        reason = exc.rcvd.reason if exc.rcvd is not None and exc.rcvd.reason else "no reason given"
        return ProviderError(VENDOR, "connection", f"the Realtime socket closed ({code}: {reason})",
                             retryable=True)
    if isinstance(exc, OSError):
        return ProviderError(VENDOR, "connection", f"{type(exc).__name__}: {exc}", retryable=True)
    return provider_error(exc, key)


def _usage(usage: dict[str, Any] | None) -> RealtimeUsage | None:
    if not usage:
        return None
    given_in, given_out = usage.get("input_token_details"), usage.get("output_token_details")
    return RealtimeUsage(
        text_in=(given_in.get("text_tokens") or 0) if given_in else (usage.get("input_tokens") or 0),
        audio_in=(given_in.get("audio_tokens") or 0) if given_in else 0,
        text_out=(given_out.get("text_tokens") or 0) if given_out else (usage.get("output_tokens") or 0),
        audio_out=(given_out.get("audio_tokens") or 0) if given_out else 0,
    )


def _convert(event: dict[str, Any]) -> RealtimeEvent | None:
    """One server event (the API's JSON) as ours; None for those the call does not need."""
    kind = event.get("type")
    if kind in AUDIO_DELTAS:
        return BotAudio(ulaw_decode(base64.b64decode(event["delta"])), event.get("item_id") or "")
    if kind == "response.output_audio_transcript.delta":
        return BotText(event.get("delta") or "", event.get("item_id") or "")
    if kind == "input_audio_buffer.speech_started":
        return CallerSpeechStarted()
    if kind == "input_audio_buffer.speech_stopped":
        return CallerSpeechStopped()
    if kind == "conversation.item.input_audio_transcription.completed":
        return CallerTranscript(event.get("transcript") or "")
    if kind == "response.function_call_arguments.done":
        try:
            arguments = json.loads(event.get("arguments") or "{}")
        except ValueError:
            arguments = {}
        return ToolRequest(event.get("call_id") or "", event.get("name") or "",
                           arguments if isinstance(arguments, dict) else {})
    if kind == "response.done":
        response = event.get("response") or {}
        error_details = (response.get("status_details") or {}).get("error")
        error = None
        if error_details:
            what = error_details.get("code") or error_details.get("type")
            error = f"{what}: {error_details.get('message') or ''}"
        return ResponseDone(response.get("status") or "completed", _usage(response.get("usage")), error)
    if kind == "error":
        error_body = event.get("error") or {}
        return VendorError(error_body.get("message") or "", error_body.get("code"))
    return None
