"""What the vendor says, as turns: each event of its session (audio, text, transcripts, tool calls,
response.done, errors) opens, feeds or settles the turn of the response under way; the audio is queued
for the caller in whole frames with a mark after each delta; a turn is recorded once the caller heard it
(what they heard of it, their speech by our VAD, the history)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import numpy as np

from switchboard.core.messages import Message
from switchboard.core.metrics import TurnMetrics
from switchboard.core.realtime import (
    BotAudio,
    BotText,
    CallerSpeechStarted,
    CallerSpeechStopped,
    CallerTranscript,
    RealtimeEvent,
    ResponseDone,
    SessionExpiring,
    ToolRequest,
    ToolsCancelled,
    VendorError,
)
from switchboard.core.tools import TRANSFER_CALL
from switchboard.pipeline.player import FRAME_SAMPLES
from switchboard.pipeline.realtime_state import (
    MARK_GRACE_S,
    SPEECH_END_GRACE_MS,
    TIME_LIMIT,
    VOICEMAIL,
    RealtimeState,
    ReplyItem,
    Turn,
    heard_words,
    log,
)


class Replies(RealtimeState):
    """The vendor's events, as the call's turns (a part of `RealtimeSession`)."""

    async def _on_vendor(self, event: RealtimeEvent) -> None:
        now = time.monotonic()
        cutting = self._turn is not None and self._turn.barged_in and not self._turn.done
        if (self._cut or cutting) and isinstance(event, (BotAudio, BotText, ToolRequest)):
            return  # the rest of a reply the caller cut off (or is cutting: the barge-in awaits the wire)
        if isinstance(event, BotAudio):
            turn = self._current_turn(now)
            self._responding, self._expect_by = True, None
            self._play(turn, event, now)
        elif isinstance(event, BotText):
            turn = self._current_turn(now)
            turn.metrics.reply_text += event.text
        elif isinstance(event, CallerSpeechStarted):
            await self._barge_in("the vendor heard the caller", vendor_heard=True)
        elif isinstance(event, CallerSpeechStopped):
            self._endpoint = now
            self._expect_by = now + self.model.timeouts.first_token_s  # its auto reply is due
        elif isinstance(event, CallerTranscript):
            self._on_transcript(event.text)
        elif isinstance(event, ToolRequest):
            turn = self._current_turn(now)
            self._responding, self._expect_by = True, None
            if self.tools.ends_call(event.name):
                turn.end_call = event
                self._ending = True
                turn.metrics.ended_call = True
            else:  # run once the response is done (an unknown tool gets its error back)
                turn.requests.append(event)
        elif isinstance(event, ToolsCancelled):
            turn = self._turn
            if turn is not None and set(turn.tool_ids) & set(event.call_ids):
                await self._barge_in("the vendor withdrew its tool calls", vendor_heard=True)
        elif isinstance(event, ResponseDone):
            await self._response_done(event)
        elif isinstance(event, VendorError):
            self._on_vendor_error(event)
        elif isinstance(event, SessionExpiring):
            log.info("call %s: the vendor will end the session soon: renewing it at the next pause",
                     self.call_id)
            self._expiring = True

    def _on_vendor_error(self, event: VendorError) -> None:
        """An `error` event: logged with the vendor's words, recorded on the turn; the call goes on."""
        text = f"{self.model.vendor}: {event.code or 'error'}: {event.message}"[:300]
        log.warning("call %s: realtime vendor error: %s", self.call_id, text)
        if self._turn is not None:
            self._turn.metrics.failures.append(text)
        else:
            self._failures.append(text)
        aside = self._turn.aside if self._turn is not None else None
        if aside is not None and not aside.is_set():  # the filler was refused: the results go on without it
            aside.set()
            self._responding = False
            return
        if self._asked and not self._responding:
            # the reply we asked for was refused (a rate limit): say sorry instead of leaving silence
            self._expect_by, self._asked = None, False
            turn = self._open_turn(self._take_kind())
            turn.metrics.error = text
            turn.metrics.reply_text = self.config.apology
            turn.finishing = asyncio.create_task(self._apologise(turn), name=f"apology-{self.call_id}")

    async def _apologise(self, turn: Turn) -> None:
        await self._say(self.config.apology, turn)
        turn.done = True
        await self._finish_when_heard(turn)
        await self._ask_deferred()  # what was asked for meanwhile (a keypad entry)

    def _on_transcript(self, text: str) -> None:
        target, self._transcript_for = self._transcript_for, None
        if target is not None and not target.transcript:
            target.transcript = text.strip()  # its reply began before the transcription came
        else:
            self._heard_text = text.strip()  # for the reply about to begin
        if text.strip():
            self.history.append(Message("user", text.strip()))

    def _take_kind(self) -> str:
        kind, self._next_kind = self._next_kind, "reply"
        return kind

    def _current_turn(self, now: float) -> Turn:
        """The turn of the response under way: opened by its first event."""
        self._asked = False
        if self._turn is not None and not self._turn.done:
            return self._turn
        if self._turn is not None and self._turn.end_call is not None:
            return self._turn  # the farewell belongs to the turn that asked to end the call
        if self._turn is not None:  # a reply starts while the previous one is still playing out
            previous = self._turn
            if previous.finishing is not None and not previous.finishing.done():
                self._playing_out.add(previous)  # recorded once heard, as it would have been
            else:
                self._finish_now(previous)
        kind = self._take_kind()
        turn = self._open_turn(kind)
        self._greeted = self._greeted or kind in ("greeting", VOICEMAIL)
        turn.metrics.ended_call = kind in (TIME_LIMIT, VOICEMAIL)  # heard, then we hang up
        if kind == "keypad":
            turn.metrics.transcript = self._next_transcript
        if kind == "reply":
            turn.metrics.endpoint = self._endpoint
            turn.metrics.transcript, self._heard_text = self._heard_text, ""
            self._transcript_for = None if turn.metrics.transcript else turn.metrics
        self._endpoint = None
        return turn

    def _open_turn(self, kind: str) -> Turn:
        if kind == "reply":  # the vendor's answer to the caller (not a keypad entry's, a goodbye, an apology)
            self._reply_owed_until, self._reply_began = None, time.monotonic()
        metrics = TurnMetrics(call_id=self.call_id, index=len(self.turns), kind=kind, variant=self.variant)
        metrics.vendors = {"llm": f"{self.model.vendor}/{self.model.model}"}
        metrics.failures.extend(self._failures)
        self._failures.clear()
        self.turns.append(metrics)
        turn = Turn(metrics)
        self._turn = turn
        return turn

    def _play(self, turn: Turn, audio: BotAudio, now: float) -> None:
        """Queue the vendor's audio for the caller in whole frames, a mark after each delta."""
        metrics = turn.metrics
        metrics.tts_first_byte = metrics.tts_first_byte or now
        if not turn.items or turn.items[-1].item_id != audio.item_id:
            self._flush_item(turn)
            turn.items.append(ReplyItem(audio.item_id))
        item = turn.items[-1]
        pcm = np.concatenate([item.remainder, audio.pcm]) if len(item.remainder) else audio.pcm
        whole = len(pcm) - len(pcm) % FRAME_SAMPLES
        item.remainder = pcm[whole:]
        if not whole:
            return

        def first_frame(at: float, item: ReplyItem = item) -> None:
            item.first_sent = item.first_sent or at
            metrics.first_audio_sent = metrics.first_audio_sent or at

        self.player.enqueue(pcm[:whole], first_frame)
        item.sent_ms += whole // 8
        metrics.bot_audio_ms += whole // 8
        turn.last_mark = self.player.enqueue_mark()
        item.marks.append((turn.last_mark, item.sent_ms))

    def _flush_item(self, turn: Turn) -> None:
        """The rest of the last item's audio (under a frame), padded by the player, and its mark."""
        if not turn.items or not len(turn.items[-1].remainder):
            return
        item = turn.items[-1]
        tail, item.remainder = item.remainder, np.zeros(0, dtype=np.int16)
        self.player.enqueue(tail)
        item.sent_ms += len(tail) // 8
        turn.metrics.bot_audio_ms += len(tail) // 8
        turn.last_mark = self.player.enqueue_mark()
        item.marks.append((turn.last_mark, item.sent_ms))

    def _first_frame(self, metrics: TurnMetrics) -> Callable[[float], None]:
        def first_frame(at: float) -> None:
            metrics.first_audio_sent = metrics.first_audio_sent or at

        return first_frame

    async def _response_done(self, done: ResponseDone) -> None:
        self._responding, self._expect_by, self._asked = False, None, False
        if self._cut:
            await self._cut_done(done)
            return
        await self._settle(done)
        await self._ask_deferred()

    async def _settle(self, done: ResponseDone) -> None:
        """A response ended (not a cut one): its usage, failure, farewell; then the wait until heard."""
        turn = self._turn
        if turn is None:
            if done.status != "failed":
                return
            turn = self._open_turn(self._take_kind())  # a response that failed before saying anything
        metrics = turn.metrics
        if done.usage is not None:
            metrics.tokens_in = (metrics.tokens_in or 0) + done.usage.text_in
            metrics.tokens_out = (metrics.tokens_out or 0) + done.usage.text_out
            metrics.audio_tokens_in = (metrics.audio_tokens_in or 0) + done.usage.audio_in
            metrics.audio_tokens_out = (metrics.audio_tokens_out or 0) + done.usage.audio_out
        if turn.done and turn.end_call is None:
            return  # a late event of a turn already playing out
        self._flush_item(turn)
        if done.status == "failed":
            reason = f"{self.model.vendor}: response failed: {done.error or 'no reason given'}"
            log.warning("call %s: %s", self.call_id, reason)
            metrics.error = reason
            metrics.failures.append(reason)
            if turn.last_mark is None:  # nothing was said: the caller hears the apology
                metrics.reply_text = self.config.apology
                await self._say(self.config.apology, turn)
        if done.status == "cancelled" and not metrics.interrupted and metrics.error is None:
            metrics.interrupted = True
        if turn.aside is not None and not turn.aside.is_set():  # the filler said while a tool runs
            turn.aside.set()
            return
        requests, turn.requests = turn.requests, []
        if requests and turn.end_call is None and done.status == "completed":
            turn.tool_ids, turn.results_back = [request.call_id for request in requests], False
            turn.tool_round = asyncio.create_task(self._tool_round(turn, requests),
                                                  name=f"tools-{self.call_id}")
            return  # the model goes on in this turn once it has the results
        if turn.end_call is not None and not turn.farewell_asked:
            turn.farewell_asked = True
            await self._farewell(turn)
            return
        turn.done = True
        if turn.finishing is None and self._turn is turn:
            turn.finishing = asyncio.create_task(self._finish_when_heard(turn), name=f"heard-{self.call_id}")

    async def _finish_when_heard(self, turn: Turn) -> None:
        """Wait until the caller heard the turn's last audio (or it is overdue), then record it; after
        end_call, hang up."""
        ending = turn.metrics.ended_call
        if turn.last_mark is not None:
            audio_s = sum(item.sent_ms for item in turn.items) / 1000
            within = self.config.end_call_watchdog_s if ending else audio_s + MARK_GRACE_S
            heard = await self.player.wait_mark(turn.last_mark, within_s=within)
            if ending and not heard:
                log.warning("call %s: farewell not acknowledged; hanging up anyway", self.call_id)
        await self._await_speech_end(turn)
        if ending and turn.end_call is not None and turn.end_call.name == TRANSFER_CALL:
            await self._hand_over(turn)
            return
        self._finish(turn)
        if ending:
            log.info("call %s: hanging up (end_call)", self.call_id)
            await self.link.hang_up()

    async def _await_speech_end(self, turn: Turn) -> None:
        """A short reply can be over before our VAD has endpointed the speech it answers (the vendor's
        silence may be shorter than `vad.end_silence_ms`): wait for that, briefly, so the turn records
        the caller's speech end by our clock."""
        before = turn.metrics.first_audio_sent or time.monotonic()
        placed = any(end <= before for _, end in self._utterances[-1:])
        if turn.metrics.kind != "reply" or placed or not self.segmenter.in_utterance:
            return
        self._utterance_ended.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._utterance_ended.wait(),
                                   (self.config.vad.end_silence_ms + SPEECH_END_GRACE_MS) / 1000)

    def _finish_now(self, turn: Turn) -> None:
        if turn.finishing is not None and turn.finishing is not asyncio.current_task():
            turn.finishing.cancel()
        self._finish(turn)

    def _finish(self, turn: Turn) -> None:
        """Record the turn once: what the caller heard of it, its speech by our VAD, the history."""
        if self._turn is turn:
            self._turn = None
        self._playing_out.discard(turn)
        if turn.tool_round is not None and turn.tool_round is not asyncio.current_task():
            turn.tool_round.cancel()  # the turn is over (the session was lost, the call ended)
        metrics = turn.metrics
        if metrics.turn_done is not None:
            return
        metrics.turn_done = time.monotonic()
        heard_ms = sum(self._heard_ms(item) for item in turn.items)
        total_ms = sum(item.sent_ms for item in turn.items)
        metrics.reply_heard = heard_words(metrics.reply_text, heard_ms, total_ms)
        self._place_speech(metrics)
        if metrics.reply_heard and metrics.kind != "apology":
            self.history.append(Message("assistant", metrics.reply_heard))
        metrics.log()
        if self.on_turn is not None:
            try:
                self.on_turn(metrics)
            except Exception:
                log.exception("on_turn callback failed")

    def _place_speech(self, metrics: TurnMetrics) -> None:
        """The caller's speech this turn answers, by our VAD: the last utterance that ended before the
        turn's first audio (one clock for cascade and realtime)."""
        if metrics.kind != "reply":
            return
        before = metrics.first_audio_sent or metrics.turn_done or time.monotonic()
        spoken = [utterance for utterance in self._utterances if utterance[1] <= before]
        if spoken:
            metrics.speech_start, metrics.speech_end = spoken[-1]

