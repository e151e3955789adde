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


def hum(seconds: float, f0: float = 120.0, syllables: int = 1, level_dbfs: float = -20.0,
        rate: int = 8000, seed: int = 0) -> np.ndarray:
    """A hummed listener sound, "mm" (one syllable) or "mm-hmm" (two, the second rising): voiced with the
    mouth closed, so the pitch and its first harmonics (falling 12 dB an octave, none above 900 Hz), a
    slight pitch glide, each syllable swelling and fading, faint breath noise. Not a TTS reading letters."""
    rng = np.random.default_rng(seed)
    gap = 0.08 if syllables > 1 else 0.0
    parts: list[np.ndarray] = []
    for n in range(syllables):
        length = round((seconds - gap * (syllables - 1)) / syllables * rate)
        t = np.arange(length) / rate
        rise = 1.3 if n == syllables - 1 and syllables > 1 else 1.05
        pitch = f0 * (1 + (rise - 1) * t / t[-1])
        phase = 2 * np.pi * np.cumsum(pitch) / rate
        voice = sum(np.sin(k * phase) / k**2 for k in range(1, int(900 // (f0 * rise)) + 1))
        parts.append(voice * np.hanning(length) ** 0.5)
        if n < syllables - 1:
            parts.append(np.zeros(round(gap * rate)))
    signal = np.concatenate(parts)
    signal = signal / np.sqrt(np.mean(signal**2)) * 10 ** (level_dbfs / 20) * 32768
    signal += rng.normal(0, 10 ** ((level_dbfs - 40) / 20) * 32768, len(signal))
    return np.clip(signal, -32768, 32767).astype(np.int16)
