"""Providers that cost nothing: a fixed transcript, an instant reply, pre-rendered audio.

With them a call's latency and CPU are Switchboard's own (bench/calls.py), and tests of the call logic
don't depend on recognition accuracy. They can also fail on purpose.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import numpy as np

from switchboard.core.errors import ProviderError
from switchboard.core.messages import LLMEvent, Message, TextDelta, Tool, ToolCall, Transcript, Usage
from switchboard.core.settings import Timeouts


class InstantSTT:
    vendor, model, sample_rate = "instant", "fixed", 16000
    wideband = False  # a browser call's utterances come upsampled from 8 kHz, as to the embedded engines
    timeouts: Timeouts | None = None

    def __init__(self, text: str = "hello", fail: bool = False, delay_s: float = 0.0) -> None:
        self.text, self.fail, self.delay_s = text, fail, delay_s
        self.heard: list[np.ndarray] = []

    async def warm(self) -> None:
        pass

    async def transcribe(self, pcm: np.ndarray) -> Transcript:
        self.heard.append(pcm)
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise ProviderError("instant", "server", "injected STT failure", retryable=True)
        return Transcript(self.text)


def spoken_bursts(pcm: np.ndarray, rate: int, gap_s: float = 0.25, level: float = 0.1) -> int:
    """How many stretches of speech the audio holds, split by silences of at least `gap_s`.

    Fakes use it to transcribe audio they cannot recognise: a caller line built from known phrases
    separated by pauses is "heard" as the phrases whose audio the upload contains."""
    frame = rate // 50
    frames = len(pcm) // frame
    if frames == 0:
        return 0
    energy = np.abs(pcm[: frames * frame].astype(np.float64)).reshape(frames, frame).mean(axis=1)
    loud = energy > level * energy.max() if energy.max() > 0 else np.zeros(frames, bool)
    bursts, quiet_run, in_burst = 0, 0, False
    for voiced in loud:
        if voiced:
            if not in_burst and (bursts == 0 or quiet_run * 0.02 >= gap_s):
                bursts += 1
            in_burst, quiet_run = True, 0
        else:
            quiet_run += 1
            in_burst = in_burst and quiet_run * 0.02 < gap_s
    return bursts


class PhrasesSTT(InstantSTT):
    """Hears the first k of `phrases`, k = how many spoken bursts the audio holds (see spoken_bursts).

    `style` makes it write like a real recogniser: "oracle" returns the phrases as given (punctuated
    exactly where a sentence ends); "plain" lower case with no punctuation (PocketSphinx); "stop" ends
    every transcript with a full stop, fragments too (Whisper, Moonshine). `styled` is that writing."""

    model = "phrases"

    def __init__(self, phrases: list[str], delay_s: float = 0.0, style: str = "oracle") -> None:
        super().__init__(" ".join(phrases), delay_s=delay_s)
        self.phrases, self.style = phrases, style
        self.texts: list[str] = []  # every transcript given, in order

    def styled(self, text: str) -> str:
        if self.style == "plain":
            return re.sub(r"[^\w' ]", "", text).lower()
        if self.style == "stop":
            return re.sub(r"[.?!,]+$", "", text) + "."
        return text

    async def transcribe(self, pcm: np.ndarray) -> Transcript:
        self.heard.append(pcm)
        await asyncio.sleep(self.delay_s)
        k = min(len(self.phrases), spoken_bursts(pcm, self.sample_rate))
        self.texts.append(self.styled(" ".join(self.phrases[:k])) if k else "")
        return Transcript(self.texts[-1])


class InstantLLM:
    """Replies with `reply` (after `delay_s` of thought); a caller line containing `goodbye` gets the
    end_call tool."""

    vendor, model = "instant", "echo"
    timeouts: Timeouts | None = None

    def __init__(self, reply: str = "Sure. Anything else?", fail_after_words: int | None = None,
                 delay_s: float = 0.0) -> None:
        self.reply, self.fail_after_words, self.delay_s = reply, fail_after_words, delay_s
        self.requests: list[list[Message]] = []

    async def stream(self, messages: list[Message], tools: list[Tool]) -> AsyncIterator[LLMEvent]:
        self.requests.append(list(messages))
        await asyncio.sleep(self.delay_s)
        if "goodbye" in messages[-1].content and any(t.name == "end_call" for t in tools):
            yield ToolCall("call_1", "end_call", {"farewell": "Goodbye!"})
            return
        for n, word in enumerate(self.reply.split(" ")):
            if self.fail_after_words is not None and n >= self.fail_after_words:
                raise ProviderError("instant", "connection", "injected stream cut")
            yield TextDelta(word if n == 0 else " " + word)
            await asyncio.sleep(0)
        yield Usage(input_tokens=sum(len(m.content.split()) for m in messages), output_tokens=n + 1)


class InstantTTS:
    """A 300 Hz tone, `ms_per_char` long per character, at `sample_rate`."""

    vendor, model = "instant", "tone"
    timeouts: Timeouts | None = None

    def __init__(self, sample_rate: int = 24000, ms_per_char: float = 60.0) -> None:
        self.sample_rate, self.ms_per_char = sample_rate, ms_per_char
        self.spoken: list[str] = []

    def render(self, text: str) -> np.ndarray:
        n = int(len(text) * self.ms_per_char / 1000 * self.sample_rate)
        t = np.arange(n) / self.sample_rate
        return (np.sin(2 * np.pi * 300 * t) * 6000).astype(np.int16)

    async def stream(self, text: str) -> AsyncIterator[np.ndarray]:
        self.spoken.append(text)
        pcm = self.render(text)
        step = self.sample_rate // 10
        for start in range(0, len(pcm), step):
            yield pcm[start : start + step]
