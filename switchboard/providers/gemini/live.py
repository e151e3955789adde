"""Gemini Live through google-genai's live client (`client.aio.live.connect`): BidiGenerateContent.

The caller's 8 kHz audio goes up as 16 kHz PCM (`realtimeInput.audio`, `audio/pcm;rate=16000`) through
the half-band filter (audio/resample.py: 3 ms, each frame sent with its own audio), and the model's 24 kHz
PCM comes back resampled to 8 kHz by a soxr stream per session; a wideband
call's session (`connect(rate=16000)`: a browser caller) is sent the carrier's own 16 kHz copy as is, so the
model hears what an 8 kHz line loses. Gemini's automatic activity detection ends the caller's turn and
interrupts the model when they talk over it (`serverContent.interrupted`). What Gemini does not offer:
cancelling a reply (`cancel` is a no-op: its own VAD stops the reply when the caller speaks) and truncating
the reply to what the caller heard (`truncate` is a no-op: the server keeps what it generated). `respond` is
a user turn with `turnComplete` (there is no response.create). Tools: `setup.tools[].functionDeclarations`;
the server's `toolCall` is answered by one `toolResponse` (the model then goes on by itself), and a
`toolCallCancellation` withdraws calls the caller talked over. The SDK connects to `wss://<base_url
host>/ws/...` whatever the scheme, so a fake must speak TLS (the tests trust its certificate via
SSL_CERT_FILE).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from google import genai
from google.genai import errors, types
from websockets.exceptions import ConnectionClosed

from switchboard.audio.resample import StreamResampler, line_resampler
from switchboard.core.carrier import LINE_RATE
from switchboard.core.errors import ProviderError, api_key
from switchboard.core.messages import Message, Tool
from switchboard.core.realtime import (
    BotAudio,
    BotText,
    CallerSpeechStarted,
    CallerTranscript,
    RealtimeEvent,
    RealtimeUsage,
    ResponseDone,
    SessionExpiring,
    ToolRequest,
    ToolsCancelled,
)
from switchboard.providers.gemini import KEY_ENV, GeminiLiveConfig

VENDOR = "gemini"
IN_RATE, OUT_RATE = 16000, 24000
SENSITIVITY = {"start": {"high": types.StartSensitivity.START_SENSITIVITY_HIGH,
                         "low": types.StartSensitivity.START_SENSITIVITY_LOW},
               "end": {"high": types.EndSensitivity.END_SENSITIVITY_HIGH,
                       "low": types.EndSensitivity.END_SENSITIVITY_LOW}}


def live_config(config: GeminiLiveConfig, instructions: str, tools: list[Tool]) -> types.LiveConnectConfig:
    detection = types.AutomaticActivityDetection(
        disabled=False,
        start_of_speech_sensitivity=SENSITIVITY["start"].get(config.start_of_speech_sensitivity or ""),
        end_of_speech_sensitivity=SENSITIVITY["end"].get(config.end_of_speech_sensitivity or ""),
        prefix_padding_ms=config.prefix_padding_ms,
        silence_duration_ms=config.silence_duration_ms,
    )
    voice = types.VoiceConfig(prebuilt_voice_config=types.PrebuiltVoiceConfig(voice_name=config.voice))
    transcription = types.AudioTranscriptionConfig() if config.transcription else None
    declarations = [types.FunctionDeclaration(name=tool.name, description=tool.description,
                                              parameters_json_schema=tool.parameters) for tool in tools]
    return types.LiveConnectConfig(
        response_modalities=[types.Modality.AUDIO],
        system_instruction=instructions or None,
        speech_config=types.SpeechConfig(voice_config=voice),
        temperature=config.temperature,
        tools=[types.Tool(function_declarations=declarations)] if declarations else None,
        realtime_input_config=types.RealtimeInputConfig(automatic_activity_detection=detection),
        input_audio_transcription=transcription,
        output_audio_transcription=transcription,
    )


class GeminiLive:
    """A pipeline's Gemini Live model: one session per call (and per reconnection)."""

    vendor = VENDOR
    input_rates = (LINE_RATE, IN_RATE)

    def __init__(self, config: GeminiLiveConfig) -> None:
        self.config = config
        self.model = config.model
        self.timeouts = config.timeouts
        self.session_limit_s: float | None = config.session_limit_s
        self._key = api_key(VENDOR, config.api_key_env, *KEY_ENV)
        self.client = genai.Client(
            vertexai=False, api_key=self._key,
            http_options=types.HttpOptions(base_url=config.base_url, api_version="v1beta"),
        )

    async def connect(self, instructions: str, tools: list[Tool], history: list[Message] | None = None,
                      rate: int = LINE_RATE) -> GeminiLiveConnection:
        if rate not in self.input_rates:
            raise ValueError(f"Gemini Live sessions take caller audio at {self.input_rates} Hz, not {rate}")
        manager = self.client.aio.live.connect(model=self.model, config=live_config(self.config, instructions,
                                                                                     tools))
        try:
            async with asyncio.timeout(self.timeouts.connect_s):
                session = await manager.__aenter__()
        except TimeoutError:
            raise ProviderError(VENDOR, "timeout", f"the Live socket did not open within "
                                f"{self.timeouts.connect_s:g} s", retryable=True) from None
        except Exception as exc:
            raise _error(exc, self._key) from exc
        connection = GeminiLiveConnection(manager, session, self._key, rate)
        turns = _replayed(history or [])
        if turns:
            await connection.call(session.send_client_content(turns=turns, turn_complete=False))
        return connection


