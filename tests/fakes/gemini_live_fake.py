"""A fake of Gemini Live: the BidiGenerateContent WebSocket, over TLS (the SDK only dials `wss://`).

`serving(script)` yields (port, path of its self-signed certificate): point the SDK at
`base_url=https://127.0.0.1:{port}` with `SSL_CERT_FILE` set to that path (google-genai builds its
WebSocket SSL context from SSL_CERT_FILE). The wire is the Developer API's JSON (camelCase):

client (keys in camelCase or snake_case, as protobuf JSON allows) → `setup` (model, generationConfig
with responseModalities/speechConfig, systemInstruction, tools,
realtimeInputConfig.automaticActivityDetection, input/outputAudioTranscription), then
`realtimeInput.audio` ({data: base64 PCM16, mimeType: "audio/pcm;rate=16000"}), `clientContent`
({turns, turnComplete}) and `toolResponse` ({functionResponses: [{id, name, response}]}).

server → `setupComplete`, `serverContent` with `inputTranscription`, `modelTurn.parts[].inlineData`
(24 kHz PCM16, speech-like, `ms_per_char` a character, in `chunk_ms` pieces), `outputTranscription`,
`interrupted` (its activity detection heard the caller over a reply), `generationComplete`,
`turnComplete`; `usageMetadata` (prompt/response token details by modality); `toolCall`
({functionCalls: [{id, name, args}]}). Its activity detection: 20 ms frames louder than SPEECH_LEVEL,
`silenceDurationMs` (default 500) of quiet ends the caller's turn, after MIN_SPEECH_MS of speech.
A `clientContent` with turnComplete answers: a quoted line in its text is spoken as is, else the next
of `replies` (a string, or (tool name, args) for a `toolCall`, or (tool name, args, preface) to say
the preface first). A `toolResponse` is recorded in
`tool_responses` and answered (the real model goes on by itself) by the next of `replies`, whose
`{output}` is the first function response's `response.output`; unless a `clientContent` with
turnComplete follows within `AFTER_TOOL_S` (end_call's farewell prompt), which is answered instead. The
caller talking while a tool call has no response yet gets `toolCallCancellation` ({ids}).
`drop_after_chunks` closes the socket with 1011 mid-reply; `go_away_after_turns` sends
`goAway` ({timeLeft}) once, after that many complete replies of a session; `go_away_when_caller_speaks`
once, as the caller starts talking.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import ipaddress
import itertools
import json
import re
import socket
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from tests.fakes.common import Reply, next_reply
from tests.speech import speech_like

IN_RATE, OUT_RATE = 16000, 24000
FRAME_MS = 20
SPEECH_LEVEL = 400.0
MIN_SPEECH_MS = 200
AFTER_TOOL_S = 0.05
STRUCTS = {"parametersJsonSchema", "parameters", "args", "response"}


@dataclass
class LiveScript:
    replies: list[Reply] = field(default_factory=lambda: ["It is noon."])
    transcripts: list[str] = field(default_factory=lambda: ["what time is it"])
    ms_per_char: float = 60.0
    chunk_ms: int = 100
    reply_delay_s: float = 0.0
    chunk_delay_s: float = 0.005
    api_key: str | None = None
    drop_after_chunks: int | None = None
    go_away_after_turns: int | None = None  # send goAway once this many replies are complete
    go_away_when_caller_speaks: bool = False  # send goAway once, as its VAD hears the caller start
    turn_complete_after_tool_call: bool = False  # as some Live models do: the calling turn ends at once
    # what happened
    sessions: int = 0
    paths: list[str] = field(default_factory=list)
    setups: list[dict[str, Any]] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)  # every message but audio
    audio_in_ms: int = 0
    audio_rates: set[str] = field(default_factory=set)
    caller_audio: list[np.ndarray] = field(default_factory=list)  # the PCM of each realtimeInput.audio
    spoken: list[str] = field(default_factory=list)
    interruptions: int = 0
    tool_responses: list[dict[str, Any]] = field(default_factory=list)  # each toolResponse received
    cancellations: list[list[str]] = field(default_factory=list)  # the ids of each toolCallCancellation


class _Session:
    def __init__(self, ws: WebSocket, script: LiveScript, setup: dict[str, Any]) -> None:
        self.ws, self.script, self.setup = ws, script, setup
        self.reply: asyncio.Task | None = None
        self.pending = b""
        self.audio_ms = 0
        self.speaking_since: int | None = None
        self.in_speech = False
        self.quiet_ms = 0
        self.chunks = 0
        self.turns_done = 0
        self.ids = itertools.count(1)
        self.open_calls: list[str] = []  # tool call ids with no response yet
        self.after_tool: asyncio.Task | None = None  # the answer to a toolResponse, about to start

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_text(json.dumps(message))

    def silence_ms(self) -> int:
        detection = (self.setup.get("realtimeInputConfig") or {}).get("automaticActivityDetection") or {}
        return int(detection.get("silenceDurationMs") or 500)

    async def on_audio(self, audio: dict[str, Any]) -> None:
        self.script.audio_rates.add(audio.get("mimeType", ""))
        data = audio["data"]  # the SDK sends URL-safe base64 without padding; protobuf JSON takes either
        data = base64.urlsafe_b64decode(data.replace("+", "-").replace("/", "_") + "=" * (-len(data) % 4))
        self.script.caller_audio.append(np.frombuffer(data, dtype="<i2").astype(np.int16))
        self.pending += data
        frame = IN_RATE * FRAME_MS // 1000 * 2
        while len(self.pending) >= frame:
            chunk, self.pending = self.pending[:frame], self.pending[frame:]
            self.audio_ms += FRAME_MS
            self.script.audio_in_ms += FRAME_MS
            level = float(np.abs(np.frombuffer(chunk, dtype="<i2").astype(np.float64)).mean())
            await self.on_frame(level > SPEECH_LEVEL)

    async def on_frame(self, loud: bool) -> None:
        if loud:
            self.quiet_ms = 0
            if self.speaking_since is None:
                self.speaking_since = self.audio_ms - FRAME_MS
            if not self.in_speech and self.audio_ms - self.speaking_since >= MIN_SPEECH_MS:
                self.in_speech = True
                if self.script.go_away_when_caller_speaks:
                    self.script.go_away_when_caller_speaks = False  # once
                    await self.send({"goAway": {"timeLeft": "50s"}})
                if self.open_calls:
                    ids, self.open_calls = self.open_calls, []
                    self.script.cancellations.append(ids)
                    await self.send({"toolCallCancellation": {"ids": ids}})
                if self.reply is not None and not self.reply.done():
                    self.reply.cancel()
                    await asyncio.gather(self.reply, return_exceptions=True)
                    self.script.interruptions += 1
                    await self.send({"serverContent": {"interrupted": True}})
            return
        self.quiet_ms += FRAME_MS
        if self.speaking_since is not None and not self.in_speech and self.quiet_ms >= 2 * FRAME_MS:
            self.speaking_since = None
        if self.in_speech and self.quiet_ms >= self.silence_ms():
            self.in_speech, self.speaking_since = False, None
            transcripts = self.script.transcripts
            text = transcripts.pop(0) if len(transcripts) > 1 else (transcripts[0] if transcripts else "")
            for word in text.split(" "):  # the transcription comes in pieces
                await self.send({"serverContent": {"inputTranscription": {"text": word + " "}}})
            self.answer(None)

    def answer(self, prompt: str | None, output: str | None = None) -> None:
        if self.reply is not None and not self.reply.done():
            return
        self.reply = asyncio.create_task(self.speak(next_reply(prompt, self.script.replies, output)))

    async def speak(self, reply: Reply) -> None:
        await asyncio.sleep(self.script.reply_delay_s)
        if isinstance(reply, tuple):
            name, args, *preface = reply
            if preface and await self.audio(str(preface[0])) is None:
                return  # the socket was dropped
            call_id = f"fc_{next(self.ids)}"
            self.open_calls.append(call_id)
            await self.send({"toolCall": {"functionCalls": [{"id": call_id, "name": name, "args": args}]}})
            if self.script.turn_complete_after_tool_call:
                await self.send({"serverContent": {"turnComplete": True}})
            return
        pcm = await self.audio(reply)
        if pcm is None:
            return
        audio_tokens = len(pcm) * 25 // OUT_RATE  # ~25 tokens a second
        await self.send({"serverContent": {"generationComplete": True}})
        await self.send({"usageMetadata": {
            "promptTokenCount": 100 + self.audio_ms // 40, "responseTokenCount": audio_tokens,
            "totalTokenCount": 100 + self.audio_ms // 40 + audio_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 100},
                                    {"modality": "AUDIO", "tokenCount": self.audio_ms // 40}],
            "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": audio_tokens}]}})
        await self.send({"serverContent": {"turnComplete": True}})
        self.turns_done += 1
        if self.turns_done == self.script.go_away_after_turns:
            self.script.go_away_after_turns = None  # once
            await self.send({"goAway": {"timeLeft": "50s"}})

    async def audio(self, reply: str) -> np.ndarray | None:
        """The reply's audio and transcript pieces; None if the socket was dropped (`drop_after_chunks`)."""
        self.script.spoken.append(reply)
        frames = max(1, round(len(reply) * self.script.ms_per_char / FRAME_MS))
        pcm = speech_like(frames * FRAME_MS / 1000, OUT_RATE, f0=220.0, amplitude=7000.0)
        step = OUT_RATE * self.script.chunk_ms // 1000
        words = reply.split(" ")
        for n, start in enumerate(range(0, len(pcm), step)):
            data = base64.b64encode(pcm[start : start + step].astype("<i2").tobytes()).decode()
            await self.send({"serverContent": {"modelTurn": {"parts": [
                {"inlineData": {"mimeType": f"audio/pcm;rate={OUT_RATE}", "data": data}}]}}})
            if n < len(words):
                text = (" " if n else "") + words[n]
                await self.send({"serverContent": {"outputTranscription": {"text": text}}})
            self.chunks += 1
            if self.script.drop_after_chunks is not None and self.chunks >= self.script.drop_after_chunks:
                self.script.drop_after_chunks = None
                await self.ws.close(code=1011)
                return None
            await asyncio.sleep(self.script.chunk_delay_s)
        rest = words[len(range(0, len(pcm), step)):]
        if rest:
            await self.send({"serverContent": {"outputTranscription": {"text": " " + " ".join(rest)}}})
        return pcm

    async def answer_tool(self, output: str | None) -> None:
        await asyncio.sleep(AFTER_TOOL_S)
        self.answer(None, output)

    async def handle(self, message: dict[str, Any]) -> None:
        if "realtimeInput" in message:
            audio = message["realtimeInput"].get("audio")
            if audio:
                await self.on_audio(audio)
            return
        self.script.received.append(message)
        if "toolResponse" in message:
            responses = message["toolResponse"].get("functionResponses") or []
            self.script.tool_responses.append(message["toolResponse"])
            answered = {response.get("id") for response in responses}
            self.open_calls = [call for call in self.open_calls if call not in answered]
            output = str((responses[0].get("response") or {}).get("output")) if responses else None
            if not self.open_calls:
                self.after_tool = asyncio.create_task(self.answer_tool(output))
        if "clientContent" in message:
            content = message["clientContent"]
            if content.get("turnComplete"):
                if self.after_tool is not None:
                    self.after_tool.cancel()
                texts = [part.get("text", "") for turn in content.get("turns") or []
                         for part in turn.get("parts") or []]
                self.answer(" ".join(texts) if texts else None)


