"""Test audio: a synthetic speech-like signal, quiet background noise, and real speech from eSpeak NG.

eSpeak NG is driven in process through ctypes from the ``espeakng-loader`` wheel (no binary needed).
"""

from __future__ import annotations

import ctypes
import functools
import threading

import espeakng_loader
import numpy as np

# int SynthCallback(short *wav, int numsamples, espeak_EVENT *events)
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)
_ESPEAK_LOCK = threading.Lock()  # the library keeps global state: one synthesis at a time
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1


def speech_like(seconds: float, rate: int = 8000, f0: float = 150.0, amplitude: float = 8000.0) -> np.ndarray:
    """A voiced-speech stand-in webrtcvad flags as speech: a 150 Hz harmonic series, slight vibrato,
    amplitude-modulated at 4 Hz like syllables."""
    t = np.arange(round(seconds * rate)) / rate
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))) / rate
    harmonics = sum(np.sin(k * phase) / k for k in range(1, 20))
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)
    return (harmonics / np.max(np.abs(harmonics)) * envelope * amplitude).astype(np.int16)


def quiet(seconds: float, rate: int = 8000, seed: int = 0, level: float = 3.0) -> np.ndarray:
    """Line noise far below webrtcvad's threshold; unlike digital zeros every stretch is unique,
    so a test can locate an utterance's samples in the stream."""
    rng = np.random.default_rng(seed)
    return np.round(rng.normal(0.0, level, round(seconds * rate))).astype(np.int16)


@functools.cache
def _espeak() -> tuple[ctypes.CDLL, int]:
    lib = ctypes.CDLL(str(espeakng_loader.get_library_path()))
    data_dir = str(espeakng_loader.get_data_path()).encode()
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_dir, 0)
    if rate <= 0:
        raise RuntimeError("espeak_Initialize failed")
    return lib, rate


def espeak(text: str, voice: str = "en-us") -> tuple[np.ndarray, int]:
    """Synthesise ``text``; returns ``(int16 pcm, sample_rate)`` (22,050 Hz)."""
    lib, rate = _espeak()
    chunks: list[np.ndarray] = []

    def on_audio(wav: ctypes._Pointer[ctypes.c_short], n: int, _events: int | None) -> int:
        if wav and n > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    callback = _SYNTH_CALLBACK(on_audio)  # keep a reference until synthesis is done
    encoded = text.encode()
    with _ESPEAK_LOCK:
        lib.espeak_SetSynthCallback(callback)
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"unknown espeak voice {voice!r}")
        if lib.espeak_Synth(encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None):
            raise RuntimeError("espeak_Synth failed")
    return (np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)), rate
