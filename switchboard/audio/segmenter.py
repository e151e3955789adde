"""VAD-gated utterance segmenter: turns a caller's PCM stream into speech-started and utterance events.

Audio of any chunk length is buffered into 20 ms frames, and webrtcvad marks each frame voiced or not.

Rules (all durations in whole 20 ms frames):

* Speech. A voiced frame counts as speech only inside a run of at least ``MIN_RUN_FRAMES`` (2)
  consecutive voiced frames; when a run reaches that length its earlier frames count retroactively.
  A lone voiced frame is a VAD flip and counts as silence. Lone unvoiced frames inside speech need no
  special handling: an endpoint takes ``end_silence_ms`` of non-speech.
* Onset. The first speech run opens an utterance. Its pcm starts ``pre_roll_ms`` before the run's
  first frame (less if fewer frames have arrived since the previous utterance ended).
* Barge-in. ``SpeechStarted`` is emitted once per utterance, as soon as its speech frames total
  ``barge_in_min_ms``. It can precede an utterance that is later dropped as too short when
  ``barge_in_min_ms < min_speech_ms``.
* Endpoint. The utterance ends when its silence reaches ``end_silence_ms``, where silence is
  counted from the end of the voice: trailing speech frames quieter than ``TAIL_LEVEL`` of the
  loudest (webrtcvad's hangover) count as silence. It is:

  - in :meth:`Segmenter.push`: the non-speech frames pushed since its last speech frame, i.e. audio
    time. This holds whatever the pace: frames pushed faster than real time (a simulator at 4x, or a
    backlog all carrying the same ``now``) are endpointed by their own count.
  - in :meth:`Segmenter.tick`: those frames plus the wall-clock time since the last push arrived
    (``now - last push's now``). Time in which no frames arrive at all thus counts as silence, so a
    stream that goes quiet is still endpointed ``end_silence_ms`` after its last voiced frame. When
    frames arrive in real time the two measures agree. Once frames arrive again only they count.

* Pauses (speculation). With ``speculate_after_ms`` > 0, an utterance whose silence reaches it (and
  which already has ``min_speech_ms`` of speech) emits ``Pause`` once, carrying the audio so far: the
  call may start working on it. The first speech frame after that emits ``Resumed``: the caller went
  on, the work is void, and the utterance continues (nothing is cut). Each later pause does the same.
* Commit silence. :meth:`Segmenter.set_end_silence` changes the endpoint silence of the open
  utterance only (the call lengthens it while a transcript is pending or reads unfinished, shortens
  it when it reads finished); the next utterance starts again from ``end_silence_ms``.
* Length. An utterance whose audio from its first speech frame reaches ``max_utterance_s`` is cut
  and emitted with ``forced=True``. The next speech run opens a new utterance whose pre-roll is the
  audio after the cut, so no audio is lost or repeated.
* Minimum. An utterance with less than ``min_speech_ms`` of speech frames is dropped without an event
  (a click or a cough is not a turn).
* Trailing audio. An endpointed utterance's pcm runs to ``TRAIL_KEEP_MS`` after its last speech
  frame; the rest of the endpoint silence is trimmed.
* Position. Each ``Utterance`` and ``Pause`` says where its pcm begins in the stream (``start``: the
  index of its first sample among every sample pushed, whatever the chunk sizes), so the call can find
  the same stretch in another copy of the stream (a browser call's 16 kHz audio, pipeline/wideband.py).
  It costs one counter per frame.

Times: ``now`` is ``time.monotonic()`` when a chunk arrived, and every frame completed by that chunk
is taken to have arrived then. ``Utterance.speech_start`` / ``speech_end`` are the arrival times of
the first and last speech frames, where the last is refined by loudness: webrtcvad keeps flagging
frames for 100-130 ms after the voice stops (measured on eSpeak lines through μ-law), so trailing
speech frames below ``TAIL_LEVEL`` of the utterance's loudest frame are not counted as its end;
``SpeechStarted.at`` is the arrival time of the frame that reached
``barge_in_min_ms``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import webrtcvad

__all__ = ["FRAME_MS", "Pause", "Resumed", "Segmenter", "SegmenterEvent", "SpeechStarted", "Utterance"]

FRAME_MS = 20
MIN_RUN_FRAMES = 2  # voiced frames in a row before they count as speech
TRAIL_KEEP_MS = 100  # silence kept after the last speech frame of an endpointed utterance
TAIL_LEVEL = 0.05  # a trailing frame quieter than this fraction of the loudest (-26 dB) is VAD hangover
VAD_RATES = (8000, 16000, 32000, 48000)
_INT16 = np.dtype(np.int16)


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The caller has been speaking for ``barge_in_min_ms``: time to stop talking over them."""

    at: float


