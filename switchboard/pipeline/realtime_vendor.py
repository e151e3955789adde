"""A realtime call's vendor session: opening it (the context webhook's instructions, the tools, the
history replayed), the call's first words, asking the model to speak, losing it (reopened once, then
the apology in our own voice and a hang-up), a silent vendor, and renewing the session before the
vendor's time limit."""

from __future__ import annotations

import asyncio
import contextlib
import time

import numpy as np

from switchboard.audio.resample import resample
from switchboard.config.tools import is_machine
from switchboard.core.errors import ProviderError
from switchboard.pipeline.realtime_state import (
    GREETING,
    LAST_RESORT,
    RECONNECTS,
    RENEW_MARGIN_S,
    SAY,
    VOICEMAIL,
    RealtimeState,
    ReplyItem,
    Turn,
    log,
)


class VendorSession(RealtimeState):
    """The vendor session's life (a part of `RealtimeSession`)."""

    async def _run(self, greet: bool, resume: bool = False) -> None:
        """Open the session, greet, and handle its events; a lost session is reopened once (`resume`:
        a reply the drop cut off is asked for again)."""
        while not self.closed.is_set():
            try:
                await self._open()
                self._renewing = self._expiring = False
                if greet:
                    await self._open_the_call()
                elif resume and self._turn is None and (self._last_words_unanswered() or self._reply_cut):
                    self._reply_cut = False
                    await self._ask("reply", None)  # the history ends with what they heard of it, if any
                assert self._conn is not None
                async for event in self._conn.events():
                    await self._on_vendor(event)
                return
            except ProviderError as exc:
                reason = str(exc)
            except Exception as exc:  # a bug must not leave the caller in silence either
                log.exception("call %s: realtime session failed", self.call_id)
                reason = f"{type(exc).__name__}: {exc}"
            greet = greet and not self._greeted
            resume = True
            if not await self._lost(reason):
                return

    async def _open(self) -> None:
        old, self._conn = self._conn, None
        if old is not None:
            await old.close()
        # a new session has no response under way: what the old one was doing is void
        self._responding = self._asked = self._cut = False
        self._expect_by, self._deferred, self._reply_owed_until = None, None, None
        await self.context.ready()  # the instructions with the webhook's values (timeout_s at most)
        instructions, tools = self.context.system_prompt, self.tools.offered
        # rate: a browser call's vendor hears the carrier's 16 kHz copy of the caller (realtime_caller.py)
        self._conn = await self.model.connect(instructions, tools, list(self.history), rate=self.vendor_rate)
        self._session_started = time.monotonic()

    async def _open_the_call(self) -> None:
        """The call's first words: the greeting (with the context webhook's values), or on a machine the
        voicemail line (then hang up) or an immediate hang-up."""
        if is_machine(self.answered_by):
            voicemail = self.config.voicemail
            leave = voicemail.action == "leave_message" and bool(voicemail.message.strip())
            self.voicemail = "left_message" if leave else "hung_up"
            log.info("call %s: answered by %s: %s", self.call_id, self.answered_by, self.voicemail)
            self._ending = True
            if leave:
                await self._ask(VOICEMAIL, SAY.format(text=voicemail.message))
            else:
                await self.link.hang_up()
            return
        if self.context.error is not None and not self._greeted:
            self._failures.append(f"context_webhook: {self.context.error}")  # recorded on the greeting
        if self.context.greeting:
            await self._ask("greeting", GREETING.format(text=self.context.greeting))

    def _last_words_unanswered(self) -> bool:
        """The caller's words, or a tool round's results, are the last thing in the conversation."""
        return bool(self.history) and self.history[-1].role in ("user", "tool")

    async def _lost(self, reason: str) -> bool:
        """The session failed or dropped. True: it was reopened (go on); False: the call is over."""
        log.warning("call %s: realtime vendor %s/%s failed: %s", self.call_id, self.model.vendor,
                    self.model.model, reason)
        self._failures.append(reason)
        turn = self._turn
        # an answer to the caller, cut: asked again even when part of it was heard (that part then ends
        # the replayed history, and the caller's words no longer look unanswered)
        self._reply_cut = turn is not None and turn.metrics.kind in ("reply", "keypad")
        if turn is not None:  # the reply in flight is lost with its session
            self._stop_playing_turn(turn)
            await self.player.clear()
            turn.metrics.error = reason
            self._finish(turn)
        if self.closed.is_set():
            return False
        if self._ending:  # it was saying goodbye: hang up without it
            await self.link.hang_up()
            return False
        if self._reconnects < RECONNECTS:
            self._reconnects += 1
            log.info("call %s: reopening the realtime session", self.call_id)
            return True
        await self._apologise_and_hang_up(reason)
        return False

    async def _apologise_and_hang_up(self, reason: str) -> None:
        self._ending = True
        turn = self._open_turn("apology")
        turn.metrics.error = reason
        turn.metrics.reply_text = self.config.apology
        with contextlib.suppress(Exception):
            await self._say(self.config.apology, turn)
            if turn.last_mark is not None:
                await self.player.wait_mark(turn.last_mark, within_s=self.config.end_call_watchdog_s)
        self._finish(turn)
        log.info("call %s: hanging up after the realtime vendor failed", self.call_id)
        await self.link.hang_up()

    async def _say(self, text: str, turn: Turn) -> None:
        """Speak `text` with the last-resort voice (the vendor is gone)."""
        audio = [pcm async for pcm in self.voice.stream(text)]
        if not audio:
            return
        line = resample(np.concatenate(audio), self.voice.sample_rate, 8000)
        metrics = turn.metrics
        metrics.tts_first_byte = metrics.tts_first_byte or time.monotonic()
        metrics.bot_audio_ms += len(line) // 8
        self.player.enqueue(line, self._first_frame(metrics))
        turn.last_mark = self.player.enqueue_mark()
        ms = len(line) // 8
        turn.items.append(ReplyItem(LAST_RESORT, sent_ms=ms, marks=[(turn.last_mark, ms)]))

    async def _ask(self, kind: str, instructions: str | None, text: str = "") -> None:
        """Ask the model to speak now (the greeting, a keypad entry's answer, a farewell); after a cut
        reply's response.done, if one is still winding down (the vendor allows one response at a time)."""
        assert self._conn is not None
        turn = self._turn
        tools_running = turn is not None and turn.tool_round is not None and not turn.tool_round.done()
        if self._cut or self._asked or self._responding or tools_running:  # the model goes on after them
            self._deferred = (kind, instructions, text)
            return
        self._next_kind, self._next_transcript = kind, text
        self._expect_by = time.monotonic() + self.model.timeouts.first_token_s
        self._asked = True
        await self._conn.respond(instructions)

    async def _ask_deferred(self) -> None:
        deferred, self._deferred = self._deferred, None
        if deferred is not None and self._conn is not None:
            await self._ask(*deferred)

    async def _silent_vendor(self) -> None:
        """A reply was due and nothing came: the session is treated as lost."""
        reason = (f"{self.model.vendor}: timeout: no reply within {self.model.timeouts.first_token_s:g} s")
        runner = self._runner
        if runner is None or runner.done():
            return
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        if await self._lost(reason):
            greet = bool(self.config.greeting) and not self._greeted
            self._runner = asyncio.create_task(self._run(greet, resume=True), name=f"realtime-{self.call_id}")

    def _maybe_renew(self, now: float) -> None:
        """Reopen the session between replies before the vendor's own time limit ends it."""
        limit = self.model.session_limit_s
        if (limit is None and not self._expiring) or self._conn is None or self._renewing or self._ending:
            return
        limit = limit or 0.0
        # not while a reply is asked for or owed (it would be lost with the old session), nor while one
        # is being cut or another waits for it
        reply_pending = (self._asked or self._expect_by is not None or self._deferred is not None or self._cut
                         or (self._reply_owed_until is not None and now < self._reply_owed_until))
        idle = (self._turn is None and not self._responding and not self.segmenter.in_utterance
                and not reply_pending)
        due = self._expiring or now - self._session_started >= max(limit - RENEW_MARGIN_S, limit / 2)
        if idle and due:
            log.info("call %s: renewing the realtime session before its %g s limit", self.call_id, limit)
            self._renewing = True
            self._renewal = asyncio.create_task(self._renew(), name=f"renew-{self.call_id}")

    async def _renew(self) -> None:
        """A new session (the conversation replayed) in place of the old one; not a failure."""
        runner = self._runner
        if runner is not None:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        self._runner = asyncio.create_task(self._run(greet=False), name=f"realtime-{self.call_id}")

