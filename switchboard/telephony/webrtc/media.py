"""A browser call's audio both ways: Opus at 48 kHz on the wire, the pipeline's 8 kHz PCM16 inside.

`Inbound`: the frames aiortc decodes from the caller's Opus (48 kHz, usually stereo s16) to the
pipeline's 20 ms frames (mono, 8 kHz, 160 samples), each with the same 20 ms at 16 kHz (320 samples) for
the recognisers that hear better with wideband audio (`Media.wide`). One soxr stream per call brings the
audio to 16 kHz (it holds back ~21 ms), and the half-band filter takes each 16 kHz frame down to 8 kHz
(3 ms, nothing held back), so both come out together, sample for sample: 16 kHz sample 2i is 8 kHz
sample i (the 16 kHz copy is delayed by the filter's group delay to match). soxr straight from 48 to
8 kHz held back 128 ms, so the narrowband path is also ~100 ms quicker this way.

`BotTrack`: the bot's side, an aiortc audio track. The call's player hands it 8 kHz frames and marks
(through `WebRTCLink`); aiortc's sender asks for one 20 ms frame at a time. The track encodes it itself
(`OpusEncoder`: mono, at the 8 kHz the bot speaks, which Opus takes as it is; its RTP clock is still
48 kHz) and hands aiortc the packet, which aiortc sends as it is. aiortc's own encoder would upmix each
frame to 48 kHz stereo and encode that on its thread pool: about 2-3 times the CPU for the same 4 kHz of
audio, and a hand-off to a thread for every frame. `recv` is paced at real time by the track's own clock
and sends silence when nothing is queued, so the stream never stalls. Each frame's timestamp is its slot
on that clock: a sender held up longer than `MAX_BEHIND_S` (the event loop stalled) does not burst to
catch up, and its next frame's timestamp jumps over the slots it missed, so the browser hears a short gap
where it stalled. With timestamps that ran on as if nothing happened, the browser's jitter buffer (NetEq)
takes the stall for network delay and plays everything after it that much later, for good: after a stall
of 1.7 s it held 1.6-1.9 s of audio, and the bot went on that long after the caller talked over it.
A mark comes back once the audio before it has gone out (one frame time after its last frame was handed
over); `clear` (barge-in) drops everything queued, so the very next frame is silence, and hands back the
marks it dropped (as Twilio echoes cleared marks).
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque
from collections.abc import Awaitable, Callable

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

from switchboard.audio.resample import HalfbandResampler, StreamResampler
from switchboard.core.carrier import LINE_RATE
from switchboard.telephony.webrtc.wire import WIDE_RATE

FRAME_SAMPLES = LINE_RATE // 50  # 20 ms at 8 kHz
WIDE_FRAME_SAMPLES = WIDE_RATE // 50
# the half-band filter's group delay going down, in 16 kHz samples (46.5, measured; an even number keeps
# 16 kHz sample 2i on 8 kHz sample i): the 16 kHz copy is held back this much to line up with the 8 kHz
WIDE_LAG = 46
FRAME_S = 0.020
MAX_BEHIND_S = 0.1  # a sender this late (a stalled loop) skips the slots it missed instead of bursting
TIME_BASE = fractions.Fraction(1, LINE_RATE)
OPUS_COMPLEXITY = "5"  # libopus 0-10 (default 10): 5 costs ~3/4 of it; narrowband speech loses nothing heard
OPUS_BITRATE = 24000  # narrowband speech needs no more (a frame of the bot's voice came out at ~14 kbit/s)


def mono_int16(frame: AudioFrame) -> np.ndarray:
    """A decoded frame's samples as mono int16 (stereo averaged), whatever its s16 layout."""
    samples = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.name not in ("s16", "s16p"):
        raise ValueError(f"expected s16 audio from the decoder, got {frame.format.name}")
    if frame.format.is_planar:  # (channels, samples)
        pcm = samples
    else:  # packed: (1, samples * channels), interleaved
        pcm = samples.reshape(-1, channels).T
    if channels == 1:
        return pcm[0].astype(np.int16, copy=False)
    if channels == 2:  # a browser's microphone: numpy's mean() over 2 rows cost more than the resampling
        return ((pcm[0].astype(np.int32) + pcm[1]) >> 1).astype(np.int16)
    return pcm.astype(np.int32).mean(axis=0).astype(np.int16)


class OpusEncoder:
    """The bot's 20 ms frames (mono, 8 kHz) to Opus packets stamped on the RTP clock by their slot."""

    def __init__(self) -> None:
        self.codec = av.CodecContext.create("libopus", "w")
        self.codec.sample_rate = LINE_RATE
        self.codec.format = "s16"
        self.codec.layout = "mono"
        self.codec.bit_rate = OPUS_BITRATE
        self.codec.time_base = TIME_BASE
        self.codec.options = {"application": "voip", "compression_level": OPUS_COMPLEXITY}

    def encode(self, pcm: np.ndarray, pts: int) -> av.Packet:
        frame = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = LINE_RATE, pts, TIME_BASE
        packets = self.codec.encode(frame)
        if len(packets) != 1:  # libopus takes a whole 20 ms frame and gives its packet at once
            raise RuntimeError(f"the Opus encoder gave {len(packets)} packets for one 20 ms frame")
        packet = packets[0]
        packet.pts, packet.time_base = pts, TIME_BASE  # (its own pts is shifted by the encoder's lookahead)
        return packet


