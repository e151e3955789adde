"""Is what the caller's line carries just the bot's own voice coming back (echo)?

A speakerphone, or a carrier without echo cancellation, sends some of the bot's audio back down the
caller's line a few tens to hundreds of ms after it played. To the VAD that is speech, and it would
interrupt the bot. Echo is the bot's audio delayed, attenuated and re-encoded, so it correlates
strongly with what the bot played at *some* delay; the caller's own voice does not, and a caller
talking over the echo drags the correlation down (their voice is the louder part of the mixture).

`similarity` is the largest normalised cross-correlation of the caller's audio against the bot's
played audio over every delay that fits: 1.0 for an exact (scaled) copy, ~0.9 for echo through
μ-law, below ~0.3 for unrelated speech.
"""

from __future__ import annotations

import numpy as np

MIN_WINDOW_ENERGY = 0.01  # reference windows quieter than this share of the loudest are not compared


def similarity(heard: np.ndarray, played: np.ndarray) -> float:
    """Max over delays d of corr(heard, played[d : d + len(heard)]), normalised; 0 if either is silent."""
    x = np.asarray(heard, dtype=np.float64)
    r = np.asarray(played, dtype=np.float64)
    n = len(x)
    if n == 0 or not r.any() or not x.any():
        return 0.0
    if len(r) < n:
        r = np.concatenate([r, np.zeros(n - len(r))])
    lags = len(r) - n + 1
    size = 1 << (len(r) + n - 1).bit_length()
    # cross[d] = sum_k x[k] * r[d + k], for every delay d at once
    cross = np.fft.irfft(np.fft.rfft(r, size) * np.conj(np.fft.rfft(x, size)), size)[:lags]
    cumulative = np.concatenate([[0.0], np.cumsum(r * r)])
    window_energy = cumulative[n:] - cumulative[:lags]
    usable = window_energy > MIN_WINDOW_ENERGY * window_energy.max()
    denominator = np.sqrt(np.maximum(window_energy, 1e-9) * float(x @ x))
    scores = np.where(usable, cross / denominator, 0.0)
    return float(max(scores.max(), 0.0))
