"""The caller's script and voice: `CallerLine`s, their audio (synthesised or from a WAV, pauses, rate),
and what else reaches the caller's microphone (the bot's echo, background noise)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from switchboard.audio.resample import resample
from switchboard.audio.wav import read_wav
from switchboard.caller.timeline import RATE

if TYPE_CHECKING:
    from switchboard.caller.timeline import Playback

# "piper": the embedded natural voice raised 20 % in pitch, so the bot (the same voice unraised) and the
# caller are told apart in recordings and echo tests; any other name is an eSpeak NG voice (en-us+klatt4)
DEFAULT_VOICE = "piper"
PIPER_PITCH = 1.2


@dataclass(frozen=True)
class CallerLine:
    """One line of the caller's script: synthesised ``text`` or a ``wav`` file, optionally a barge-in.

    A normal line waits until the bot has finished talking (and has said something since the previous
    line, or greeted before the first one); a barge-in line starts once the bot's reply has been audible
    for about a second, talking over it.
    """

    text: str | None = None
    wav: str | None = None
    barge_in: bool = False

    def __post_init__(self) -> None:
        if (self.text is None) == (self.wav is None):
            raise ValueError("a CallerLine needs exactly one of text or wav")

    @property
    def label(self) -> str:
        """How the line is shown in the transcript."""
        return self.text if self.text is not None else f"(plays {self.wav})"


@dataclass(frozen=True)
class Echo:
    """The bot's voice leaking back into the caller's microphone: ``delay_ms`` later, ``gain_db`` quieter."""

    delay_ms: float = 120.0
    gain_db: float = -15.0

    def leak(self, playback: Playback) -> Callable[[int, int], np.ndarray]:
        delay = round(self.delay_ms * RATE / 1000)
        gain = 10 ** (self.gain_db / 20)

        def echo(start: int, n: int) -> np.ndarray:
            return (playback.window(start - delay, n).astype(np.float64) * gain).astype(np.int16)

        return echo


def synthesize_line(text: str, voice: str, rate: float = 1.0) -> tuple[np.ndarray, int]:
    """Synthesise a caller line; returns (pcm int16, rate). `voice` "piper": Piper's voice rendered
    PIPER_PITCH times slower and played at PIPER_PITCH times its rate (same length, higher voice);
    else an eSpeak NG voice. `rate` > 1 speaks faster."""
    if voice == "piper":
        from switchboard.providers.piper import voice as piper_voice

        speaker = piper_voice()
        return speaker.render(text, speed=rate / PIPER_PITCH), round(speaker.sample_rate * PIPER_PITCH)
    from switchboard.providers.espeak import synthesize

    return synthesize(text, voice=voice, rate=round(175 * rate)), 22050


PAUSE_MARK = re.compile(r"\[\s*(\d+(?:\.\d+)?)\s*s\s*\]")  # "[0.8s]" in a line's text: a pause


def prepare_audio(line: CallerLine, voice: str, rate: float = 1.0) -> np.ndarray:
    """The line's audio as 8 kHz int16 mono. ``[0.8s]`` in a text line is a pause of that length."""
    if line.wav is not None:
        pcm, rate = read_wav(line.wav)
        pcm = np.asarray(pcm, dtype=np.int16).reshape(-1)
        if rate != RATE:
            pcm = resample(pcm, rate, RATE)
    else:
        assert line.text is not None
        parts = PAUSE_MARK.split(line.text)  # phrase, pause, phrase, pause, ...
        pieces = []
        for n, part in enumerate(parts):
            if n % 2:
                pieces.append(np.zeros(round(float(part) * RATE), dtype=np.int16))
            elif part.strip():
                speech, speech_rate = synthesize_line(part.strip(), voice, rate)
                pieces.append(resample(np.asarray(speech, dtype=np.int16), speech_rate, RATE))
        pcm = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int16)
    if len(pcm) == 0:
        raise ValueError(f"line {line.label!r} has no audio")
    return pcm


def background_noise(level_db: float, seed: int = 0) -> Callable[[int, int], np.ndarray]:
    """Steady background noise at `level_db` dBFS (RMS), mixed into the caller's line like an echo."""
    rng = np.random.default_rng(seed)
    rms = 32768 * 10 ** (level_db / 20)

    def noise(_start: int, n: int) -> np.ndarray:
        return np.clip(rng.normal(0.0, rms, n), -32768, 32767).astype(np.int16)

    return noise


def mix(sources: list[Callable[[int, int], np.ndarray]]) -> Callable[[int, int], np.ndarray]:
    def mixed(start: int, n: int) -> np.ndarray:
        total = sum(source(start, n).astype(np.int32) for source in sources)
        return np.clip(total, -32768, 32767).astype(np.int16)

    return mixed
