"""eSpeak NG text to speech, in process: a small ctypes binding to the `espeakng-loader` wheel's library.

libespeak-ng keeps global state (one voice, one callback, one set of parameters per process), so every
synthesis runs under one process-wide lock and sets its own callback, voice, rate and pitch first.
Some of that state cannot be reset (its pitch flutter runs on from one text to the next, even across
espeak_Initialize), so the same text renders with tiny differences each time: a few samples of length,
the same speech. Compare renderings by duration and loudness envelope, never sample by sample.
A sentence synthesises in a few milliseconds (real-time factor ≈ 0.002), so `EspeakTTS.stream` renders
the whole text in a worker thread and yields it as one chunk: cutting it into pieces as the library
produces them would bring the first sample forward by a millisecond or two at the cost of a
cross-thread queue.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import espeakng_loader
import numpy as np
from pydantic import Field

from switchboard.core.errors import ProviderError
from switchboard.core.settings import ProviderConfig, Timeouts
from switchboard.providers.registry import Plugin, register

__all__ = ["DEFAULT_VOICE", "SAMPLE_RATE", "EspeakTTS", "check_voice", "synthesize"]

SAMPLE_RATE = 22050
DEFAULT_VOICE = "en-us+klatt4"

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_DONT_EXIT = 0x8000  # espeakINITIALIZE_DONT_EXIT: report missing data instead of exiting the process
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _PITCH = 1, 3  # espeak_PARAMETER
_EE_OK = 0
# int SynthCallback(short *wav, int numsamples, espeak_EVENT *events); return 0 to go on.
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

_lock = threading.Lock()  # libespeak-ng is global: one synthesis at a time in the whole process


# --- its section of pipeline.yaml ---------------------------------------------------------------------


class EspeakTTSConfig(ProviderConfig):
    """The embedded offline synthesizer (eSpeak NG)."""

    provider: Literal["espeak"]
    voice: str = "en-us+klatt4"
    rate: int = Field(175, ge=80, le=450)  # words per minute
    pitch: int = Field(50, ge=0, le=99)

    def summary(self) -> str:
        return self.voice


class _Engine:
    """The loaded library and the callback that collects its samples. Use only under `_lock`."""

    def __init__(self) -> None:
        self.lib = ctypes.CDLL(str(espeakng_loader.get_library_path()))
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        self.data_dir = Path(espeakng_loader.get_data_path())
        rate = self.lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, str(self.data_dir.parent).encode(), _DONT_EXIT
        )
        if rate != SAMPLE_RATE:
            raise RuntimeError(f"espeak_Initialize returned {rate}, expected {SAMPLE_RATE} Hz")
        self.chunks: list[np.ndarray] = []
        self.callback = _CALLBACK(self._on_audio)  # referenced here so ctypes never frees it

    def _on_audio(self, wav: ctypes._Pointer[ctypes.c_short], n: int, _events: int | None) -> int:
        if wav and n > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def set_voice(self, voice: str) -> None:
        """Select `voice` ("language" or "language+variant"); ValueError if either part is unknown."""
        language, _, variant = voice.partition("+")
        # The library ignores an unknown variant silently, so look for its file ourselves.
        if variant and not (self.data_dir / "voices" / "!v" / variant).is_file():
            raise ValueError(f"unknown espeak voice {voice!r}: no variant {variant!r}")
        # Installing our callback here too: other code in the process may have set its own.
        self.lib.espeak_SetSynthCallback(self.callback)
        if self.lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise ValueError(f"unknown espeak voice {voice!r}: no language {language!r}")

    def synthesize(self, text: str) -> np.ndarray:
        self.chunks = []
        encoded = text.encode("utf-8") + b"\0"
        status = self.lib.espeak_Synth(encoded, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if status != _EE_OK:
            raise RuntimeError(f"espeak_Synth failed with status {status}")
        pcm = np.concatenate(self.chunks) if self.chunks else np.zeros(0, dtype=np.int16)
        self.chunks = []
        return pcm


@functools.cache
def _engine() -> _Engine:
    return _Engine()


def check_voice(voice: str) -> None:
    """Raise ValueError naming `voice` if eSpeak NG does not have it."""
    with _lock:
        _engine().set_voice(voice)


def synthesize(text: str, voice: str = DEFAULT_VOICE, rate: int = 175, pitch: int = 50) -> np.ndarray:
    """Speak `text` with `voice` at `rate` words per minute and `pitch` (0-99): int16 mono at 22,050 Hz.

    Blocking (a few ms per sentence); safe to call from any thread."""
    with _lock:
        engine = _engine()
        engine.set_voice(voice)  # all three every time: the library keeps the previous caller's
        engine.lib.espeak_SetParameter(_RATE, rate, 0)
        engine.lib.espeak_SetParameter(_PITCH, pitch, 0)
        return engine.synthesize(text)


class EspeakTTS:
    """The TTS interface over `synthesize`: one chunk per text, rendered off the event loop."""

    vendor = "espeak"
    timeouts: Timeouts | None = None  # embedded: no deadlines
    sample_rate = SAMPLE_RATE

    def __init__(self, config: EspeakTTSConfig) -> None:
        check_voice(config.voice)
        self.model = config.voice
        self.voice, self.rate, self.pitch = config.voice, config.rate, config.pitch

    async def stream(self, text: str) -> AsyncIterator[np.ndarray]:
        if not text.strip():
            return
        try:
            pcm = await asyncio.to_thread(synthesize, text, self.voice, self.rate, self.pitch)
        except (RuntimeError, ValueError, OSError) as exc:
            raise ProviderError("espeak", "internal", str(exc)) from exc
        if len(pcm):
            yield pcm


# in process, no model, a few ms per sentence: the voice every pipeline can fall back on last
register(Plugin("tts", "espeak", EspeakTTSConfig, EspeakTTS,
                last_resort=lambda: EspeakTTSConfig(provider="espeak")))
