"""A `kind: realtime` call: the caller's audio to a speech-to-speech model and its audio back.

`RealtimeSession` has `CallSession`'s interface towards the server (`start`, `on_audio`, `on_mark`,
`on_dtmf`, `close`, `closed`, `call_id`), so `CallHost` runs either. What it shares with the cascade:
the `Player` (paced 20 ms frames, marks, clear), the `Recorder`, our own VAD (`Segmenter`: the caller's
speech end is measured by the same clock as a cascade's, and it catches barge-in), the echo check, the
tools (`end_call`, `transfer_call`, the pipeline's HTTP tools run through the cascade's `ToolBox`:
pipeline/realtime_tools.py), the context webhook, voicemail, keypad entries and `TurnMetrics`. What
the vendor does instead: endpointing (its own turn detection answers), recognition, the reply and its
voice.

A turn is one vendor response (two when `end_call` asks for a farewell; one more per tool round, whose
results the model answers in the same turn): opened by its first event, closed once its audio has been
heard (its last mark), cut (barge-in: a tool round in flight is cancelled, its requests closed) or
failed. Barge-in: `clear` at the
carrier, `response.cancel` if the vendor is still generating, and `conversation.item.truncate` at what
the caller actually heard of the reply item: the item's audio up to the last acknowledged mark, plus
the time since that acknowledgement (the carrier keeps playing what was sent after it), bounded by
what was sent. A lost vendor session is reopened once with the conversation replayed as text; after
that, and when it cannot be opened at all, the apology is spoken by the last-resort voice (eSpeak) and
the call hangs up: never silence.

The parts, one job a module, all methods of one `RealtimeSession` on the state in
`realtime_state.RealtimeState` (`Turn`, `ReplyItem`, the constants):

- realtime.py (here): the call's life, keypad entries, the wall-clock tick, the time limit;
- realtime_vendor.py: the vendor session: open, first words, ask, lose and reopen, renew;
- realtime_replies.py: the vendor's events as turns: audio queued, settled, recorded when heard;
- realtime_caller.py: the caller's audio to the vendor (echo muted), marks, barge-in;
- realtime_rounds.py: tool rounds, the farewell and the transfer.
"""

from __future__ import annotations

import asyncio
import time

from switchboard.config.tools import is_machine
from switchboard.core.errors import ProviderError
from switchboard.core.messages import Message
from switchboard.core.metrics import call_summary
from switchboard.pipeline.clock import tick_forever
from switchboard.pipeline.realtime_caller import CallerSide
from switchboard.pipeline.realtime_replies import Replies
from switchboard.pipeline.realtime_rounds import ToolRounds
from switchboard.pipeline.realtime_state import FAREWELL, MAX_KEYPAD_ENTRY, TIME_LIMIT, RealtimeProviders, log
from switchboard.pipeline.realtime_vendor import VendorSession
from switchboard.pipeline.recorder import save_recording

__all__ = ["RealtimeProviders", "RealtimeSession"]


class RealtimeSession(CallerSide, Replies, ToolRounds, VendorSession):
    """One realtime call: its life (start, close), keypad entries, the wall-clock tick and the
    time limit here; the rest in its parts (see the module's docstring)."""

    async def start(self) -> None:
        self.player.start()
        ticks = tick_forever(self._tick, self.call_id)
        self._ticker = asyncio.create_task(ticks, name=f"tick-{self.call_id}")
        self.context.start(self.call_info)
        greet = bool(self.config.greeting) or is_machine(self.answered_by)
        self._runner = asyncio.create_task(self._run(greet=greet), name=f"realtime-{self.call_id}")

    async def close(self) -> dict:
        if self.closed.is_set():
            return self._summary()
        self.closed.set()
        self.context.cancel()
        turn = self._turn
        if turn is not None and not turn.metrics.ended_call:
            turn.metrics.interrupted = True  # the caller hung up on it
        for earlier in self._playing_out:
            earlier.metrics.interrupted = not earlier.metrics.ended_call
        finishing = [task for each in (turn, *self._playing_out) if each is not None
                     for task in (each.finishing, each.tool_round)]
        running = (self._ticker, self._renewal, self._runner, *finishing)
        tasks = [task for task in running if task is not None and task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for each in [turn, *self._playing_out]:
            if each is not None:
                self._finish(each)
        if self._conn is not None:
            await self._conn.close()
        await self.player.close()
        if self.recorder is not None:
            self.recording = await save_recording(self.recorder, self.call_id, self.config.recordings_dir)
        summary = self._summary()
        log.info("call %s ended after %.1f s: %s", self.call_id, time.monotonic() - self.started_at, summary)
        return summary

    def _summary(self) -> dict:
        return call_summary(self.turns, recording=str(self.recording) if self.recording is not None else None,
                            context_error=self.context.error, answered_by=self.answered_by or None,
                            voicemail=self.voicemail)

    def on_dtmf(self, digit: str, now: float | None = None) -> None:
        dtmf = self.config.dtmf
        if not dtmf.enabled or self._ending:
            log.info("call %s: DTMF %s ignored", self.call_id, digit)
            return
        now = time.monotonic() if now is None else now
        if len(self._digits) >= MAX_KEYPAD_ENTRY:
            return
        if digit == "#" and dtmf.end_on_hash:
            self._digits = self._digits or "#"
            self._digits_due = now
        else:
            self._digits += digit
            self._digits_due = now + dtmf.inter_digit_timeout_ms / 1000

    async def _tick(self, now: float) -> None:
        """The wall-clock work: our VAD's silences, keypad entries, a silent vendor, renewal, time limit."""
        for event in self.segmenter.tick(now):
            await self._on_segment(event)
        if self._digits_due is not None and now >= self._digits_due and self._conn is not None:
            digits, self._digits, self._digits_due = self._digits, "", None
            await self._keypad(digits)
        if self._expect_by is not None and now > self._expect_by and self._runner is not None:
            self._expect_by = None
            await self._silent_vendor()
        self._maybe_renew(now)
        limit = self.config.max_call_duration_s
        if limit and not self._ending and now - self.started_at >= limit:
            await self._time_limit()

    async def _keypad(self, digits: str) -> None:
        """A keypad entry: a user message, and a reply asked for at once."""
        if self._conn is None or self._ending:
            return
        text = self.config.dtmf.format.format(digits=digits)
        try:
            if self._turn is not None:
                await self._barge_in("keypad")
            conn = self._conn
            if conn is None:  # the session is being reopened: sent once it is open again
                self._digits, self._digits_due = digits + self._digits, time.monotonic()
                return
            await conn.send_text(text)
            self.history.append(Message("user", text))
            await self._ask("keypad", None, text)
        except ProviderError as exc:
            log.warning("call %s: could not send the keypad entry %s: %s", self.call_id, digits, exc)

    async def _time_limit(self) -> None:
        """`max_call_duration_s` reached: the model says the pipeline's goodbye (after the reply under
        way, if any), then we hang up once it was heard; nobody can talk us out of it."""
        log.info("call %s: the call reached max_call_duration_s (%g s): saying goodbye", self.call_id,
                 self.config.max_call_duration_s)
        self._ending = True
        if self._conn is None:
            await self._apologise_and_hang_up("the call reached its time limit before the vendor answered")
            return
        try:
            await self._ask(TIME_LIMIT, FAREWELL.format(text=self.config.time_limit_goodbye))
        except ProviderError as exc:
            log.warning("call %s: could not ask for the goodbye: %s", self.call_id, exc)
            await self.link.hang_up()

