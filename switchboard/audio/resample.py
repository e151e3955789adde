"""Sample-rate conversion for mono int16 PCM with soxr: a streaming resampler and a one-shot helper.

Use :class:`StreamResampler` for audio that arrives in pieces (TTS output): it keeps filter state
across chunks, so there are no edge artefacts between them. soxr holds back some output (tens of
milliseconds) until the stream is flushed, so call :meth:`StreamResampler.flush` at the end of every
spoken chunk; the resampler stays usable afterwards. Use :func:`resample` for a whole utterance.
"""

from __future__ import annotations

import numpy as np
import soxr

__all__ = ["HalfbandResampler", "StreamResampler", "line_resampler", "resample"]

DEFAULT_QUALITY = "HQ"  # QQ has no anti-alias filter and LQ dulls 3.4 kHz: stay at MQ or above


def _as_mono_int16(pcm: np.ndarray) -> np.ndarray:
    pcm = np.asarray(pcm)
    if pcm.ndim != 1:
        raise ValueError(f"expected mono (1-D) PCM, got shape {pcm.shape}")
    if pcm.dtype != np.int16:
        raise TypeError(f"expected int16 PCM, got {pcm.dtype}")
    return pcm


class StreamResampler:
    """Streaming mono int16 resampler from ``in_rate`` to ``out_rate`` (identity when they are equal)."""

    def __init__(self, in_rate: int, out_rate: int, quality: str = DEFAULT_QUALITY) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.quality = quality
        self._stream: soxr.ResampleStream | None = None
        if in_rate != out_rate:
            self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)

    def process(self, pcm: np.ndarray) -> np.ndarray:
        """Resample the next chunk; returns what soxr can release so far (may be shorter than due)."""
        pcm = _as_mono_int16(pcm)
        if self._stream is None:
            return pcm.copy()
        return self._stream.resample_chunk(pcm)

    def flush(self) -> np.ndarray:
        """Return the held-back tail and reset the stream so the next chunk starts a fresh signal."""
        if self._stream is None:
            return np.zeros(0, dtype=np.int16)
        tail = self._stream.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
        # soxr refuses input after last=True; clear() makes the same stream reusable.
        self._stream.clear()
        return tail

    def reset(self) -> None:
        """Drop what is held back: the next chunk starts a fresh signal (a clear on a live line)."""
        if self._stream is not None:
            self._stream.clear()


def resample(pcm: np.ndarray, in_rate: int, out_rate: int, quality: str = DEFAULT_QUALITY) -> np.ndarray:
    """Resample a whole mono int16 signal at once (e.g. an utterance for STT)."""
    pcm = _as_mono_int16(pcm)
    if in_rate == out_rate:
        return pcm.copy()
    return soxr.resample(pcm, in_rate, out_rate, quality=quality)


class HalfbandResampler:
    """Exactly 2:1 (8 ↔ 16 kHz) for a live line, with no buffering: a windowed-sinc FIR (cut-off at 3.8 kHz
    of the 8 kHz side, Kaiser β 8, `TAPS` taps: flat to 3.4 kHz, images and aliases ≥ 80 dB down) applied
    chunk by chunk with its state carried over, so each chunk's output comes out with it and the delay is
    the filter's own, 3 ms. soxr's stream (`StreamResampler`) holds 10–118 ms (64 ms on average at MQ)
    between 8 and 16 kHz, which a caller hears on every turn, both ways; this is for that path. `up`:
    8 → 16 kHz (the two polyphase halves of the filter, no zeros multiplied); else 16 → 8 kHz. Chunks
    going down must hold an even number of samples (20 ms frames do)."""

    TAPS = 96

    def __init__(self, up: bool) -> None:
        self.up = up
        n = np.arange(self.TAPS) - (self.TAPS - 1) / 2
        cutoff = 3800 / 16000  # of the 16 kHz rate
        taps = 2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(self.TAPS, 8.0)
        taps /= taps.sum()
        # polyphase: going up, each output phase is one half of the filter over the 8 kHz input (zero-stuffing
        # halves the level: each half sums to 1); going down, only the kept outputs are computed, the
        # filter's even taps over the odd input samples plus its odd taps over the even ones
        self._phases = (2 * taps[0::2], 2 * taps[1::2]) if up else (taps[0::2], taps[1::2])
        self._tail = np.zeros(self.TAPS // 2 - 1 if up else self.TAPS - 2)  # the last input samples

    def process(self, pcm: np.ndarray) -> np.ndarray:
        pcm = _as_mono_int16(pcm)
        if not self.up and len(pcm) % 2:
            raise ValueError("HalfbandResampler down: chunks must hold an even number of samples")
        signal = np.concatenate([self._tail, pcm])
        self._tail = signal[len(signal) - len(self._tail):]
        even, odd = self._phases
        if self.up:
            out = np.empty(2 * len(pcm))
            out[0::2] = np.convolve(signal, even, mode="valid")
            out[1::2] = np.convolve(signal, odd, mode="valid")
        else:
            out = np.convolve(signal[1::2], even, mode="valid") + np.convolve(signal[0::2], odd, mode="valid")
        np.rint(out, out=out)
        return np.clip(out, -32768, 32767, out=out).astype(np.int16)

    def flush(self) -> np.ndarray:
        """Nothing is held back: no samples (StreamResampler's interface). The filter's state is kept, so
        the next chunk goes on from this one's end."""
        return np.zeros(0, dtype=np.int16)

    def reset(self) -> None:
        self._tail = np.zeros(len(self._tail))


def line_resampler(in_rate: int, out_rate: int,
                   quality: str = DEFAULT_QUALITY) -> HalfbandResampler | StreamResampler:
    """A live line's resampler, chunk by chunk: the half-band filter between 8 and 16 kHz (3 ms, nothing
    held back), soxr's stream otherwise (e.g. 24 kHz). Going down from 16 kHz, chunks must hold an even
    number of samples."""
    if {in_rate, out_rate} == {8000, 16000}:
        return HalfbandResampler(up=out_rate > in_rate)
    return StreamResampler(in_rate, out_rate, quality)
