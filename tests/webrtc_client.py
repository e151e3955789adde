"""A browser-like WebRTC caller on aiortc: what the dashboard's talk.js does, for tests and benches.

It posts an offer to /webrtc/offer, plays caller lines into its microphone track (20 ms frames at 48 kHz,
paced at real time, quiet noise between lines), and measures what it hears: each 20 ms of the bot's
decoded Opus as a level, with the time it arrived. Keypad keys and hang-up go over the data channel.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import time
from dataclasses import dataclass, field

import httpx
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

from switchboard.audio.resample import resample

RATE = 48000
FRAME = 960  # 20 ms at 48 kHz
AUDIBLE_RMS = 300.0  # a 20 ms frame of the bot this loud is its voice (silence decodes to ~0)


class MicTrack(MediaStreamTrack):
    """The caller's microphone: queued lines, else faint noise, 20 ms at a time at real time."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue: list[np.ndarray] = []
        self._start: float | None = None
        self._sent = 0
        self._rng = np.random.default_rng(0)
        self._line_done: list[tuple[int, asyncio.Future[float]]] = []  # (frames until done, future)

    def say(self, pcm: np.ndarray, rate: int) -> asyncio.Future[float]:
        """Queue a line; the future gets the monotonic time its last frame was sent (its true end)."""
        pcm48 = resample(pcm.astype(np.int16), rate, RATE)
        pcm48 = np.concatenate([pcm48, np.zeros(-len(pcm48) % FRAME, dtype=np.int16)])
        frames = [pcm48[at:at + FRAME] for at in range(0, len(pcm48), FRAME)]
        self._queue.extend(frames)
        done: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._line_done.append((len(self._queue), done))
        return done

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._sent * 0.02 - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self._sent += 1
        if self._queue:
            pcm = self._queue.pop(0)
            self._line_done = [(left - 1, done) for left, done in self._line_done]
            for left, done in self._line_done:
                if left == 0 and not done.done():
                    done.set_result(time.monotonic())
            self._line_done = [(left, done) for left, done in self._line_done if left > 0]
        else:
            pcm = np.round(self._rng.normal(0, 3, FRAME)).astype(np.int16)
        frame = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = RATE, self._sent * FRAME
        frame.time_base = fractions.Fraction(1, RATE)
        return frame


@dataclass
class Heard:
    """The bot's audio as the caller received it: (arrival time, RMS) per decoded frame."""

    frames: list[tuple[float, float]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def first_audible(self, after: float) -> float | None:
        return next((at for at, rms in self.frames if at >= after and rms >= AUDIBLE_RMS), None)

    def audible_s(self, start: float, end: float) -> float:
        return sum(0.02 for at, rms in self.frames if start <= at < end and rms >= AUDIBLE_RMS)

    def last_audible(self) -> float | None:
        return next((at for at, rms in reversed(self.frames) if rms >= AUDIBLE_RMS), None)


class BrowserCaller:
    def __init__(self, base_url: str, token: str | None = None) -> None:
        self.base_url, self.token = base_url, token
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.mic = MicTrack()
        self.heard = Heard()
        self.hung_up = asyncio.Event()  # the server said hangup
        self.call_id = ""
        self.pc.addTrack(self.mic)
        self.channel = self.pc.createDataChannel("switchboard")
        self.channel.on("message", self._on_message)
        self.pc.on("track", self._on_track)
        self._tasks: list[asyncio.Task] = []

    async def offer(self, pipeline: str, arm: str | None = None) -> httpx.Response:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        body = {"sdp": self.pc.localDescription.sdp, "type": "offer", "pipeline": pipeline}
        if arm:
            body["arm"] = arm
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with httpx.AsyncClient() as client:
            response = await client.post(f"{self.base_url}/webrtc/offer", json=body, headers=headers)
        return response

    async def call(self, pipeline: str = "default", arm: str | None = None) -> str:
        response = await self.offer(pipeline, arm)
        response.raise_for_status()
        answer = response.json()
        self.call_id = answer["call_id"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        return self.call_id

    async def bot_spoke(self, after: float, timeout_s: float = 10.0) -> float:
        """When the bot's audio was first heard after `after` (waits for it)."""
        async with asyncio.timeout(timeout_s):
            while (at := self.heard.first_audible(after)) is None:
                self.heard.changed.clear()
                await self.heard.changed.wait()
        return at

    async def bot_quiet(self, for_s: float = 0.5, timeout_s: float = 15.0) -> float:
        """Until the bot has been silent `for_s`; returns when its audio last stopped."""
        async with asyncio.timeout(timeout_s):
            while True:
                last = self.heard.last_audible() or 0.0
                if self.heard.frames and self.heard.frames[-1][0] - last >= for_s:
                    return last
                self.heard.changed.clear()
                await self.heard.changed.wait()

    def key(self, digit: str) -> None:
        self.channel.send(json.dumps({"type": "dtmf", "digit": digit}))

    async def hang_up(self) -> None:
        if self.channel.readyState == "open":
            self.channel.send(json.dumps({"type": "hangup"}))
            await asyncio.sleep(0.2)
        await self.close()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pc.close()

    def _on_message(self, message: str | bytes) -> None:
        if isinstance(message, str) and json.loads(message).get("type") == "hangup":
            self.hung_up.set()

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._tasks.append(asyncio.create_task(self._listen(track)))

    async def _listen(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                pcm = frame.to_ndarray().astype(np.float64).reshape(-1)
                self.heard.frames.append((time.monotonic(), float(np.sqrt(np.mean(pcm * pcm)))))
                self.heard.changed.set()
        except MediaStreamError:
            self.hung_up.set()
