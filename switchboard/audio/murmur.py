"""Is a short sound a hummed listener sound ("mm", "mm-hmm", "hmm"), whatever a recogniser makes of it?

A hum is voiced with the mouth closed or nearly so: its energy sits in the pitch and the first few
harmonics, below 1 kHz, and it has no consonant (the burst of a "t", the hiss of an "s") and no vowel
with a second formant above 1 kHz ("yeah", "wait", "stop", "what", "sorry" all have one). Neural
recognisers write hums as words they are not: on the telephone path Moonshine tiny wrote a real
"mm-hmm" as "You need." / "And it?" and an "oh yeah" as "I am." (../shared/speech, AMI meeting clips).

`is_murmur` takes the loud 40 ms frames (audio/noise.loud_frames) of a sound at 8 kHz and asks:

* voiced: at least `MIN_VOICED_FRAMES` periodic frames (audio/noise.periodicity), and
* short: at most `MAX_MS` of loud audio (a listener's sound, not a sentence), and
* dark: less than `MAX_HIGH_SHARE` of its energy above 1 kHz overall, and no frame with more than
  `MAX_FRAME_HIGH_SHARE` among the frames within 20 dB of the loudest (a consonant).

Measured on 8 kHz μ-law (bench/backchannels.py --real): the real "mm-hmm", "mm", "oh yeah", "um" and one
"yeah" of the AMI clips have 0.0-0.6 % of their energy above 1 kHz (headset microphones close to the
mouth, strong in the pitch); another real "yeah" 4 %; real short interruptions ("no", "it's not fair",
"five five") 8-23 %; Piper and eSpeak NG words 7-38 %. It runs once per sound said over the bot (an FFT
of under a second of audio), never per frame.
"""

from __future__ import annotations

import numpy as np

from switchboard.audio.noise import FRAME, PERIODIC, RATE, loud_frames, periodicity

MAX_MS = 900  # longer than this is words, not a hum
MIN_VOICED_FRAMES = 3  # 120 ms of voicing
MAX_HIGH_SHARE = 0.03  # energy above 1 kHz, of the whole sound
MAX_FRAME_HIGH_SHARE = 0.25  # ...of any one loud frame: more is a consonant
HIGH_HZ = 1000
STRONG = 0.01  # frames within 20 dB of the loudest are checked for a consonant

_WINDOW = np.hanning(FRAME)
_HIGH = np.fft.rfftfreq(FRAME, 1 / RATE) >= HIGH_HZ


def is_murmur(pcm: np.ndarray) -> bool:
    """True when `pcm` (8 kHz int16) is a short voiced sound with no consonant and no bright vowel."""
    frames = loud_frames(pcm)
    if len(frames) * FRAME * 1000 // RATE > MAX_MS or len(frames) < MIN_VOICED_FRAMES:
        return False
    if int((periodicity(frames) > PERIODIC).sum()) < MIN_VOICED_FRAMES:
        return False
    power = np.abs(np.fft.rfft((frames - frames.mean(axis=1, keepdims=True)) * _WINDOW, axis=1)) ** 2
    high, total = power[:, _HIGH].sum(axis=1), power.sum(axis=1) + 1e-9
    strong = total >= total.max() * STRONG  # a faint frame's breath or line hiss is no consonant
    return bool(high.sum() / total.sum() < MAX_HIGH_SHARE
                and (high[strong] / total[strong]).max() < MAX_FRAME_HIGH_SHARE)
