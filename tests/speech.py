"""Test audio: a synthetic speech-like signal, quiet background noise, and real speech from eSpeak NG.

Real speech comes from the embedded eSpeak NG provider (providers/espeak.py).
"""

from __future__ import annotations

import numpy as np

from switchboard.providers.espeak import SAMPLE_RATE, synthesize


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


def espeak(text: str, voice: str = "en-us") -> tuple[np.ndarray, int]:
    """Synthesise ``text`` with the embedded TTS; returns ``(int16 pcm, sample_rate)`` (22,050 Hz)."""
    return synthesize(text, voice=voice), SAMPLE_RATE