@dataclass(frozen=True, slots=True, eq=False)
class Utterance:
    """One caller turn: int16 PCM at the segmenter's rate, with pre-roll and a short silence tail."""

    pcm: np.ndarray
    speech_start: float
    speech_end: float
    voiced_ms: int
    forced: bool
    start: int = 0  # the stream's sample index of pcm[0] (samples pushed since the segmenter began)
    wide: np.ndarray | None = None  # the same stretch at the call's wideband rate, if it has one



@dataclass(frozen=True, slots=True, eq=False)
class Pause:
    """The caller paused for ``speculate_after_ms`` mid-utterance: the utterance so far, to work on early."""

    pcm: np.ndarray
    speech_start: float
    speech_end: float
    voiced_ms: int
    at: float
    start: int = 0  # the stream's sample index of pcm[0]
    wide: np.ndarray | None = None  # the same stretch at the call's wideband rate, if it has one


@dataclass(frozen=True, slots=True)
class Resumed:
    """The caller spoke again after a ``Pause``: the same utterance goes on."""

    at: float


SegmenterEvent: TypeAlias = SpeechStarted | Pause | Resumed | Utterance


@dataclass(slots=True)
class _OpenUtterance:
    frames: list[bytes]  # pre-roll + everything since onset, one 20 ms frame each
    start: int  # the stream's sample index of frames[0] (Utterance.start)
    onset_index: int  # index in frames of the first speech frame
    speech_start: float
    speech_end: float
    last_speech_index: int
    speech_frames: int  # frames counted as speech (see MIN_RUN_FRAMES)
    loudness: list[tuple[float, float]]  # (mean |sample|, arrival time) of each speech frame
    loudest: float = 0.0
    silence_frames: int = 0  # non-speech frames since the last speech frame
    started_emitted: bool = False
    paused: bool = False  # a Pause was emitted for the current silence
    end_silence_ms: int | None = None  # this utterance's endpoint silence, if set_end_silence changed it


