"""How a cascade call's bot speaks (a part of `CallSession`, pipeline/call.py): a chunk synthesised
through the TTS chain (or a fixed line from memory), resampled to 8 kHz and queued for the caller with
a mark after it, held back while the turn may not play; waiting until the caller heard it; hanging up
and handing the call over once the last words were heard."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import numpy as np

from switchboard.audio.resample import StreamResampler
from switchboard.core.messages import ToolCall
from switchboard.core.metrics import TurnMetrics
from switchboard.pipeline import failover
from switchboard.pipeline.call_turn import Spoken, Turn
from switchboard.pipeline.text import speakable
from switchboard.pipeline.tools import transfer_target

log = logging.getLogger("switchboard.call")

MARK_GRACE_S = 5.0  # how long past its audio's end we wait for a mark before giving up on it
FLOOR_POLL_S = 0.02  # how often a ready reply checks whether the caller has stopped talking


class Voice:
    """How the bot speaks and is heard (on `CallSession`'s player, voices and segmenter)."""

    async def _speak(self, text: str, turn: Turn, fixed: bool = False) -> None:
        """Synthesise one chunk (a `fixed` line, the same on every call, comes from memory), queue it for
        the caller at 8 kHz, and put a mark after it.

        Until the turn may play (`_may_play`) the audio is held back, and the chunk waits: a speculative
        turn prepares its first chunk of speech and no more."""
        text = speakable(text)
        if not text:
            return
        metrics = turn.metrics
        metrics.first_chunk = metrics.first_chunk or time.monotonic()
        held: list[np.ndarray] = []

        def first_frame_sent(at: float) -> None:
            metrics.first_audio_sent = metrics.first_audio_sent or at

        def play(line_audio: np.ndarray) -> None:
            if not self._may_play(turn):
                held.append(line_audio)
                return
            turn.playing = True
            for earlier in held:
                self.player.enqueue(earlier, first_frame_sent)
            held.clear()
            self.player.enqueue(line_audio, first_frame_sent)

        samples = 0
        voice = (self.lines.speak(self.tts_chain, text, metrics, self.hedging)
                 if fixed and self.lines is not None else self._synthesize(text, metrics))
        async with contextlib.aclosing(voice):
            async for line_audio in voice:
                metrics.tts_first_byte = metrics.tts_first_byte or time.monotonic()
                samples += len(line_audio)
                play(line_audio)
        metrics.bot_audio_ms += samples // 8
        while not self._may_play(turn):
            await turn.committed.wait()
            if not self._may_play(turn):
                await asyncio.sleep(FLOOR_POLL_S)
        play(np.zeros(0, dtype=np.int16))
        turn.spoken.append(Spoken(self.player.enqueue_mark(), text, samples / 8000))

    async def _synthesize(self, text: str, metrics: TurnMetrics) -> AsyncIterator[np.ndarray]:
        """`text` from the TTS chain, at 8 kHz."""
        metrics.tts_chars += len(text)
        resampler: StreamResampler | None = None
        pieces = failover.synthesize(self.tts_chain, text, metrics, self.hedging)
        async with contextlib.aclosing(pieces):
            async for tts, pcm in pieces:
                resampler = self._line_resampler(tts.sample_rate)
                yield resampler.process(pcm)
        if resampler is not None:
            yield resampler.flush()  # soxr holds back tens of ms until flushed

    def _may_play(self, turn: Turn) -> bool:
        """A turn starts talking once committed, and not while the caller is in the middle of saying
        something (that utterance will supersede it, or turn out to be a cough)."""
        return turn.committed.is_set() and (turn.playing or not self.segmenter.in_utterance)

    def _flush_line_resamplers(self) -> None:
        for resampler in self.to_line_rate.values():
            resampler.flush()  # drop what a cut chunk left inside it

    def _line_resampler(self, rate: int) -> StreamResampler:
        if rate not in self.to_line_rate:
            self.to_line_rate[rate] = StreamResampler(rate, 8000)
        return self.to_line_rate[rate]

    async def _wait_heard(self, spoken: list[Spoken], watchdog_s: float | None = None) -> None:
        """Wait until the caller has heard the last chunk, it was cleared, or its mark is overdue."""
        if spoken:
            overdue_s = watchdog_s or sum(s.audio_s for s in spoken) + MARK_GRACE_S
            await self.player.wait_mark(spoken[-1].mark, within_s=overdue_s)

    async def _hang_up(self, spoken: list[Spoken]) -> None:
        if spoken and not self.player.heard(spoken[-1].mark):
            log.warning("call %s: farewell not acknowledged; hanging up anyway", self.call_id)
        log.info("call %s: hanging up (end_call)", self.call_id)
        await self.link.hang_up()

    async def _hand_over(self, turn: Turn, call: ToolCall) -> None:
        """transfer_call, its line said: the carrier hands the call over, or the caller hears it failed."""
        assert self.config.transfer is not None
        transfer, metrics = self.config.transfer, turn.metrics
        target = transfer_target(call, transfer.targets, self.call_id)
        if await self.link.transfer(target):
            metrics.transferred_to = target
            return
        metrics.failures.append(f"transfer to {target} failed")
        metrics.ended_call, self._ending = False, False  # the caller is still with us
        metrics.reply_text += " " + transfer.failed
        await self._speak(transfer.failed, turn, fixed=True)
        await self._wait_heard(turn.spoken)
