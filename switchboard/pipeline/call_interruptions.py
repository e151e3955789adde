"""The caller talking over a cascade call's bot (a part of `CallSession`, pipeline/call.py): barge-in
(the turn in flight cancelled, the player cleared), a reply undone when the caller had only paused, the
hold while their words say whether it was a backchannel (the bot goes on) or an interruption, and the
bot's own voice coming back on the line (echo)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from switchboard.audio.murmur import is_murmur
from switchboard.audio.segmenter import Utterance
from switchboard.core.metrics import TurnMetrics
from switchboard.pipeline import failover
from switchboard.pipeline.backchannel import is_backchannel
from switchboard.pipeline.call_turn import joined
from switchboard.pipeline.wideband import for_recognisers

log = logging.getLogger("switchboard.call")

ECHO_WINDOW_MS = 300  # the caller's latest audio compared with the bot's
ECHO_RECHECK_EVERY = 5  # frames between checks of an utterance taken for echo


@dataclass(eq=False)
class Hold:
    """The caller started talking over the bot: it is paused (the caller hears nothing) until their words
    say whether it was a backchannel (it goes on) or an interruption (its reply is dropped)."""

    since: float
    judging: asyncio.Task | None = None
    backchannel: bool = False  # judged so: the bot has gone on
    heard: Utterance | None = None  # what they finished saying over it so far, judged with what follows


class Interruptions:
    """Barge-in, backchannel holds and echo (on `CallSession`'s turn, player and segmenter)."""

    # --- barge-in ---------------------------------------------------------------------------------------

    async def _barge_in(self) -> None:
        """The caller talks over the bot: stop talking at once and drop the turn in flight."""
        if self._ending or not self.busy:
            return
        log.info("call %s: barge-in", self.call_id)
        task = self._turn.task if self._turn is not None else None
        if task is not None:
            task.cancel()  # it can't queue more audio now: it wakes up to CancelledError
        self._barging_in += 1  # whoever barges in goes on to a turn of its own: nobody else starts one
        try:
            await self.player.clear()  # the clear goes out before we wait for the turn to unwind
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)
        finally:
            self._barging_in -= 1
        self._flush_line_resamplers()

    # --- backchannels: "yeah" while the bot talks ------------------------------------------------

    def _just_started_answering(self) -> bool:
        turn = self._turn
        started = turn.metrics.first_audio_sent if turn is not None else None
        window_s = self.config.turn.undo_reply_within_ms / 1000
        return (turn is not None and turn.metrics.kind == "reply" and started is not None
                and not self._ending and time.monotonic() - started <= window_s)

    def _learn_went_on(self) -> None:
        """The caller speaks again just as the bot answers what it took for their whole turn: they had only
        paused. Endpointing learns how long (from their last word to this one)."""
        turn, start = self._turn, self.segmenter.speech_start
        if turn is None or turn.metrics.kind != "reply" or turn.metrics.speech_end is None or start is None:
            return
        self.endpointing.went_on((start - turn.metrics.speech_end) * 1000)

    async def _undo_reply(self) -> None:
        """The caller was not done: stop at once, and make it as if the bot had said nothing."""
        assert self._turn is not None
        self._turn.undone = self._turn.metrics.undone = True
        log.info("call %s: the caller went on as the bot started answering: reply undone", self.call_id)
        await self._barge_in()

    def _may_hold(self) -> bool:
        """Speech over the bot's reply: pause it and listen first, rather than drop the reply at once?"""
        turn = self._turn
        return (self.config.interruption.backchannels and not self._ending and self._hold is None
                and turn is not None and turn.playing and self.player.audible)

    async def _hold_for_words(self, at: float) -> None:
        self._hold = Hold(since=at)
        await self.player.pause()  # the caller stops hearing the bot now; nothing is dropped yet
        log.info("call %s: the caller talks over the bot: paused until their words say why", self.call_id)

    def _judge_hold(self, heard: Utterance, ended: bool) -> None:
        """Transcribe what the caller said over the bot (at a pause in it, so far, or once it `ended`) and
        act; what they finished saying before, while the bot stayed paused, is judged with it."""
        hold = self._hold
        assert hold is not None
        if hold.judging is not None:
            hold.judging.cancel()
        heard = joined(hold.heard, heard)
        if ended:
            hold.heard = heard
        self._start_judging(hold, heard, heard if ended else None)

    def _start_judging(self, hold: Hold, heard: Utterance, utterance: Utterance | None) -> None:
        hold.judging = self._judging = asyncio.create_task(self._judge(hold, heard, utterance),
                                                           name=f"judge-{self.call_id}")

    async def _judge(self, hold: Hold, heard: Utterance, utterance: Utterance | None) -> None:
        hummed = is_murmur(heard.pcm)
        if hummed and utterance is not None:  # a hum, ended (a pause may be the "n" of "now it's..."):
            self._go_on(hold, "a hum")  # the bot goes on while its words are read; an interrupt word
            # among them still stops it (the recogniser's time is no pause for the caller)
        said = await self._transcribe_aside(heard)
        if hold is not self._hold:
            return
        cfg = self.config.interruption
        if said is not None and is_backchannel(said, cfg.backchannel_words, cfg.min_words,
                                               cfg.interrupt_words, hummed=hummed):
            self._go_on(hold, repr(said))
            if utterance is not None:
                self._hold = None
            return
        if utterance is None:
            return  # at a pause the words so far may be the start of "I see": wait for the end (or the cap)
        log.info("call %s: interrupted by %r", self.call_id, said)
        self._hold = None
        await self._barge_in()
        await self._start_turn(utterance)

    def _go_on(self, hold: Hold, what: str) -> None:
        """A backchannel: the bot goes on from where the caller stopped hearing it (once per hold)."""
        if hold.backchannel:
            return
        hold.backchannel = True
        if self._turn is not None:
            self._turn.metrics.backchannels += 1
        log.info("call %s: backchannel %s: the bot goes on", self.call_id, what)
        self.player.resume()

    async def _caller_went_on(self, spoke_again_at: float | None = None) -> None:
        """The caller talks on over the bot: after a pause in their words (`Resumed`), or speaking again
        after those words ended but before they were judged (`spoke_again_at`: their new start). What was
        being judged is void (all they said is judged together later), and the bot is paused again if it
        went on meanwhile. A new stretch of speech has its own `max_backchannel_ms`."""
        hold = self._hold
        assert hold is not None
        if hold.judging is not None:
            hold.judging.cancel()
            hold.judging = None
        if spoke_again_at is not None or hold.backchannel:
            hold.since = spoke_again_at if spoke_again_at is not None else time.monotonic()
        if hold.backchannel:
            hold.backchannel = False
            await self._pause_if_talking()

    async def _pause_if_talking(self) -> None:
        """Pause the bot again for the caller's words, if it is still talking: a player paused with nothing
        to say would hold back the next answer, as nothing resumes it."""
        if self.player.audible:
            await self.player.pause()

    async def _check_hold(self, now: float) -> None:
        hold = self._hold
        assert hold is not None
        judging = hold.judging is not None and not hold.judging.done()
        if self.segmenter.in_utterance:
            too_long = now - hold.since > self.config.interruption.max_backchannel_ms / 1000
            if too_long and not hold.backchannel and not judging:
                log.info("call %s: the caller kept talking over the bot: interrupted", self.call_id)
                self._hold = None
                if hold.heard is not None:  # answered with the rest, once it ends
                    self._carried = joined(self._carried, hold.heard)
                await self._barge_in()
        elif not judging and self._hold is hold:  # the sound ended without an utterance (a cough, noise)
            if hold.heard is not None:  # ...after words still to be judged
                self._start_judging(hold, hold.heard, hold.heard)
                return
            self._hold = None
            self.player.resume()

    async def _transcribe_aside(self, heard: Utterance) -> str | None:
        """What the caller said, outside any turn; None if recognition failed (taken as an interruption)."""
        scratch = TurnMetrics(call_id=self.call_id, index=-1)
        try:
            transcript = await failover.transcribe(self.stt_chain, for_recognisers(heard, self.wideband),
                                                   scratch, self.hedging)
        except Exception as exc:
            log.warning("call %s: could not tell a backchannel from an interruption: %s", self.call_id, exc)
            return None
        return transcript.text.strip()

    # --- echo ---------------------------------------------------------------------------------------

    def _sounds_like_echo(self) -> bool:
        """Is the caller's latest audio the bot's own recent audio coming back?"""
        caller_audio = self.segmenter.recent_audio(ECHO_WINDOW_MS)
        return self.player.echoes(caller_audio, self.config.turn.echo_similarity)

    async def _recheck_echo(self) -> None:
        """An utterance taken for echo may turn into the caller talking over it: check it again."""
        self._echo_checks += 1
        if self._echo_checks % ECHO_RECHECK_EVERY or not self.segmenter.voiced_now:
            return  # only voice can be the caller: a quiet stretch says nothing
        if not self._sounds_like_echo():
            self._echo = False
            log.info("call %s: the caller is talking over the echo", self.call_id)
            await self._barge_in()