def camel(value: Any) -> Any:
    """Protobuf JSON accepts field names in lowerCamelCase or as written in the .proto (snake_case), and
    the SDK sends both (`client_content`, `turnComplete`): read them as one."""
    if isinstance(value, dict):
        named = {re.sub(r"_([a-z])", lambda m: m.group(1).upper(), key): item for key, item in value.items()}
        # a Struct's keys are data (a JSON Schema's property names, a function response), not field names
        return {key: item if key in STRUCTS else camel(item) for key, item in named.items()}
    if isinstance(value, list):
        return [camel(item) for item in value]
    return value


def make_app(script: LiveScript) -> Starlette:
    async def live(ws: WebSocket) -> None:
        script.paths.append(ws.url.path)
        if script.api_key is not None and ws.headers.get("x-goog-api-key") != script.api_key:
            await ws.close(code=1008)
            return
        await ws.accept()
        script.sessions += 1
        setup = camel(json.loads(await ws.receive_text())).get("setup") or {}
        script.setups.append(setup)
        await ws.send_text(json.dumps({"setupComplete": {}}))
        session = _Session(ws, script, setup)
        try:
            while True:
                await session.handle(camel(json.loads(await ws.receive_text())))
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            if session.reply is not None:
                session.reply.cancel()
                await asyncio.gather(session.reply, return_exceptions=True)

    return Starlette(routes=[WebSocketRoute("/{path:path}", live)])


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@contextlib.asynccontextmanager
async def serving(script: LiveScript) -> AsyncIterator[tuple[int, Path]]:
    """Serve the fake over TLS on a free port: (port, certificate path)."""
    import uvicorn

    with tempfile.TemporaryDirectory() as directory:
        cert, key = self_signed(Path(directory))
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(make_app(script), log_level="warning", ws_ping_interval=None,
                                               ssl_certfile=str(cert), ssl_keyfile=str(key), lifespan="off"))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
            yield sock.getsockname()[1], cert
        finally:
            server.should_exit = True
            await asyncio.gather(task, return_exceptions=True)
            sock.close()
