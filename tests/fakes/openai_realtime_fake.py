"""A fake of OpenAI's Realtime API (GA): one WebSocket per session at `/v1/realtime?model=…`.

Point the SDK at it with `AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1")`: the SDK turns that into
`ws://127.0.0.1:{port}/v1/realtime?model=…` (openai/resources/realtime/realtime.py `_prepare_url`). The
events are the GA protocol's, as the SDK's types name them (openai>=2: `response.output_audio.delta`,
not the beta's `response.audio.delta`):

client → `session.update`, `input_audio_buffer.append` (base64 audio in the session's input format; the
fake takes `audio/pcmu` and `audio/pcm` at 24 kHz, the only PCM rate the API takes; what it heard is kept
in `caller_audio`, as int16 PCM at the session's rate), `response.create` (optional
`response.instructions`), `response.cancel`,
`conversation.item.create` (a user `input_text` message, or a `function_call_output`),
`conversation.item.truncate` (`item_id`, `content_index`, `audio_end_ms`).

server → `session.created`, `session.updated`, `input_audio_buffer.speech_started` / `speech_stopped`
(its "server VAD": 20 ms frames louder than `SPEECH_LEVEL` are speech; `silence_duration_ms` of quiet
after `MIN_SPEECH_MS` of speech ends it; with `interrupt_response` it cancels the response in flight),
`input_audio_buffer.committed`, `conversation.item.input_audio_transcription.completed` (the script's
transcript), `response.created`, `response.output_item.added`, `response.output_audio.delta` (μ-law
speech-like sound, `ms_per_char` per character, in `delta_ms` pieces),
`response.output_audio_transcript.delta`, `response.function_call_arguments.done`, `response.done`
(status, output, usage with audio and text tokens apart), `conversation.item.truncated`, and `error`
({type, code, message, param, event_id}).

A reply to `response.create` with instructions quoting a line ("Say exactly: \"…\"") speaks that line;
otherwise the next of `script.replies`: a string, or (tool name, arguments) for a function call (any
tool), or (tool name, arguments, preface) to say the preface first in the same response. A reply
string's `{output}` is the output of the last `function_call_output` item it was sent (recorded in
`tool_outputs`): the model speaking its tool's result.
Faults: `reply_delay_s` (the model's fixed latency to its first audio), `error_on_response` (answer the
Nth response.create with an error event: a rate limit), `drop_after_deltas` (close the socket with 1011
after that many audio deltas of the session), `silent` (accept the socket, never say anything),
`refuse` (refuse the next N handshakes; a wrong key is refused too).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from switchboard.audio.g711 import ulaw_decode, ulaw_encode
from tests.fakes.common import Reply, next_reply
from tests.speech import speech_like

RATE = 8000
PCM_RATE = 24000  # `audio/pcm` input: the API takes no other rate
FRAME_MS = 20
SPEECH_LEVEL = 400.0  # mean |sample| of a frame that counts as speech
MIN_SPEECH_MS = 200  # shorter bursts are not speech (a click)


@dataclass
class RealtimeScript:
    """What the fake answers and how it misbehaves; and a record of what it was sent."""

    replies: list[Reply] = field(default_factory=lambda: ["It is noon."])
    transcripts: list[str] = field(default_factory=lambda: ["what time is it"])
    ms_per_char: float = 60.0
    delta_ms: int = 100  # audio per output delta (whole 20 ms frames)
    reply_delay_s: float = 0.0
    delta_delay_s: float = 0.005  # the real API sends audio faster than real time
    api_key: str | None = None  # when set, another bearer token gets an error event and a close
    error_on_response: set[int] = field(default_factory=set)  # 1-based response.create numbers
    drop_after_deltas: int | None = None
    drop_times: int = 1  # how many sessions drop that way
    silent: bool = False
    refuse: int = 0
    # what happened
    sessions: int = 0
    paths: list[str] = field(default_factory=list)  # path?query of each connection
    headers: list[dict[str, str]] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)  # every client event but audio appends
    audio_in_ms: int = 0  # caller audio appended, all sessions
    caller_audio: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (rate, PCM) of each append
    truncations: list[dict[str, Any]] = field(default_factory=list)
    items_audio_ms: dict[str, int] = field(default_factory=dict)  # reply item id -> audio ms sent
    spoken: list[str] = field(default_factory=list)  # the text of each reply's audio, in order
    errors_sent: list[dict[str, Any]] = field(default_factory=list)
    tool_outputs: list[dict[str, Any]] = field(default_factory=list)  # function_call_output items received

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.received if event.get("type") == kind]


def tone(text: str, ms_per_char: float) -> np.ndarray:
    """Audio for a reply: speech-like sound (a voice VADs take for speech, higher than the test caller's),
    `ms_per_char` a character, in whole 20 ms frames."""
    frames = max(1, round(len(text) * ms_per_char / FRAME_MS))
    return speech_like(frames * FRAME_MS / 1000, RATE, f0=220.0, amplitude=7000.0)


class _Session:
    def __init__(self, ws: WebSocket, script: RealtimeScript, ids: itertools.count) -> None:
        self.ws, self.script, self.ids = ws, script, ids
        self.config: dict[str, Any] = {}
        self.response: asyncio.Task | None = None
        self.responses = 0
        self.deltas = 0
        self.audio_ms = 0  # this session's input audio clock
        self.speaking_since: int | None = None  # ms of the first loud frame of a possible utterance
        self.in_speech = False
        self.quiet_ms = 0
        self.pending = np.zeros(0, dtype=np.int16)  # caller audio short of a whole frame
        self.calls: set[str] = set()  # the call ids of this session's function calls
        self.response_audio_ms = 0  # audio of the response under way

    async def send(self, event: dict[str, Any]) -> None:
        event.setdefault("event_id", f"event_{next(self.ids)}")
        await self.ws.send_text(json.dumps(event))

    # --- the server VAD -------------------------------------------------------------------------------

    def detection(self) -> dict[str, Any]:
        audio = self.config.get("audio") or {}
        return (audio.get("input") or {}).get("turn_detection") or {"type": "server_vad"}

    def input_rate(self) -> int:
        audio = self.config.get("audio") or {}
        fmt = (audio.get("input") or {}).get("format") or {}
        return PCM_RATE if fmt.get("type") == "audio/pcm" else RATE

    async def on_audio(self, data: bytes) -> None:
        rate = self.input_rate()
        if rate == RATE:
            pcm = ulaw_decode(data)
        elif len(data) % 2:
            await self.error("invalid_value", "PCM audio must be whole 16-bit samples.", "audio")
            return
        else:
            pcm = np.frombuffer(data, dtype="<i2").astype(np.int16)
        self.script.caller_audio.append((rate, pcm))
        self.pending = np.concatenate([self.pending, pcm])
        frame = rate * FRAME_MS // 1000
        while len(self.pending) >= frame:
            chunk, self.pending = self.pending[:frame], self.pending[frame:]
            self.audio_ms += FRAME_MS
            self.script.audio_in_ms += FRAME_MS
            await self.on_frame(float(np.abs(chunk.astype(np.float64)).mean()) > SPEECH_LEVEL)

    async def on_frame(self, loud: bool) -> None:
        silence_ms = int(self.detection().get("silence_duration_ms", 500))
        if loud:
            self.quiet_ms = 0
            if self.speaking_since is None:
                self.speaking_since = self.audio_ms - FRAME_MS
            if not self.in_speech and self.audio_ms - self.speaking_since >= MIN_SPEECH_MS:
                self.in_speech = True
                await self.speech_started()
            return
        self.quiet_ms += FRAME_MS
        if self.speaking_since is not None and not self.in_speech and self.quiet_ms >= 2 * FRAME_MS:
            self.speaking_since = None  # a click
        if self.in_speech and self.quiet_ms >= silence_ms:
            self.in_speech, self.speaking_since = False, None
            await self.speech_stopped()

    async def speech_started(self) -> None:
        detection = self.detection()
        item = f"item_user{next(self.ids)}"
        await self.send({"type": "input_audio_buffer.speech_started", "audio_start_ms": self.speaking_since,
                         "item_id": item})
        if detection.get("interrupt_response", True) and self.response and not self.response.done():
            self.response.cancel()
            await asyncio.gather(self.response, return_exceptions=True)

    async def speech_stopped(self) -> None:
        item = f"item_user{next(self.ids)}"
        await self.send({"type": "input_audio_buffer.speech_stopped",
                         "audio_end_ms": self.audio_ms - self.quiet_ms, "item_id": item})
        await self.send({"type": "input_audio_buffer.committed", "item_id": item, "previous_item_id": None})
        transcripts = self.script.transcripts
        text = transcripts.pop(0) if len(transcripts) > 1 else (transcripts[0] if transcripts else "")
        await self.send({"type": "conversation.item.input_audio_transcription.completed", "item_id": item,
                         "content_index": 0, "transcript": text,
                         "usage": {"type": "duration", "seconds": 1.0}})
        if self.detection().get("create_response", True):
            await self.start_response(None)

    # --- responses ------------------------------------------------------------------------------------

    async def start_response(self, instructions: str | None) -> None:
        if self.response and not self.response.done():
            await self.error("conversation_already_has_active_response",
                             "Conversation already has an active response in progress.")
            return
        self.responses += 1
        if self.responses in self.script.error_on_response:
            await self.error("rate_limit_exceeded", "Rate limit reached for gpt-realtime in organization "
                             "org-fake on tokens per min (TPM): Limit 40000, Used 40000, Requested 900.")
            return
        outputs = self.script.tool_outputs
        output = str(outputs[-1].get("output")) if outputs else None
        reply = next_reply(instructions, self.script.replies, output)
        self.response = asyncio.create_task(self.respond(reply))

    async def respond(self, reply: Reply) -> None:
        response_id = f"resp_{next(self.ids)}"
        status, output = "completed", []
        self.response_audio_ms = 0
        await self.send({"type": "response.created", "response": {"id": response_id, "object":
                         "realtime.response", "status": "in_progress", "output": []}})
        try:
            await asyncio.sleep(self.script.reply_delay_s)
            if isinstance(reply, tuple):
                name, arguments, *preface = reply
                if preface and not await self.speak(response_id, str(preface[0]), output):
                    return  # the socket was dropped
                item_id, call_id = f"item_{next(self.ids)}", f"call_{next(self.ids)}"
                self.calls.add(call_id)
                item = {"id": item_id, "type": "function_call", "name": name, "call_id": call_id,
                        "arguments": json.dumps(arguments), "status": "completed"}
                await self.send({"type": "response.output_item.added", "response_id": response_id,
                                 "output_index": len(output), "item": {**item, "arguments": ""}})
                await self.send({"type": "response.function_call_arguments.done", "response_id": response_id,
                                 "item_id": item_id, "output_index": len(output), "call_id": call_id,
                                 "name": name, "arguments": item["arguments"]})
                output.append(item)
                return
            await self.speak(response_id, reply, output)
        except asyncio.CancelledError:
            status = "cancelled"
        finally:
            if self.ws.client_state.name == "CONNECTED":
                with contextlib.suppress(Exception):
                    await self.done(response_id, status, output, reply, self.response_audio_ms)

    async def speak(self, response_id: str, reply: str, output: list[Any]) -> bool:
        """One assistant message item of the response, audio and transcript; False if the socket was
        dropped meanwhile (`drop_after_deltas`)."""
        item_id = f"item_{next(self.ids)}"
        message = {"id": item_id, "type": "message", "role": "assistant", "status": "in_progress",
                   "content": []}
        await self.send({"type": "response.output_item.added", "response_id": response_id,
                         "output_index": len(output), "item": message})
        pcm = tone(reply, self.script.ms_per_char)
        self.script.spoken.append(reply)
        step = RATE * self.script.delta_ms // 1000
        words = reply.split(" ")
        audio_ms = 0
        for n, start in enumerate(range(0, len(pcm), step)):
            piece = pcm[start : start + step]
            await self.send({"type": "response.output_audio.delta", "response_id": response_id,
                             "item_id": item_id, "output_index": len(output), "content_index": 0,
                             "delta": base64.b64encode(ulaw_encode(piece)).decode()})
            audio_ms += len(piece) * 1000 // RATE
            self.response_audio_ms += len(piece) * 1000 // RATE
            self.script.items_audio_ms[item_id] = audio_ms
            if n < len(words):
                await self.send({"type": "response.output_audio_transcript.delta", "response_id":
                                 response_id, "item_id": item_id, "output_index": len(output),
                                 "content_index": 0, "delta": (" " if n else "") + words[n]})
            self.deltas += 1
            drop_at = self.script.drop_after_deltas
            if drop_at is not None and self.deltas >= drop_at and self.script.drop_times > 0:
                self.script.drop_times -= 1
                await self.ws.close(code=1011, reason="internal error")
                return False
            await asyncio.sleep(self.script.delta_delay_s)
        rest = " ".join(words[len(range(0, len(pcm), step)):])
        if rest:
            await self.send({"type": "response.output_audio_transcript.delta", "response_id":
                             response_id, "item_id": item_id, "output_index": len(output), "content_index": 0,
                             "delta": " " + rest})
        await self.send({"type": "response.output_audio.done", "response_id": response_id,
                         "item_id": item_id, "output_index": len(output), "content_index": 0})
        output.append({"id": item_id, "type": "message", "role": "assistant", "status": "completed",
                       "content": [{"type": "output_audio", "transcript": reply}]})
        return True

    async def done(self, response_id: str, status: str, output: list[Any], reply: Reply,
                   audio_ms: int) -> None:
        text_out = len(str(reply).split())
        audio_out = audio_ms // 50  # ~20 audio tokens per second, as the real API counts them
        audio_in = self.audio_ms // 100
        usage = {"total_tokens": 120 + audio_in + text_out + audio_out, "input_tokens": 120 + audio_in,
                 "output_tokens": text_out + audio_out,
                 "input_token_details": {"text_tokens": 120, "audio_tokens": audio_in, "image_tokens": 0,
                                         "cached_tokens": 0},
                 "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out}}
        await self.send({"type": "response.done", "response": {
            "id": response_id, "object": "realtime.response", "status": status, "output": output,
            "status_details": {"type": status, "reason": "turn_detected"} if status == "cancelled" else None,
            "usage": usage}})

    async def error(self, code: str, message: str, param: str | None = None,
                    event_id: str | None = None) -> None:
        body = {"type": "invalid_request_error", "code": code, "message": message, "param": param,
                "event_id": event_id}
        self.script.errors_sent.append(body)
        await self.send({"type": "error", "error": body})

    # --- client events --------------------------------------------------------------------------------

    async def handle(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "input_audio_buffer.append":
            await self.on_audio(base64.b64decode(event["audio"]))
            return
        self.script.received.append(event)
        if kind == "session.update":
            session = event.get("session") or {}
            fmt = ((session.get("audio") or {}).get("input") or {}).get("format") or {}
            if fmt.get("type") not in (None, "audio/pcmu", "audio/pcm") or (
                    fmt.get("type") == "audio/pcm" and fmt.get("rate", PCM_RATE) != PCM_RATE):
                await self.error("invalid_value", f"This fake takes audio/pcmu or 24 kHz audio/pcm input, "
                                 f"got {fmt!r}.", "session.audio.input.format", event.get("event_id"))
                return
            self.config.update(session)
            await self.send({"type": "session.updated", "session": {"id": "sess_fake", **self.config}})
        elif kind == "response.create":
            await self.start_response((event.get("response") or {}).get("instructions"))
        elif kind == "response.cancel":
            if self.response and not self.response.done():
                self.response.cancel()
        elif kind == "conversation.item.create":
            item = {"id": f"item_{next(self.ids)}", **(event.get("item") or {})}
            if item.get("type") == "function_call":  # replayed history: its output may follow
                self.calls.add(str(item.get("call_id")))
            if item.get("type") == "function_call_output":
                if item.get("call_id") not in self.calls:
                    await self.error("invalid_value", f"No function call with id {item.get('call_id')!r}.",
                                     "item.call_id", event.get("event_id"))
                    return
                self.script.tool_outputs.append(item)
            await self.send({"type": "conversation.item.added", "previous_item_id": None, "item": item})
        elif kind == "conversation.item.truncate":
            self.script.truncations.append(event)
            item_id, end = event.get("item_id"), event.get("audio_end_ms")
            sent = self.script.items_audio_ms.get(item_id)
            if sent is None or not isinstance(end, int) or end > sent:
                await self.error("invalid_value", f"Audio content of {sent}ms is shorter than {end}ms.",
                                 "audio_end_ms", event.get("event_id"))
                return
            await self.send({"type": "conversation.item.truncated", "item_id": item_id, "content_index": 0,
                             "audio_end_ms": end})
        else:
            await self.error("invalid_value", f"Invalid value: '{kind}'. This fake does not speak it.",
                             "type", event.get("event_id"))


def make_app(script: RealtimeScript) -> Starlette:
    ids = itertools.count(1)

    async def realtime(ws: WebSocket) -> None:
        script.paths.append(f"{ws.url.path}?{ws.url.query}")
        script.headers.append(dict(ws.headers))
        bearer = ws.headers.get("authorization")
        wrong_key = script.api_key is not None and bearer != f"Bearer {script.api_key}"
        if script.refuse > 0 or wrong_key:  # as the real API: the handshake is refused
            script.refuse -= 0 if wrong_key else 1
            await ws.close(code=1008)  # before accept: uvicorn answers the upgrade with HTTP 403
            return
        await ws.accept()
        script.sessions += 1
        if script.silent:
            with contextlib.suppress(WebSocketDisconnect):
                while True:
                    await ws.receive_text()
            return
        session = _Session(ws, script, ids)
        await session.send({"type": "session.created", "session": {"id": "sess_fake", "type": "realtime",
                                                                     "model": ws.query_params.get("model")}})
        try:
            while True:
                await session.handle(json.loads(await ws.receive_text()))
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            if session.response is not None:
                session.response.cancel()
                await asyncio.gather(session.response, return_exceptions=True)

    async def health(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[WebSocketRoute("/v1/realtime", realtime), Route("/health", health)])