class Inbound:
    """The caller's decoded audio at any rate -> the pipeline's 20 ms frames: (8 kHz, 16 kHz) pairs of the
    same 20 ms."""

    def __init__(self) -> None:
        self._resampler: StreamResampler | None = None
        self._down = HalfbandResampler(up=False)
        self._pending = np.zeros(0, dtype=np.int16)  # 16 kHz, less than a frame
        self._lag = np.zeros(WIDE_LAG, dtype=np.int16)  # the 16 kHz copy's last samples, not yet out

    def frames(self, frame: AudioFrame) -> list[tuple[np.ndarray, np.ndarray]]:
        rate = frame.sample_rate
        if self._resampler is None or self._resampler.in_rate != rate:
            self._resampler = StreamResampler(rate, WIDE_RATE)
        pcm = np.concatenate([self._pending, self._resampler.process(mono_int16(frame))])
        whole = len(pcm) - len(pcm) % WIDE_FRAME_SAMPLES
        self._pending = pcm[whole:]
        if not whole:
            return []
        narrow = self._down.process(pcm[:whole])
        wide = np.concatenate([self._lag, pcm[:whole]])
        self._lag = wide[whole:]
        return [(narrow[n * FRAME_SAMPLES:(n + 1) * FRAME_SAMPLES],
                 wide[n * WIDE_FRAME_SAMPLES:(n + 1) * WIDE_FRAME_SAMPLES])
                for n in range(whole // WIDE_FRAME_SAMPLES)]


class BotTrack(MediaStreamTrack):
    """The bot's outgoing audio: 8 kHz frames and marks queued by the link, paced out at real time."""

    kind = "audio"

    def __init__(self, on_mark: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        super().__init__()
        self.on_mark = on_mark  # a mark's audio went out (or was cleared)
        self._clock, self._sleep = clock, sleep
        self._queue: deque[np.ndarray | str] = deque()  # 20 ms frames and mark names, in order
        self._partial = np.zeros(0, dtype=np.int16)
        self._start: float | None = None  # when slot 0 was due
        self._slot = 0  # the next frame's slot on the track's clock: its time and its timestamp
        self._opus = OpusEncoder()
        self.frames_sent = 0
        self.audio_frames_sent = 0  # frames that carried the bot's audio (not silence)

    # --- what the link calls ----------------------------------------------------------------------

    def push(self, pcm: np.ndarray) -> None:
        pcm = np.concatenate([self._partial, pcm.astype(np.int16, copy=False)])
        whole = len(pcm) - len(pcm) % FRAME_SAMPLES
        self._queue.extend(pcm[at:at + FRAME_SAMPLES] for at in range(0, whole, FRAME_SAMPLES))
        self._partial = pcm[whole:]

    def mark(self, name: str) -> None:
        if len(self._partial):  # a tail shorter than a frame goes out padded, before its mark
            self._queue.append(np.concatenate(
                [self._partial, np.zeros(FRAME_SAMPLES - len(self._partial), dtype=np.int16)]))
            self._partial = np.zeros(0, dtype=np.int16)
        self._queue.append(name)

    def clear(self) -> None:
        """Drop everything not sent yet: the next frame out is silence. Dropped marks come back."""
        dropped = [item for item in self._queue if isinstance(item, str)]
        self._queue.clear()
        self._partial = np.zeros(0, dtype=np.int16)
        for name in dropped:
            self.on_mark(name)

    @property
    def queued_ms(self) -> int:
        return 20 * sum(1 for item in self._queue if not isinstance(item, str))

    # --- what aiortc's sender calls -----------------------------------------------------------------

    async def recv(self) -> av.Packet:
        """The next 20 ms of the bot as an Opus packet, at its time (aiortc's sender sends it as it is)."""
        frame = await self.frame()
        return self._opus.encode(frame.to_ndarray()[0], frame.pts)

    async def frame(self) -> AudioFrame:
        """The next 20 ms of the bot (silence if nothing is queued), at its time, stamped with its slot."""
        if self.readyState != "live":
            raise MediaStreamError
        now = self._clock()
        if self._start is None:
            self._start = now
        behind = now - (self._start + self._slot * FRAME_S)
        if behind > MAX_BEHIND_S:  # stalled: this frame takes the slot of now, the missed ones stay empty
            self._slot = round((now - self._start) / FRAME_S)
        elif behind < 0:
            await self._sleep(-behind)
        slot = self._slot
        self._slot += 1
        self._marks_reached()  # what was before them has had its frame time
        pcm = self._next_frame()
        self.frames_sent += 1
        frame = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = LINE_RATE
        frame.pts = slot * FRAME_SAMPLES
        frame.time_base = TIME_BASE
        return frame

    def _marks_reached(self) -> None:
        while self._queue and isinstance(self._queue[0], str):
            self.on_mark(self._queue.popleft())  # type: ignore[arg-type]

    def _next_frame(self) -> np.ndarray:
        if self._queue and not isinstance(self._queue[0], str):
            self.audio_frames_sent += 1
            return self._queue.popleft()  # type: ignore[return-value]
        return np.zeros(FRAME_SAMPLES, dtype=np.int16)

    def stop(self) -> None:
        self.clear()  # its marks come back: nothing waits on them
        super().stop()
