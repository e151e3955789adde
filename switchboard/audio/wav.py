"""WAV file I/O for int16 PCM via soundfile: read as mono (stereo is mixed down), write mono or stereo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

__all__ = ["read_wav", "write_wav"]


def _mix_to_mono(pcm: np.ndarray) -> np.ndarray:
    if pcm.ndim == 1:
        return pcm
    # average in int32 so the sum of two full-scale channels cannot overflow
    return (pcm.astype(np.int32).sum(axis=1) // pcm.shape[1]).astype(np.int16)


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a WAV file as mono int16 PCM; returns ``(pcm, sample_rate)``."""
    pcm, rate = sf.read(str(path), dtype="int16", always_2d=False)
    return _mix_to_mono(pcm), int(rate)


def read_wav_channel(path: str | Path, channel: int = 0) -> tuple[np.ndarray, int]:
    """One channel of a WAV file as int16 PCM (a recording's caller is channel 0); `(pcm, sample_rate)`."""
    pcm, rate = sf.read(str(path), dtype="int16", always_2d=True)
    return np.ascontiguousarray(pcm[:, min(channel, pcm.shape[1] - 1)]), int(rate)


def write_wav(path: str | Path, pcm: np.ndarray, rate: int) -> None:
    """Write int16 PCM, mono ``(n,)`` or stereo ``(n, 2)``, as 16-bit PCM WAV."""
    pcm = np.asarray(pcm)
    if pcm.dtype != np.int16:
        raise TypeError(f"expected int16 PCM, got {pcm.dtype}")
    if pcm.ndim != 1 and not (pcm.ndim == 2 and pcm.shape[1] == 2):
        raise ValueError(f"expected shape (n,) or (n, 2), got {pcm.shape}")
    sf.write(str(path), pcm, rate, subtype="PCM_16", format="WAV")
