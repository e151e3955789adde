"""A fake of OpenAI's HTTP API: streamed chat completions, transcriptions and streamed speech.

Serve `make_app(faults, script)` with `server.running` and point the SDK at
`base_url=f"http://127.0.0.1:{port}/v1"`. The wire formats are OpenAI's own:

POST /v1/chat/completions      `stream: true` only. SSE `data: {chat.completion.chunk}` lines: a role
                               delta, one content delta per word (of `reply`, or `respond(body)`),
                               then each scripted tool call as a
                               first fragment (index, id, type, function.name, arguments "") and argument
                               fragments of `argument_chars` characters, a chunk with `finish_reason`,
                               the usage chunk (empty `choices`) when `stream_options.include_usage`,
                               and `data: [DONE]`.
POST /v1/audio/transcriptions  multipart form; `file` must be a 16 kHz mono PCM16 WAV of >= 0.1 s (else
                               400 like the real API); answers {"text": script.transcript}.
POST /v1/audio/speech          JSON; `response_format` must be "pcm"; streams raw 24 kHz PCM16 LE: a tone
                               `ms_per_char` long per input character (divided by `speed`), in chunks of
                               `speech_chunk_bytes` bytes (odd by default, so samples straddle chunks).

Errors use OpenAI's body {"error": {"message", "type", "param", "code"}}. Faults apply to every route;
`cut_after_events` and `event_delay_s` count streamed chunks (SSE events, or PCM chunks).
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.common import Faults, error_response, sse, stream

SPEECH_RATE = 24000
TRANSCRIBE_RATE = 16000

_ERRORS: dict[int, tuple[str, str, str | None]] = {  # status -> message, type, code (as OpenAI sends)
    400: ("Invalid request.", "invalid_request_error", None),
    401: ("Incorrect API key provided: sk-fa***ke. You can find your API key at "
          "https://platform.openai.com/account/api-keys.", "invalid_request_error", "invalid_api_key"),
    403: ("Project does not have access to this model.", "invalid_request_error", "model_not_found"),
    404: ("The model does not exist or you do not have access to it.", "invalid_request_error",
          "model_not_found"),
    429: ("Rate limit reached for requests per min (RPM): Limit 3, Used 3, Requested 1. "
          "Please try again in 20s.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request. Sorry about that!", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}


def openai_error(status: int, message: str | None = None, code: str | None = None) -> Response:
    default_message, kind, default_code = _ERRORS.get(status, ("Error.", "server_error", None))
    body = {"error": {"message": message or default_message, "type": kind, "param": None,
                      "code": code or default_code}}
    return error_response(status, body)


@dataclass
class OpenAIScript:
    """What the fake answers, and a record of what it produced."""

    reply: str = "Hello there. How can I help you today?"
    tool_calls: list[tuple[str, dict[str, Any] | str]] = field(default_factory=list)  # name, args (str: raw)
    argument_chars: int = 6  # tool call arguments are streamed in fragments this long
    end_early_after: int | None = None  # close the stream cleanly (no finish, no [DONE]) after N events
    transcript: str = "what time is it"
    transcribe: Callable[[np.ndarray], str] | None = None  # 16 kHz PCM -> text, instead of `transcript`
    ms_per_char: float = 50.0  # speech length per input character
    speech_chunk_bytes: int = 4801
    api_key: str | None = None  # when set, any other bearer token gets a 401
    after_tool_result: str | None = None  # when set: the reply, without tool calls, to a tool result
    # when set: the reply to each chat request, from its body (several callers of one fake: a bot, an LLM
    # caller and a judge); None falls back to `reply`
    respond: Callable[[dict[str, Any]], str | None] | None = None
    # what happened
    chunks_sent: list[list[dict[str, Any]]] = field(default_factory=list)  # per chat stream, parsed chunks
    uploads: list[dict[str, Any]] = field(default_factory=list)  # per transcription: the WAV's format
    speech_sent: list[np.ndarray] = field(default_factory=list)  # per speech stream sent to the end

    def speech(self, text: str, speed: float = 1.0) -> np.ndarray:
        n = round(len(text) * self.ms_per_char / 1000 / speed * SPEECH_RATE)
        t = np.arange(n) / SPEECH_RATE
        return (np.sin(2 * np.pi * 220 * t) * 8000).astype(np.int16)


def make_app(faults: Faults, script: OpenAIScript) -> Starlette:
    async def admit(request: Request, body: dict[str, Any]) -> Response | None:
        """Record the request; the error response it gets, if any (after the first-byte delay)."""
        faults.paths.append(request.url.path)
        faults.headers.append(dict(request.headers))
        faults.requests.append(body)
        n = len(faults.requests)  # this request's number (others may come in while it waits)
        if delay_s := faults.delay_s(n):
            await asyncio.sleep(delay_s)
        if script.api_key is not None and request.headers.get("authorization") != f"Bearer {script.api_key}":
            return openai_error(401)
        if faults.should_fail(n):
            return openai_error(faults.status or 500)
        return None

    async def chat_completions(request: Request) -> Response:
        body = await request.json()
        if (error := await admit(request, body)) is not None:
            return error
        if body.get("stream") is not True:
            return openai_error(400, "This fake only streams: send stream=true.")
        usage_wanted = bool((body.get("stream_options") or {}).get("include_usage"))
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": body["model"], "system_fingerprint": "fp_fake"}

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return {**base, "choices": [choice], **({"usage": None} if usage_wanted else {})}

        reply, tool_calls = script.reply, script.tool_calls
        if script.respond is not None and (answer := script.respond(body)) is not None:
            reply = answer
        if script.after_tool_result is not None and (body.get("messages") or [{}])[-1].get("role") == "tool":
            reply, tool_calls = script.after_tool_result, []  # a model that has its result answers
        chunks = [chunk({"role": "assistant", "content": "", "refusal": None})]
        words = reply.split(" ") if reply else []
        chunks += [chunk({"content": word if n == 0 else " " + word}) for n, word in enumerate(words)]
        for index, (name, arguments) in enumerate(tool_calls):
            text = arguments if isinstance(arguments, str) else json.dumps(arguments)
            first = {"index": index, "id": f"call_fake{index}", "type": "function",
                     "function": {"name": name, "arguments": ""}}
            chunks.append(chunk({"tool_calls": [first]}))
            step = script.argument_chars
            for start in range(0, len(text), step):
                fragment = {"index": index, "function": {"arguments": text[start : start + step]}}
                chunks.append(chunk({"tool_calls": [fragment]}))
        chunks.append(chunk({}, "tool_calls" if tool_calls else "stop"))
        if usage_wanted:
            prompt_tokens = sum(len(str(m.get("content") or "").split()) for m in body["messages"])
            completion_tokens = len(words) + sum(len(str(a)) // 4 for _, a in tool_calls)
            chunks.append({**base, "choices": [], "usage": {
                "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                              "accepted_prediction_tokens": 0,
                                              "rejected_prediction_tokens": 0}}})
        events = [sse(c) for c in chunks] + [sse("[DONE]")]
        if script.end_early_after is not None:
            events = events[: script.end_early_after]
        script.chunks_sent.append(chunks)
        return stream(faults, events)

    async def transcriptions(request: Request) -> Response:
        async with request.form() as form:
            fields: dict[str, Any] = {k: v for k, v in form.multi_items() if not isinstance(v, UploadFile)}
            upload = form.get("file")
            data = await upload.read() if isinstance(upload, UploadFile) else None
            if isinstance(upload, UploadFile):
                fields["file"] = {"filename": upload.filename, "content_type": upload.content_type,
                                  "bytes": len(data or b"")}
        if (error := await admit(request, fields)) is not None:
            return error
        if data is None:
            return openai_error(400, "you must provide a file", "missing_file")
        try:
            with wave.open(io.BytesIO(data)) as wav:
                info = {"sample_rate": wav.getframerate(), "channels": wav.getnchannels(),
                        "sample_width": wav.getsampwidth(), "frames": wav.getnframes()}
                pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        except (wave.Error, EOFError) as exc:
            return openai_error(400, f"Invalid file format ({exc}). Supported formats: flac, m4a, mp3, "
                                     "mp4, mpeg, mpga, oga, ogg, wav, webm", "invalid_value")
        info["duration_s"] = info["frames"] / info["sample_rate"]
        script.uploads.append(info)
        if (info["sample_rate"], info["channels"], info["sample_width"]) != (TRANSCRIBE_RATE, 1, 2):
            return openai_error(400, f"fake: expected 16 kHz mono PCM16, got {info}", "invalid_value")
        if info["duration_s"] < 0.1:
            return openai_error(400, "Audio file is too short. Minimum audio length is 0.1 seconds.",
                                "audio_too_short")
        text = script.transcribe(pcm) if script.transcribe is not None else script.transcript
        return JSONResponse({"text": text})

    async def speech(request: Request) -> Response:
        body = await request.json()
        if (error := await admit(request, body)) is not None:
            return error
        if body.get("response_format") != "pcm":
            return openai_error(400, "This fake only speaks response_format=pcm.")
        pcm = script.speech(body["input"], float(body.get("speed", 1.0)))
        raw = pcm.astype("<i2").tobytes()
        size = script.speech_chunk_bytes
        chunks = [raw[start : start + size] for start in range(0, len(raw), size)]
        return stream(faults, chunks, media_type="audio/pcm", on_done=lambda: script.speech_sent.append(pcm))

    return Starlette(routes=[
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
        Route("/v1/audio/speech", speech, methods=["POST"]),
    ])