def _replayed(history: list[Message]) -> list[types.Content]:
    """The conversation so far, for a reopened session, as text turns. A tool round is replayed as a
    note of what each call returned (Live takes no function parts here), so the model does not call
    again what it already did (book a second table)."""
    names = {call.id: call.name for m in history for call in m.tool_calls}
    turns = []
    for m in history:
        if m.role in ("user", "assistant") and m.content:
            turns.append(types.Content(role="user" if m.role == "user" else "model",
                                       parts=[types.Part(text=m.content)]))
        elif m.role == "tool":
            name = names.get(m.tool_call_id or "", "a tool")
            turns.append(types.Content(role="user", parts=[types.Part(
                text=f"(Already done, do not repeat it: your {name} call returned {m.content})")]))
    return turns


class GeminiLiveConnection:
    """One Live session, in the events of core/realtime.py."""

    def __init__(self, manager: Any, session: Any, key: str, rate: int = LINE_RATE) -> None:
        self._manager, self._session, self._key = manager, session, key
        # the caller's audio up to 16 kHz (None: a wideband call's, already at 16 kHz): the half-band
        # filter, which holds nothing back (soxr's stream held 10-118 ms of the caller's speech)
        self._up = line_resampler(rate, IN_RATE) if rate != IN_RATE else None
        self._down = StreamResampler(OUT_RATE, LINE_RATE)
        self._tool_names: dict[str, str] = {}
        # calls the model waits on: a turnComplete meanwhile ends the calling turn, not the reply
        self._awaiting: set[str] = set()
        self._turns = 0
        self._heard = ""  # the caller's words so far this turn (input transcription comes in pieces)
        self._usage: RealtimeUsage | None = None
        self._closing = False

    async def call(self, request: Any) -> None:
        try:
            await request
        except Exception as exc:
            raise _error(exc, self._key) from exc

    async def send_audio(self, pcm: np.ndarray) -> None:
        wideband = self._up.process(pcm) if self._up is not None else pcm
        if len(wideband):
            blob = types.Blob(data=wideband.astype("<i2").tobytes(), mime_type=f"audio/pcm;rate={IN_RATE}")
            await self.call(self._session.send_realtime_input(audio=blob))

    async def send_text(self, text: str) -> None:
        content = types.Content(role="user", parts=[types.Part(text=text)])
        await self.call(self._session.send_client_content(turns=[content], turn_complete=False))

    async def respond(self, instructions: str | None = None) -> None:
        turns = [types.Content(role="user", parts=[types.Part(text=instructions)])] if instructions else None
        await self.call(self._session.send_client_content(turns=turns, turn_complete=True))

    async def cancel(self) -> None:
        """Gemini has no cancel: its activity detection stops the reply when the caller speaks."""

    async def truncate(self, item_id: str, audio_end_ms: int) -> None:
        """Gemini has no truncation: the server keeps the whole reply in its context."""

    async def tool_result(self, call_id: str, output: str) -> None:
        await self.tool_results([(call_id, output)])

    async def tool_results(self, results: list[tuple[str, str]]) -> None:
        """One `toolResponse` with every call's `functionResponses` (id, name, {output}): the model goes on
        by itself once it has them (there is no response.create)."""
        responses = [types.FunctionResponse(id=call_id, name=self._tool_names.get(call_id, ""),
                                            response={"output": output}) for call_id, output in results]
        self._awaiting.difference_update(call_id for call_id, _ in results)
        await self.call(self._session.send_tool_response(function_responses=responses))

    async def say_aside(self, instructions: str) -> bool:
        """Gemini Live has no response outside the conversation (and a turn sent while its tool call
        waits would be answered instead of the call)."""
        return False

    async def tools_cancelled(self, call_ids: list[str]) -> None:
        """Nothing to send: Gemini cancels a call itself when it hears the caller (`toolCallCancellation`),
        and the caller's next turn supersedes a round it did not hear cut."""
        self._awaiting.difference_update(call_ids)

    async def events(self) -> AsyncIterator[RealtimeEvent]:
        try:
            while not self._closing:
                async for message in self._session.receive():
                    for event in self._convert(message):
                        yield event
        except (ConnectionClosed, errors.APIError, OSError) as exc:
            if self._closing:
                return
            raise _error(exc, self._key) from exc

    def _convert(self, message: types.LiveServerMessage) -> list[RealtimeEvent]:
        out: list[RealtimeEvent] = []
        if message.go_away is not None:
            out.append(SessionExpiring())
        if message.usage_metadata is not None:
            self._usage = _usage(message.usage_metadata)
        if message.tool_call_cancellation is not None:
            cancelled = list(message.tool_call_cancellation.ids or [])
            self._awaiting.difference_update(cancelled)
            out.append(ToolsCancelled(cancelled))
        if message.tool_call is not None:
            tail = self._down.flush()  # what it held of audio said before the call: heard before the wait
            if len(tail):
                out.append(BotAudio(tail, f"turn{self._turns}"))
            for call in message.tool_call.function_calls or []:
                call_id = call.id or f"call{len(self._tool_names) + 1}"
                self._tool_names[call_id] = call.name or ""
                self._awaiting.add(call_id)
                out.append(ToolRequest(call_id, call.name or "", dict(call.args or {})))
            out.append(ResponseDone("completed", self._take_usage()))  # the model waits for the result
        content = message.server_content
        if content is None:
            return out
        if content.input_transcription is not None and content.input_transcription.text:
            self._heard += content.input_transcription.text
        if content.interrupted:
            self._down.flush()  # what it held of the cut reply is never played
            out += [CallerSpeechStarted(), ResponseDone("cancelled", self._take_usage())]
            return out
        item = f"turn{self._turns}"
        if content.model_turn is not None:
            if self._heard:
                out.append(CallerTranscript(self._heard.strip()))
                self._heard = ""
            for part in content.model_turn.parts or []:
                if part.inline_data is not None and part.inline_data.data:
                    pcm = np.frombuffer(part.inline_data.data, dtype="<i2").astype(np.int16)
                    out.append(BotAudio(self._down.process(pcm), item))
        if content.output_transcription is not None and content.output_transcription.text:
            out.append(BotText(content.output_transcription.text, item))
        if content.turn_complete:
            tail = self._down.flush()
            if len(tail):
                out.append(BotAudio(tail, item))
            self._turns += 1
            if not self._awaiting:  # else it ends the turn that called the tools (some models send it):
                out.append(ResponseDone("completed", self._take_usage()))  # the reply goes on after them
        return out

    def _take_usage(self) -> RealtimeUsage | None:
        usage, self._usage = self._usage, None
        return usage

    async def close(self) -> None:
        self._closing = True
        with contextlib.suppress(Exception):
            await self._manager.__aexit__(None, None, None)


