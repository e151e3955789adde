"""Moonshine tiny (English), the embedded neural recogniser: no key, no network, the model in its wheel.

`moonshine-voice==0.0.73` ships the tiny-en model (ONNX Runtime format) and its runtime in the wheel;
other versions lack their shared libraries or download the model at run time, hence the pin. The model
is loaded once per process and shared by every call; recognition runs in worker threads (the library
releases the GIL), at most `workers` utterances at once, each using the machine's cores.

Measured on the fifteen real recordings through the telephone path (8 kHz μ-law → 16 kHz), with
`python -m bench.stt_accuracy --real`: see docs/providers.md. It writes numbers as words ("seven") and
punctuates ("Five, five."); it sometimes prefixes a stray "You" or "Uh" to an utterance.
"""

from __future__ import annotations

import ctypes
import re
from functools import cache
from typing import Literal

import numpy as np
from pydantic import Field

from switchboard.core.errors import MissingEngine
from switchboard.core.messages import Transcript
from switchboard.core.settings import ProviderConfig, Timeouts
from switchboard.providers.offload import Offload
from switchboard.providers.registry import Plugin, register

PACKAGE = "moonshine-voice==0.0.73"
SAMPLE_RATE = 16000
_WORDLIKE = re.compile(r"[^\W_]")
SILENCE_RMS = 10 ** (-50 / 20)  # a line whose audio is quieter than -50 dBFS RMS holds no words
WINDOW_S = 30.0  # longer utterances are recognised in pieces of this length (a warning is logged)


# --- its section of pipeline.yaml ---------------------------------------------------------------------


class MoonshineSTTConfig(ProviderConfig):
    """The embedded neural recogniser (Moonshine tiny, English)."""

    provider: Literal["moonshine"]
    model: Literal["tiny-en"] = "tiny-en"
    workers: int = Field(1, ge=1, le=8)  # utterances recognised at once; each already uses every core

    def summary(self) -> str:
        return self.model


# --- the engine ---------------------------------------------------------------------------------------


class _Engine:
    """One loaded model. `recognize` is blocking and thread-safe (one call at a time per worker)."""

    def __init__(self, model: str) -> None:
        try:
            from moonshine_voice import ModelArch, Transcriber, get_model_path
            from moonshine_voice.moonshine_api import TranscriptC

            path = get_model_path(model)
            if not path.is_dir():
                raise FileNotFoundError(f"no model folder at {path}")
            self._transcriber = Transcriber(str(path), ModelArch.TINY)
        except Exception as exc:  # ImportError, a missing or unreadable model, a library that won't load
            raise MissingEngine(f"moonshine: cannot load the {model} model ({type(exc).__name__}: {exc}); "
                                f"install it with: pip install '{PACKAGE}'") from None
        self._transcript_type = TranscriptC

    def recognize(self, pcm: np.ndarray) -> str:
        """int16 mono 16 kHz -> text."""
        audio = np.ascontiguousarray(pcm, dtype=np.float32) / 32768.0
        out = ctypes.POINTER(self._transcript_type)()
        # The library's own wrapper builds a ctypes array element by element, holding the GIL for
        # ~10 ms per 8 s of audio; handing it the NumPy buffer releases the GIL for the whole call.
        error = self._transcriber._lib.moonshine_transcribe_without_streaming(
            self._transcriber._handle, audio.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), len(audio),
            SAMPLE_RATE, 0, ctypes.byref(out),
        )
        if error < 0:
            raise RuntimeError(f"moonshine error {error}")
        lines = self._transcriber._parse_transcript(out).lines
        return " ".join(line.text.strip() for line in lines if _words_in(line, audio))


def _words_in(line: object, audio: np.ndarray) -> bool:
    """Is this line of the model's output made of words said? It sometimes makes a line of near silence
    ("You", "Mm" over a quiet lead-in) or of a stray noise ("?", "."): neither counts."""
    if not _WORDLIKE.search(line.text):  # type: ignore[attr-defined]
        return False
    start = int(max(line.start_time, 0) * SAMPLE_RATE)  # type: ignore[attr-defined]
    piece = audio[start:start + max(int(line.duration * SAMPLE_RATE), 1)]  # type: ignore[attr-defined]
    return piece.size > 0 and float(np.sqrt(np.mean(np.square(piece)))) >= SILENCE_RMS


@cache
def _engine(model: str) -> _Engine:
    return _Engine(model)


class MoonshineSTT:
    vendor = "moonshine"
    sample_rate = SAMPLE_RATE
    # a browser call's 16 kHz: 9.2-9.8 % WER on the real recordings against 12.4-13.1 % for its 8 kHz
    # upsampled (two runs of `python -m bench.stt_accuracy --browser`; README, *Talk to it from the browser*)
    wideband = True
    timeouts: Timeouts | None = None  # embedded: no deadlines

    def __init__(self, config: MoonshineSTTConfig) -> None:
        self.model = config.model
        self._engine = _engine(config.model)  # loaded now: a missing model is a start-up error
        self._offload = Offload("moonshine", config.workers)

    async def warm(self) -> None:
        """Run the model once, so the first caller doesn't pay for its first inference."""
        await self._offload.run(lambda: self._engine.recognize(np.zeros(SAMPLE_RATE // 2, np.int16)))

    async def transcribe(self, pcm: np.ndarray) -> Transcript:
        return await self._offload.transcribe(self.vendor, self._engine.recognize, pcm, SAMPLE_RATE, WINDOW_S)


register(Plugin("stt", "moonshine", MoonshineSTTConfig, MoonshineSTT))
