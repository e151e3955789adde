"""The caller's side of a realtime call: their audio to the vendor (through our VAD, with the bot's
own echo sent as silence by a short delay line), the carrier's marks, and barge-in: the reply stopped at
the carrier and the vendor, the vendor's copy truncated at what the caller heard of it.

The 8 kHz frame is what our side reads (VAD, echo checks, barge-in, the recorder), whatever the carrier.
A browser call's carrier also hands each frame at 16 kHz (`wide`): when the vendor takes that rate
(`input_rates`), it is what the vendor hears (`self.wide`, pipeline/wideband.py), through the same delay
line frame for frame (its echo sent as silence just as long); a phone call sends the 8 kHz frame."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from switchboard.audio.segmenter import SpeechStarted, Utterance
from switchboard.core.errors import ProviderError
from switchboard.core.realtime import ResponseDone
from switchboard.pipeline.realtime_state import (
    CUT_GRACE_S,
    ECHO_RECHECK_EVERY,
    ECHO_WINDOW_MS,
    LAST_RESORT,
    STALL_S,
    RealtimeState,
    ReplyItem,
    Turn,
    log,
)


class CallerSide(RealtimeState):
    """The caller's audio, marks and barge-in (a part of `RealtimeSession`)."""

    async def on_audio(self, pcm: np.ndarray, now: float | None = None, *, wide: np.ndarray | None = None
                       ) -> None:
        """The caller's 8 kHz frame, and a wideband carrier's 16 kHz copy of it (`wide`: what the vendor
        hears, when it takes that rate)."""
        at = time.monotonic() if now is None else now
        if self.recorder is not None:
            self.recorder.add_caller(pcm, at)
        for event in self.segmenter.push(pcm, at):
            await self._on_segment(event)
        if self._echo and not self.segmenter.in_utterance:
            self._echo = False  # the echo was too short to be an utterance
        await self._recheck_echo()
        heard = pcm if self.wide is None else self.wide.frame(pcm, wide)
        await self._forward(np.zeros_like(heard) if self._echo else heard)

    async def _forward(self, pcm: np.ndarray) -> None:
        """Send the caller's audio to the vendor. While the bot is audible it goes through a delay line
        as long as our barge-in decision takes, so audio that turns out to be the bot's own echo is sent
        as silence (the vendor would take it for the caller and interrupt itself); a real barge-in
        flushes the line at once (the clear makes the bot inaudible)."""
        line = self._delay_line
        if self.player.audible:
            line.append(pcm)
            self._delayed += len(pcm)
            while line and self._delayed - len(line[0]) >= self._delay_samples:
                self._delayed -= len(line[0])
                await self._send(line.popleft())
            return
        while line:
            self._delayed -= len(line[0])
            await self._send(line.popleft())
        await self._send(pcm)

    async def _send(self, pcm: np.ndarray) -> None:
        if self._conn is None or self._renewing:
            return  # between sessions: the new one hears from its start
        try:
            await self._conn.send_audio(pcm)
        except ProviderError:
            pass  # the reader sees the drop and handles it

    async def _on_segment(self, event: object) -> None:
        if isinstance(event, SpeechStarted):
            if self._sounds_like_echo():
                self._mute_echo()
                log.info("call %s: the bot's own voice is coming back on the line (echo): not sent",
                         self.call_id)
            else:
                await self._barge_in("our VAD heard the caller")
        elif isinstance(event, Utterance):
            self._echo = False
            self._utterances = [*self._utterances[-9:], (event.speech_start, event.speech_end)]
            self._utterance_ended.set()
            if self._reply_began < event.speech_end:  # none yet (the vendor's endpointing can be quicker)
                self._reply_owed_until = time.monotonic() + self.model.timeouts.first_token_s

    async def _recheck_echo(self) -> None:
        """Every few frames of voice while the bot talks: the bot's echo may have run on into an utterance
        of the caller's that is not endpointed yet (no new speech start to check it at), and the caller
        may start talking over an echo."""
        if not (self.segmenter.in_utterance and self.player.audible and self.segmenter.voiced_now):
            return
        self._echo_checks += 1
        if self._echo_checks % ECHO_RECHECK_EVERY:
            return
        echo = self._sounds_like_echo()
        if echo and not self._echo:
            self._mute_echo()
            log.info("call %s: the bot's echo ran on into the caller's audio: not sent", self.call_id)
        elif self._echo and not echo:
            self._echo = False
            log.info("call %s: the caller is talking over the echo", self.call_id)
            await self._barge_in("our VAD heard the caller over the echo")

    def _mute_echo(self) -> None:
        self._echo = True
        for n, held in enumerate(self._delay_line):  # the echo so far is not sent either
            self._delay_line[n] = np.zeros_like(held)

    def _sounds_like_echo(self) -> bool:
        caller_audio = self.segmenter.recent_audio(ECHO_WINDOW_MS)
        return self.player.echoes(caller_audio, self.config.turn.echo_similarity)

    def on_mark(self, name: str) -> None:
        self._acked[name] = time.monotonic()
        self.player.on_mark(name)

    def _heard_ms(self, item: ReplyItem, now: float | None = None) -> int:
        """How much of an item the caller heard: up to its last acknowledged mark, plus the time since
        that mark's audio played out (the carrier went on playing what followed), at most what was sent.

        "Played out" is our pacing's reading for the mark, not the ack's arrival: the ack comes a network
        delay after the carrier played it, and the clear reaches the carrier a network delay after now,
        so measuring from the pacing cancels the delay. An ack much later than that (a carrier that
        stalled) is trusted instead."""
        now = time.monotonic() if now is None else now
        heard, since = 0, item.first_sent
        for mark, ms in item.marks:
            acked = self._acked.get(mark)
            if acked is None:
                break
            due = self.player.plays_out_at(mark)
            heard, since = ms, (due if due is not None and acked - due < STALL_S else acked)
        if since is None or heard >= item.sent_ms:
            return min(heard, item.sent_ms)
        return min(item.sent_ms, heard + max(0, round((now - since) * 1000)))

    async def _barge_in(self, why: str, vendor_heard: bool = False) -> None:
        """The caller talks over the reply: stop it at the carrier, at the vendor, and truncate the
        vendor's copy of the reply to what the caller heard."""
        turn = self._turn
        if self._ending or turn is None or turn.metrics.interrupted or turn.metrics.turn_done is not None:
            return
        tools_running = turn.tool_round is not None and not turn.tool_round.done() and not turn.results_back
        # while only the tools run (nothing to stop playing), the vendor's own VAD decides: a cough our VAD
        # took for speech must not cancel a booking the vendor would then never be asked to answer
        if not (self.player.audible or self._responding or (tools_running and vendor_heard)):
            return
        now = time.monotonic()
        item = turn.items[-1] if turn.items else None
        heard = self._heard_ms(item, now) if item is not None else 0
        log.info("call %s: barge-in (%s) after %d ms of the reply", self.call_id, why, heard)
        turn.barged_in = turn.metrics.interrupted = True  # before any await: the rest of it is void now
        self._stop_playing_turn(turn)
        await self.player.clear()
        if tools_running:
            await self._drop_tool_round(turn)
        conn = self._conn
        try:
            if conn is not None and self._responding and not vendor_heard:
                await conn.cancel()  # the vendor's own VAD cancels by itself when it hears them
            if conn is not None and item is not None and item.item_id != LAST_RESORT and heard < item.sent_ms:
                await conn.truncate(item.item_id, heard)
        except ProviderError as exc:
            log.warning("call %s: could not stop the vendor's reply: %s", self.call_id, exc)
        turn.done = True
        if not self._responding:
            self._finish_now(turn)
            if tools_running:
                await self._ask_deferred()  # asked while the tools ran (the time limit's goodbye)
            return
        # still generating: recorded at its response.done (with its usage), or soon in any case
        self._cut = True
        if turn.finishing is not None:
            turn.finishing.cancel()
        turn.finishing = asyncio.create_task(self._finish_later(turn), name=f"cut-{self.call_id}")

    async def _finish_later(self, turn: Turn) -> None:
        await asyncio.sleep(CUT_GRACE_S)
        if self._cut:
            log.warning("call %s: no response.done for a cut reply within %g s", self.call_id, CUT_GRACE_S)
            await self._cut_done(None)

    async def _cut_done(self, done: ResponseDone | None) -> None:
        """The cut reply's response.done (or its grace ran out): record the turn with its usage, and ask
        for what was asked meanwhile."""
        self._cut = False
        turn = self._turn
        if turn is not None and turn.metrics.interrupted:
            if done is not None and done.usage is not None:
                metrics = turn.metrics
                metrics.tokens_in = (metrics.tokens_in or 0) + done.usage.text_in
                metrics.tokens_out = (metrics.tokens_out or 0) + done.usage.text_out
                metrics.audio_tokens_in = (metrics.audio_tokens_in or 0) + done.usage.audio_in
                metrics.audio_tokens_out = (metrics.audio_tokens_out or 0) + done.usage.audio_out
            self._finish_now(turn)
        await self._ask_deferred()

    def _stop_playing_turn(self, turn: Turn) -> None:
        for item in turn.items:
            item.remainder = np.zeros(0, dtype=np.int16)