def _usage(metadata: types.UsageMetadata) -> RealtimeUsage:
    def by_modality(details: list[types.ModalityTokenCount] | None, modality: types.MediaModality) -> int:
        return sum(each.token_count or 0 for each in details or [] if each.modality == modality)

    audio, text = types.MediaModality.AUDIO, types.MediaModality.TEXT
    return RealtimeUsage(
        text_in=by_modality(metadata.prompt_tokens_details, text),
        audio_in=by_modality(metadata.prompt_tokens_details, audio),
        text_out=by_modality(metadata.response_tokens_details, text),
        audio_out=by_modality(metadata.response_tokens_details, audio),
    )


def _error(exc: BaseException, key: str) -> ProviderError:
    message = (str(exc) or type(exc).__name__).replace(key, "***")[:300]
    if isinstance(exc, ConnectionClosed):
        code = exc.rcvd.code if exc.rcvd is not None else 1006
        return ProviderError(VENDOR, "connection", f"the Live socket closed ({code})", retryable=True)
    if isinstance(exc, errors.APIError):
        kind = "rate_limit" if exc.code == 429 else "auth" if exc.code in (401, 403) else "connection"
        return ProviderError(VENDOR, kind, message, retryable=kind != "auth")
    if isinstance(exc, OSError):
        return ProviderError(VENDOR, "connection", f"{type(exc).__name__}: {message}", retryable=True)
    return ProviderError(VENDOR, "internal", f"{type(exc).__name__}: {message}")
