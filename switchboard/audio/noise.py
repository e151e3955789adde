"""Is an utterance only noise? Voiced speech is periodic (the vocal folds); line hiss, wind, traffic and
hum are not, however loud, and webrtcvad takes loud noise for speech.

Each loud 40 ms frame gets the strongest normalised autocorrelation at a pitch lag (2.5-20 ms, 50-400 Hz)
of its band-passed samples. An utterance is noise when fewer than `MIN_PERIODIC_SHARE` of its loud frames,
and fewer than `MIN_PERIODIC_FRAMES`, are periodic, or when its periodic frames hold one steady level (a
hum, a tone: speech rises and falls with its syllables).

Measured on the telephone path (8 kHz μ-law; tests/test_noise.py, bench/noise.py): the real recordings
in ../shared/speech have 29-83 % periodic frames (29 %: speech in heavy noise), and still 8 % or more
with white or pink noise added at 0 dB SNR; white, pink, brown, gusting and 50 Hz hum noise at -35 to -10
dBFS are all noise. The real listener sounds (a quarter-second "mm", "yeah", "um" from a meeting)
keep enough voicing down to 10 dB SNR, not at 5 dB: a breathy "yeah" there has no voiced frame left.
Music and babble are periodic and varied: they pass as speech (the recogniser then finds words or
none). Speech buried deeper than 0 dB SNR in hiss is taken for noise.
"""

from __future__ import annotations

import numpy as np

RATE = 8000
FRAME = 320  # 40 ms: two periods of the lowest pitch
MIN_LAG, MAX_LAG = RATE // 400, RATE // 50  # 20..160 samples
PERIODIC = 0.45  # a frame's best normalised autocorrelation above this: voiced
MIN_PERIODIC_SHARE = 0.03
BLOCK_FRAMES = 16  # judged at a time (0.64 s)
MIN_PERIODIC_FRAMES = 5  # 200 ms of voicing is speech, even inside a long stretch of noise
STEADY_DB = 0.5  # frame levels varying less than this (standard deviation): a steady sound
_QUIET_RMS = 100.0  # frames quieter than this (≈ -50 dBFS) say nothing either way


def loud_frames(pcm: np.ndarray) -> np.ndarray:
    """The 40 ms frames of `pcm` (8 kHz int16) louder than -50 dBFS, as float rows."""
    return _loud(pcm)[0]


def _loud(pcm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`loud_frames`, and the index of each among all the 40 ms frames of `pcm`."""
    frames = len(pcm) // FRAME
    x = pcm[: frames * FRAME].astype(np.float64).reshape(frames, FRAME)
    loud = np.flatnonzero(np.sqrt(np.mean(x * x, axis=1)) >= _QUIET_RMS)
    return x[loud], loud


def periodicity(frames: np.ndarray) -> np.ndarray:
    """Per frame (rows of `loud_frames`): its strongest normalised autocorrelation at a pitch lag."""
    if len(frames) == 0:
        return np.zeros(0)
    # a band-pass: pre-emphasis takes the smoothness of rumble and brown noise away, which would otherwise
    # pass for pitch; then [1, 2, 1] takes most hiss above 2 kHz away, where voicing is weak
    x = np.diff(frames, axis=1)
    x = 0.25 * x[:, :-2] + 0.5 * x[:, 1:-1] + 0.25 * x[:, 2:]
    x -= x.mean(axis=1, keepdims=True)
    width = x.shape[1] - MAX_LAG  # the head of the frame, compared with the frame shifted by each lag
    head = x[:, :width]
    lags = np.arange(MIN_LAG, MAX_LAG + 1)
    # head · (frame shifted by each lag), every lag at once: a cross-correlation through the FFT
    size = 1 << (x.shape[1] + width).bit_length()
    cross = np.fft.irfft(np.conj(np.fft.rfft(head, size)) * np.fft.rfft(x, size), size)[:, lags]
    squares = np.concatenate([np.zeros((len(x), 1)), np.cumsum(x * x, axis=1)], axis=1)
    shifted_energy = squares[:, lags + width] - squares[:, lags]
    head_energy = squares[:, width:width + 1]
    return (cross / np.sqrt(head_energy * shifted_energy + 1e-9)).max(axis=1)


def is_noise(pcm: np.ndarray) -> bool:
    """True when `pcm` (8 kHz int16, an utterance) holds loud sound but no voicing.

    Frames are judged a block at a time and the answer is "speech" as soon as there is enough varied
    voicing: a sentence costs one block (≈ 0.3 ms), only noise is read to its end (≈ 1 ms a second)."""
    return judge(pcm)[0]


def judge(pcm: np.ndarray) -> tuple[bool, int]:
    """`is_noise(pcm)`, and when the answer is speech told by whole blocks, the samples of `pcm` that
    told it: any longer audio starting with those samples is speech too (the same blocks come first and
    end the reading at the same place), so it needs no reading again. 0 otherwise."""
    frames, index = _loud(pcm)
    if len(frames) < 2:
        return False, 0  # nothing loud: not for this check to say
    periodic = np.zeros((0, FRAME))
    for start in range(0, len(frames), BLOCK_FRAMES):
        block = frames[start:start + BLOCK_FRAMES]
        periodic = np.concatenate([periodic, block[periodicity(block) > PERIODIC]])
        if len(periodic) >= MIN_PERIODIC_FRAMES and not _steady(periodic):
            whole = len(block) == BLOCK_FRAMES
            return False, (int(index[start + BLOCK_FRAMES - 1]) + 1) * FRAME if whole else 0
    if len(periodic) >= MIN_PERIODIC_FRAMES and _steady(periodic):
        # a tone or a hum: periodic, but speech rises and falls with its syllables. Two or three voiced
        # frames say nothing about that (a real "um" in hiss kept two, 0.3 dB apart: taken for a hum)
        return True, 0
    return len(periodic) < MIN_PERIODIC_FRAMES and len(periodic) < MIN_PERIODIC_SHARE * len(frames), 0


class NoiseGate:
    """`is_noise` for the utterances of one call. Speculation asks at every pause and the utterance is
    asked again at its end: once its first blocks told speech, the same utterance (the same start) with
    at least that audio is speech without reading it again."""

    def __init__(self) -> None:
        self._speech: tuple[float, int] | None = None  # (utterance start, samples that told speech)

    def known_speech(self, pcm: np.ndarray, started: float) -> bool:
        return self._speech is not None and self._speech[0] == started and len(pcm) >= self._speech[1]

    def is_noise(self, pcm: np.ndarray, started: float) -> bool:
        noise, told_by = judge(pcm)
        if told_by:
            self._speech = (started, told_by)
        return noise


def _steady(frames: np.ndarray) -> bool:
    level_db = 10 * np.log10(np.mean(frames * frames, axis=1))
    return float(np.std(level_db)) < STEADY_DB