class Segmenter:
    """Feed it caller audio with :meth:`push` and a timer with :meth:`tick`; it returns events."""

    def __init__(
        self,
        aggressiveness: int = 2,
        min_speech_ms: int = 250,
        pre_roll_ms: int = 300,
        end_silence_ms: int = 600,
        max_utterance_s: float = 30.0,
        barge_in_min_ms: int = 200,
        sample_rate: int = 8000,
        speculate_after_ms: int = 0,
    ) -> None:
        if sample_rate not in VAD_RATES:
            raise ValueError(f"webrtcvad supports {VAD_RATES} Hz, got {sample_rate}")
        self.sample_rate = sample_rate
        self.min_speech_ms = min_speech_ms
        self.end_silence_ms = end_silence_ms
        self.max_utterance_ms = max_utterance_s * 1000
        self.barge_in_min_ms = barge_in_min_ms
        self.speculate_after_ms = speculate_after_ms
        self._vad = webrtcvad.Vad(aggressiveness)
        self._frame_len = sample_rate * FRAME_MS // 1000
        pre_roll_frames = round(pre_roll_ms / FRAME_MS)
        # Frames seen while idle; the last MIN_RUN_FRAMES - 1 may turn out to start a speech run.
        self._ring: deque[bytes] = deque(maxlen=pre_roll_frames + MIN_RUN_FRAMES - 1)
        self._pending = np.zeros(0, dtype=np.int16)  # less than one frame, awaiting more input
        self._run = 0  # consecutive voiced frames up to now
        self._run_start_at = 0.0
        self._last_arrival: float | None = None
        self._open: _OpenUtterance | None = None
        self._resumed_at: float | None = None  # a Resumed to report with the frame's events
        self._last_chunk_ms = 0.0  # the audio length of the latest push: the carrier's chunk
        self._frames_in = 0  # frames taken so far: where each utterance starts in the stream
        self._dropped = 0  # samples of partial frames dropped by reset (sample indexes count them)

    def push(self, pcm: np.ndarray, now: float) -> list[SegmenterEvent]:
        """Add caller audio (mono int16, any length) that arrived at monotonic time ``now``."""
        pcm = np.asarray(pcm)
        if pcm.dtype != _INT16 or pcm.ndim != 1:  # a dtype, not np.int16: no conversion per frame
            raise TypeError(f"expected mono int16 PCM, got {pcm.dtype} with shape {pcm.shape}")
        if pcm.size == 0:
            return []
        self._last_arrival = now
        self._last_chunk_ms = pcm.size * 1000 / self.sample_rate
        events: list[SegmenterEvent] = []
        for frame in self._split_frames(pcm):
            self._on_frame(frame, now, events)
        return events

    def tick(self, now: float) -> list[SegmenterEvent]:
        """Endpoint on wall-clock time when frames stop arriving; call every ~50 ms."""
        utt = self._open
        if utt is None or self._last_arrival is None:
            return []
        gap_ms = max(0.0, now - self._last_arrival) * 1000
        silence_ms = utt.silence_frames * FRAME_MS + gap_ms
        events: list[SegmenterEvent] = []
        if silence_ms >= self._end_silence(utt):
            self._finish(utt, forced=False, events=events)
        # the gap before a chunky carrier's next chunk is not a pause
        elif self._should_pause(utt, silence_ms - self._last_chunk_ms):
            self._pause(utt, now, events)
        return events

    @property
    def in_utterance(self) -> bool:
        """The caller has started an utterance that has not ended yet."""
        return self._open is not None

    @property
    def speech_start(self) -> float | None:
        """When the open utterance's speech began (None: no utterance is open)."""
        return None if self._open is None else self._open.speech_start

    @property
    def voiced_now(self) -> bool:
        """The latest frame was speech (part of a run of voiced frames)."""
        return self._run >= MIN_RUN_FRAMES

    def recent_audio(self, ms: int) -> np.ndarray:
        """The open utterance's last ``ms`` of audio (empty when there is none)."""
        if self._open is None:
            return np.zeros(0, dtype=np.int16)
        frames = self._open.frames[-max(1, ms // FRAME_MS):]
        return np.frombuffer(b"".join(frames), dtype=np.int16)

    def set_end_silence(self, ms: int | None) -> None:
        """Set the open utterance's endpoint silence (None: back to ``end_silence_ms``)."""
        if self._open is not None:
            self._open.end_silence_ms = ms

    def _end_silence(self, utt: _OpenUtterance) -> int:
        return self.end_silence_ms if utt.end_silence_ms is None else utt.end_silence_ms

    def _should_pause(self, utt: _OpenUtterance, silence_ms: float) -> bool:
        return (
            self.speculate_after_ms > 0
            and not utt.paused
            and silence_ms >= self.speculate_after_ms
            and utt.speech_frames * FRAME_MS >= self.min_speech_ms
        )

    def _pause(self, utt: _OpenUtterance, now: float, events: list[SegmenterEvent]) -> None:
        utt.paused = True
        pcm = self._pcm(utt, forced=False)
        voiced_ms = utt.speech_frames * FRAME_MS
        events.append(Pause(pcm, utt.speech_start, _voice_end(utt), voiced_ms, now, utt.start))

    def reset(self) -> None:
        """Drop any partial utterance and buffered audio, as if the stream had just started."""
        self._open = None
        self._ring.clear()
        self._dropped += self._pending.size
        self._pending = np.zeros(0, dtype=np.int16)
        self._run = 0
        self._last_arrival = None
        self._resumed_at = None

    def _split_frames(self, pcm: np.ndarray) -> list[bytes]:
        if len(pcm) == self._frame_len and not self._pending.size:
            return [pcm.tobytes()]  # the common case: one whole 20 ms frame
        if self._pending.size:
            pcm = np.concatenate([self._pending, pcm])
        usable = len(pcm) - len(pcm) % self._frame_len
        self._pending = pcm[usable:].copy()
        data = pcm[:usable].tobytes()
        step = self._frame_len * 2  # bytes per frame
        return [data[i : i + step] for i in range(0, len(data), step)]

    def _on_frame(self, frame: bytes, now: float, events: list[SegmenterEvent]) -> None:
        self._frames_in += 1
        if self._vad.is_speech(frame, self.sample_rate):
            self._run += 1
            if self._run == 1:
                self._run_start_at = now
        else:
            self._run = 0
        is_speech = self._run >= MIN_RUN_FRAMES
        utt = self._open
        if utt is None:
            if not is_speech:
                self._ring.append(frame)
                return
            utt = self._start_utterance(frame, now)
        else:
            self._extend_utterance(utt, frame, is_speech, now)
        self._check_utterance(utt, now, events)

    def _start_utterance(self, frame: bytes, now: float) -> _OpenUtterance:
        frames = [*self._ring, frame]
        count = len(frames)
        self._ring.clear()
        self._open = _OpenUtterance(
            frames=frames,
            start=(self._frames_in - count) * self._frame_len + self._dropped,
            onset_index=count - MIN_RUN_FRAMES,
            speech_start=self._run_start_at,
            speech_end=now,
            last_speech_index=count - 1,
            speech_frames=MIN_RUN_FRAMES,
            loudness=[(_level(frame), now)],
            loudest=_level(frame),
        )
        return self._open

    def _extend_utterance(self, utt: _OpenUtterance, frame: bytes, is_speech: bool, now: float) -> None:
        utt.frames.append(frame)
        if not is_speech:
            utt.silence_frames += 1
            return
        # The run's earlier frames were counted as silence until it reached MIN_RUN_FRAMES.
        utt.speech_frames += MIN_RUN_FRAMES if self._run == MIN_RUN_FRAMES else 1
        utt.speech_end = now
        level = _level(frame)
        utt.loudness.append((level, now))
        utt.last_speech_index = len(utt.frames) - 1
        # The endpoint silence runs from the voice's end, not from the VAD's hangover after it.
        utt.loudest = max(utt.loudest, level)
        if level >= TAIL_LEVEL * utt.loudest:
            utt.silence_frames = 0
            if utt.paused:
                utt.paused = False
                self._resumed_at = now
        else:
            utt.silence_frames += 1

    def _check_utterance(self, utt: _OpenUtterance, now: float, events: list[SegmenterEvent]) -> None:
        if self._resumed_at is not None:
            events.append(Resumed(at=self._resumed_at))
            self._resumed_at = None
        if not utt.started_emitted and utt.speech_frames * FRAME_MS >= self.barge_in_min_ms:
            utt.started_emitted = True
            events.append(SpeechStarted(at=now))
        if utt.silence_frames * FRAME_MS >= self._end_silence(utt):
            self._finish(utt, forced=False, events=events)
        elif (len(utt.frames) - utt.onset_index) * FRAME_MS >= self.max_utterance_ms:
            self._finish(utt, forced=True, events=events)
        elif self._should_pause(utt, utt.silence_frames * FRAME_MS):
            self._pause(utt, now, events)

    def _finish(self, utt: _OpenUtterance, forced: bool, events: list[SegmenterEvent]) -> None:
        self._open = None
        self._ring.clear()  # its frames belong to the utterance; the next pre-roll starts afresh
        self._run = 0
        voiced_ms = utt.speech_frames * FRAME_MS
        if voiced_ms < self.min_speech_ms:
            return
        events.append(Utterance(self._pcm(utt, forced), utt.speech_start, _voice_end(utt), voiced_ms, forced,
                                utt.start))

    @staticmethod
    def _pcm(utt: _OpenUtterance, forced: bool) -> np.ndarray:
        end = len(utt.frames) if forced else utt.last_speech_index + 1 + TRAIL_KEEP_MS // FRAME_MS
        return np.frombuffer(b"".join(utt.frames[:end]), dtype=np.int16).copy()


def _level(frame: bytes) -> float:
    """The frame's mean |sample| (as .mean(), exactly: an integer sum, then one division; half the cost)."""
    samples = np.frombuffer(frame, dtype=np.int16)
    return int(np.abs(samples.astype(np.int32)).sum()) / len(samples)


def _voice_end(utt: _OpenUtterance) -> float:
    """Arrival time of the last speech frame that is not just the VAD's hangover."""
    for level, arrived in reversed(utt.loudness):
        if level >= utt.loudest * TAIL_LEVEL:
            return arrived
    return utt.speech_end
