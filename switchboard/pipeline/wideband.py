"""A wideband call's audio for its recognisers (a browser call: a part of `CallSession`'s job), and for
a speech-to-speech model (`WideFrames`: a part of `RealtimeSession`'s).

The call works at 8 kHz: the segmenter, echo, the noise gate, Smart Turn and the hum test read the
caller's 8 kHz frames whatever the carrier. A carrier whose link declares `wideband_rate` (WebRTC: 16
kHz) also hands each frame's audio at that rate (`core.carrier.Media.wide`). `WideAudio` keeps the last
`keep_s` of it in a ring indexed by the 8 kHz stream's sample count; the segmenter's `Utterance` and
`Pause` say where their audio starts in that stream (`start`), so `attach` gives each the same stretch
at the wide rate (`wide`): one slice copy per utterance, one write per frame, nothing at all on a call
whose carrier is narrowband (the session holds no `WideAudio` then).

`for_recognisers` is what every transcription of the caller hands `failover.transcribe`: a recogniser
that declares `wideband` (core/protocols.py: the cloud ones) gets the wide slice (at its own rate if it
wants another), every other one, and every phone call, the 8 kHz audio resampled to its rate as before.
An utterance a wideband call has no copy for (older than the ring, or over a frame that came without
one) goes to every recogniser at 8 kHz.

A realtime call streams the caller to its vendor frame by frame instead: `WideFrames.frame` gives the
frame's wide copy as is (no copy, no resampling: the vendor's adapter converts the one stream to its own
rate), and for a frame that came without one, its 8 kHz audio brought up by a half-band filter the call
keeps (created at the first such frame), so the vendor's stream stays at one rate and keeps its timing;
each run of such frames starts the filter afresh. A phone call holds no `WideFrames`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import numpy as np

from switchboard.audio.resample import HalfbandResampler, resample
from switchboard.audio.segmenter import Pause, SegmenterEvent, Utterance
from switchboard.core.carrier import LINE_RATE
from switchboard.core.protocols import STT

log = logging.getLogger("switchboard.call")

KEEP_MARGIN_S = 10.0  # beyond the longest utterance: its pre-roll, the silence before it ends, a slow tick


class WideAudio:
    """The caller's audio at `rate` (a whole multiple of 8 kHz), its last `keep_s` kept, indexed by the
    8 kHz stream's samples."""

    def __init__(self, rate: int, keep_s: float, call_id: str = "-") -> None:
        if rate <= LINE_RATE or rate % LINE_RATE:
            raise ValueError(f"a wideband rate is a whole multiple of {LINE_RATE} Hz above it, not {rate}")
        self.rate, self.ratio, self.call_id = rate, rate // LINE_RATE, call_id
        self._ring = np.zeros(round(keep_s * LINE_RATE) * self.ratio, dtype=np.int16)
        self._written = 0  # wide samples of the call so far (the ring holds the last len(_ring))
        self._valid_from = 0  # wide index from which every frame came with its copy
        self._missing = 0  # frames that came without one

    def add(self, pcm: np.ndarray, wide: np.ndarray | None) -> None:
        """One frame of the caller's 8 kHz audio and its wide copy (None or the wrong length: the
        utterances over it go to the recognisers at 8 kHz)."""
        at = self._written
        n = len(pcm) * self.ratio
        self._written += n
        if wide is None or len(wide) != n:
            self._valid_from = self._written
            self._missing += 1
            if self._missing == 1:
                log.warning("call %s: a frame came without its %d Hz copy (%s): the utterance over it goes "
                            "to the recognisers at 8 kHz", self.call_id, self.rate,
                            "none" if wide is None else f"{len(wide)} samples, not {n}")
            return
        size = len(self._ring)
        if n > size:  # a frame longer than the ring: only its end is kept
            wide, at = wide[n - size:], at + n - size
            n = size
        i = at % size
        first = min(n, size - i)
        self._ring[i:i + first] = wide[:first]
        self._ring[:n - first] = wide[first:]

    def slice(self, start: int, length: int) -> np.ndarray | None:
        """The wide copy of the 8 kHz samples [start, start + length) of the call, or None if it is not
        all held (older than the ring, not yet come, or over a frame that came without one)."""
        begin, end = start * self.ratio, (start + length) * self.ratio
        size = len(self._ring)
        if begin < self._valid_from or begin < self._written - size or end > self._written or begin < 0:
            return None
        i, n = begin % size, end - begin
        first = min(n, size - i)
        return np.concatenate([self._ring[i:i + first], self._ring[:n - first]])

    def attach(self, events: list[SegmenterEvent]) -> list[SegmenterEvent]:
        """The segmenter's events, each utterance and pause with its wide copy (`wide`)."""
        return [dataclasses.replace(event, wide=self.slice(event.start, len(event.pcm)))
                if isinstance(event, (Utterance, Pause)) else event for event in events]


def for_recognisers(heard: Utterance, wide: WideAudio | None) -> Callable[[STT], np.ndarray]:
    """What each recogniser is handed for `heard` (`failover.transcribe`'s `pcm_for`): the wide copy for
    one that declares `wideband` when there is one, else the 8 kHz audio; at the recogniser's rate."""

    def pcm_for(stt: STT) -> np.ndarray:
        if stt.wideband and heard.wide is not None and wide is not None:
            return resample(heard.wide, wide.rate, stt.sample_rate)
        return resample(heard.pcm, LINE_RATE, stt.sample_rate)

    return pcm_for


class WideFrames:
    """A realtime call's caller audio for a vendor that takes its carrier's 16 kHz, frame by frame."""

    def __init__(self, rate: int, call_id: str = "-") -> None:
        if rate != 2 * LINE_RATE:
            raise ValueError(f"a realtime call's wideband audio is at {2 * LINE_RATE} Hz, not {rate}")
        self.rate, self.ratio, self.call_id = rate, 2, call_id
        self._up: HalfbandResampler | None = None  # for frames without their copy
        self._gap = False  # the last frame came without its copy
        self.missing = 0  # frames that did

    def frame(self, pcm: np.ndarray, wide: np.ndarray | None) -> np.ndarray:
        """The vendor's audio for one 8 kHz frame: its wide copy, or (none, or the wrong length) its 8 kHz
        audio brought up to `rate`, exactly as long."""
        n = len(pcm) * self.ratio
        if wide is not None and len(wide) == n:
            self._gap = False
            return wide
        return self._brought_up(pcm, wide, n)

    def _brought_up(self, pcm: np.ndarray, wide: np.ndarray | None, n: int) -> np.ndarray:
        self.missing += 1
        if self.missing == 1:
            log.warning("call %s: a frame came without its %d Hz copy (%s): the vendor hears its 8 kHz audio "
                        "upsampled", self.call_id, self.rate,
                        "none" if wide is None else f"{len(wide)} samples, not {n}")
        if self._up is None:
            self._up = HalfbandResampler(up=True)  # nothing held back: the frame keeps its length
        elif not self._gap:
            self._up.reset()  # a new run: not the tail of the last one
        self._gap = True
        return self._up.process(pcm)
