"""A cascade call's own lines, said as turns of their own kind rather than answers (a part of
`CallSession`, pipeline/call.py): the greeting, the idle caller's reminders and goodbye, the time limit's
goodbye, the voicemail message, the draining server's goodbye."""

from __future__ import annotations

import asyncio
import logging

from switchboard.pipeline.call_turn import Turn
from switchboard.pipeline.lines import greeting_is_fixed

log = logging.getLogger("switchboard.call")

TIME_LIMIT_GRACE_S = 30.0  # past max_call_duration_s, a bot still talking is cut off for the goodbye


class OwnLines:
    """The bot's own lines (greeting, reminders, goodbyes, voicemail), each a turn of its kind."""

    async def _check_idle(self, now: float) -> None:
        """Remind a silent caller, then say goodbye; end a call that reached its time limit."""
        if self._ending:
            return
        limit = self.config.max_call_duration_s
        over_limit = limit > 0 and now - self.started_at >= limit
        if over_limit and (not self.busy or now - self.started_at >= limit + TIME_LIMIT_GRACE_S):
            log.info("call %s: reached max_call_duration_s (%g s): saying goodbye", self.call_id, limit)
            await self._say_line("time_limit", self.config.time_limit_goodbye, hang_up=True)
            return
        if self.busy or self.segmenter.in_utterance or self._digits or self._hold is not None:
            self._quiet_since = now
            return
        idle = self.config.idle
        if idle.reminder_after_s <= 0 or now - self._quiet_since < idle.reminder_after_s:
            return
        self._quiet_since = now
        if self._reminders < idle.max_reminders:
            self._reminders += 1
            log.info("call %s: the caller has been silent %.0f s: reminder %d", self.call_id,
                     idle.reminder_after_s, self._reminders)
            await self._say_line("reminder", idle.reminder)
        else:
            log.info("call %s: the caller stayed silent after %d reminders: hanging up", self.call_id,
                     self._reminders)
            await self._say_line("idle_goodbye", idle.goodbye, hang_up=True)

    async def _say_line(self, kind: str, text: str, hang_up: bool = False) -> Turn:
        """The bot says a line of its own (not an answer) as a turn of kind `kind`, then maybe hangs up."""
        if self.busy:
            await self._barge_in()  # only when ending the call: cut off to say goodbye
        if hang_up:
            self._ending = True
        turn = self._new_turn(kind)
        self._commit(turn)
        turn.task = asyncio.create_task(self._say(turn, text, hang_up), name=f"{kind}-{self.call_id}")
        return turn

    async def _say(self, turn: Turn, text: str, hang_up: bool, fixed: bool = True) -> None:
        turn.metrics.reply_text = text
        try:
            if not hang_up:
                await self._speak(text, turn, fixed)
                await self._wait_heard(turn.spoken)
                return
            turn.metrics.ended_call = True
            try:
                await self._speak(text, turn, fixed)
                await self._wait_heard(turn.spoken, watchdog_s=self.config.end_call_watchdog_s)
            except Exception as exc:  # no voice left: hang up all the same
                log.warning("call %s: could not say %r: %s", self.call_id, text, exc)
                turn.metrics.error = f"{type(exc).__name__}: {exc}"
            await self._hang_up(turn.spoken)
        finally:
            self._finish(turn)

    async def _greet(self, turn: Turn) -> None:
        """The greeting, once the context webhook (if any) has filled it in (pipeline/context.py)."""
        try:
            try:
                await self.context.ready()
            except asyncio.CancelledError:
                self._finish(turn)
                raise
            if self.context.error is not None:
                turn.metrics.failures.append(f"context_webhook: {self.context.error}")
            await self._say(turn, self.context.greeting, hang_up=False, fixed=greeting_is_fixed(self.config))
        except asyncio.CancelledError:
            if turn.metrics.first_audio_sent is None and not self.closed.is_set():
                self._greeting_owed = True  # said once the sound that cut it proves not to be the caller
            raise

    async def _leave_voicemail(self) -> None:
        """A machine answered our outbound call: say `voicemail.message` (detection waited for the beep)
        and hang up, or hang up at once. Nothing on the line interrupts it."""
        voicemail = self.config.voicemail
        leave = voicemail.action == "leave_message"
        self.voicemail = "left_message" if leave else "hung_up"
        log.info("call %s: answered by %s: %s", self.call_id, self.answered_by, self.voicemail)
        await self._say_line("voicemail", voicemail.message if leave else "", hang_up=True)

    async def say_goodbye(self, text: str) -> None:
        """End the call from our side (the server is draining): stop the turn in flight, say `text` (a turn
        of kind "goodbye"), wait for its mark (`end_call_watchdog_s` at most) and hang up."""
        if self._ending or self.closed.is_set():
            return  # already hanging up (end_call) or gone
        await self._drop_speculation()
        turn = await self._say_line("goodbye", text, hang_up=True)
        turn.playing = True  # heard even if the caller is mid-sentence: the line is about to close
        await asyncio.gather(turn.task, return_exceptions=True)
