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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from switchboard.audio.resample import resample
from switchboard.audio.segmenter import Segmenter, SpeechStarted, Utterance
from switchboard.config import PipelineConfig
from switchboard.config.tools import is_machine
from switchboard.core.carrier import CarrierLink
from switchboard.core.errors import ProviderError
from switchboard.core.messages import Message, ToolCall
from switchboard.core.metrics import TurnMetrics, call_summary
from switchboard.core.protocols import TTS
from switchboard.core.realtime import (
    BotAudio,
    BotText,
    CallerSpeechStarted,
    CallerSpeechStopped,
    CallerTranscript,
    RealtimeConnection,
    RealtimeEvent,
    RealtimeModel,
    ResponseDone,
    SessionExpiring,
    ToolRequest,
    ToolsCancelled,
    VendorError,
)
from switchboard.core.tools import TRANSFER_CALL
from switchboard.pipeline.clock import tick_forever
from switchboard.pipeline.context import CallContext
from switchboard.pipeline.player import FRAME_SAMPLES, Player
from switchboard.pipeline.realtime_tools import RealtimeTools, TooManyRounds
from switchboard.pipeline.recorder import Recorder, save_recording
from switchboard.pipeline.tools import ToolBox, transfer_target

log = logging.getLogger("switchboard.realtime")

MARK_GRACE_S = 5.0  # past its audio's end, how long we wait for a mark
STALL_S = 0.15  # an ack this much later than its audio's pacing says the carrier stalled
CUT_GRACE_S = 2.0  # a cut reply waits this long at most for its response.done (its usage)
SPEECH_END_GRACE_MS = 300  # past vad.end_silence_ms, how long a finished reply waits for our endpoint
RECONNECTS = 1  # a lost vendor session is reopened this many times per call, then the apology
RENEW_MARGIN_S = 120.0  # reopen a session this long before the vendor's own limit ends it (when idle)
DELAY_MARGIN_MS = 60  # the delay line holds barge_in_min_ms plus this (the VAD's run-up)
ECHO_WINDOW_MS = 300
MAX_KEYPAD_ENTRY = 32
ECHO_RECHECK_EVERY = 5  # frames of voice between echo checks while the bot talks
FILLER_S = 5.0  # the most a filler's own response may take to end, beyond the vendor's first-token deadline
TIME_LIMIT = "time_limit"  # the kind of the turn that says max_call_duration_s's goodbye
VOICEMAIL = "voicemail"  # the kind of the turn that leaves voicemail.message on a machine
TRANSFER_FAILED = "transfer_failed"  # the kind of the turn that says transfer.failed
LAST_RESORT = "last-resort"  # the item id of audio our own voice spoke (nothing to truncate)
FAREWELL = 'Say exactly this farewell to the caller, and nothing else: "{text}"'
GREETING = 'Greet the caller by saying exactly: "{text}"'
SAY = 'Say exactly this to the caller, and nothing else: "{text}"'


@dataclass
class RealtimeProviders:
    """A realtime pipeline's providers: the model, and the last-resort voice for the apology. Offers
    what `CallHost` asks of a pipeline's providers (`pick`, `shadows`, `all_stt`)."""

    model: RealtimeModel
    voice: TTS
    shadows: list = field(default_factory=list)  # a speech-to-speech model has no shadow LLMs
    tools: ToolBox | None = None  # the pipeline's, shared by its calls (None: built from the call's config)

    def pick(self, rng: object) -> tuple[str | None, RealtimeProviders]:
        return None, self

    def all_stt(self) -> list:
        return []


@dataclass
class _Item:
    """One reply item's audio towards the caller: marks at delta boundaries, with the item's ms at each."""

    item_id: str
    sent_ms: int = 0  # audio queued for the caller
    marks: list[tuple[str, int]] = field(default_factory=list)  # (mark, item ms at its end)
    first_sent: float | None = None  # when its first frame went to the carrier
    remainder: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int16))


@dataclass(eq=False)
class _Turn:
    metrics: TurnMetrics
    items: list[_Item] = field(default_factory=list)
    last_mark: str | None = None
    end_call: ToolRequest | None = None  # end_call or transfer_call
    farewell_asked: bool = False
    requests: list[ToolRequest] = field(default_factory=list)  # declared tools called in this response
    rounds: int = 0  # tool rounds run (or refused) in this turn
    tool_round: asyncio.Task | None = None  # the round under way: its requests in flight
    tool_ids: list[str] = field(default_factory=list)  # its call ids
    results_back: bool = False  # the round's tools are done (their results being sent, or refused)
    aside: asyncio.Event | None = None  # a filler response is under way; set at its response.done
    done: bool = False  # the vendor finished the response (or responses)
    barged_in: bool = False  # the caller cut it off: whatever more of it comes is void
    finishing: asyncio.Task | None = None


class RealtimeSession:
    def __init__(
        self,
        call_id: str,
        config: PipelineConfig,
        providers: RealtimeProviders,
        link: CarrierLink,
        on_turn: Callable[[TurnMetrics], None] | None = None,
        variant: str | None = None,
    ) -> None:
        self.call_id, self.config, self.link = call_id, config, link
        self.model, self.voice = providers.model, providers.voice
        self.on_turn, self.variant = on_turn, variant
        vad = config.vad
        self.segmenter = Segmenter(
            aggressiveness=vad.aggressiveness, min_speech_ms=vad.min_speech_ms, pre_roll_ms=vad.pre_roll_ms,
            end_silence_ms=vad.end_silence_ms, max_utterance_s=vad.max_utterance_s,
            barge_in_min_ms=vad.barge_in_min_ms, speculate_after_ms=0,
        )
        self.recorder = Recorder(time.monotonic()) if config.record else None
        self.recording: Path | None = None
        self.player = Player(link, lead_ms=config.player.lead_ms + link.holds_ms, recorder=self.recorder)
        self.turns: list[TurnMetrics] = []
        self.history: list[Message] = []  # what was said and heard, replayed to a reopened session
        self.closed = asyncio.Event()
        self.started_at = time.monotonic()
        self._conn: RealtimeConnection | None = None
        self._session_started = 0.0
        self._reconnects = 0
        self._runner: asyncio.Task | None = None
        self._ticker: asyncio.Task | None = None
        self._turn: _Turn | None = None
        self._playing_out: set[_Turn] = set()  # earlier turns whose audio is still being heard
        self._next_kind = "reply"
        self._next_transcript = ""  # a keypad entry's text
        self._endpoint: float | None = None  # the vendor's end of the caller's turn
        self._transcript_for: TurnMetrics | None = None  # the turn the next caller transcript belongs to
        self._heard_text = ""  # the vendor's transcript of the caller, before its reply began
        self._utterance_ended = asyncio.Event()  # our VAD endpointed an utterance
        self._utterances: list[tuple[float, float]] = []  # (speech start, speech end) by our VAD
        self._expect_by: float | None = None  # a reply was asked for: its first sign of life is due
        # our VAD endpointed the caller: the vendor's own reply may be on its way until then
        self._reply_owed_until: float | None = None
        self._reply_began = 0.0  # when the latest turn opened (monotonic)
        self._responding = False  # the vendor is generating (between its first event and response.done)
        self._failures: list[str] = []  # vendor failures not yet recorded on a turn
        self._acked: dict[str, float] = {}  # mark -> when the carrier said it played
        self._echo = False
        self._echo_checks = 0
        self._delay_line: deque[np.ndarray] = deque()  # caller audio held back while the bot talks
        self._delayed = 0  # samples in it
        self._delay_samples = (vad.barge_in_min_ms + DELAY_MARGIN_MS) * 8
        self._ending = False
        self._renewing = False
        self._renewal: asyncio.Task | None = None
        self._expiring = False  # the vendor announced the session's end (Gemini's goAway)
        self._cut = False  # a reply was cut and its response.done has not come: its late events are void
        self._deferred: tuple[str, str | None, str] | None = None  # a reply asked for meanwhile
        self._greeted = False  # the greeting's reply has begun
        self._asked = False  # we asked for a reply and nothing of it has come yet
        self._digits = ""
        self._digits_due: float | None = None
        self.tools = RealtimeTools.of(config, link, providers.tools)  # pipeline/realtime_tools.py
        self.call_info: dict[str, str] = {"call_id": call_id}  # what the context webhook is told
        self.context = CallContext(config)  # the greeting and instructions (pipeline/context.py)
        self.answered_by: str | None = None  # outbound with machine detection: Twilio's AnsweredBy
        self.voicemail: str | None = None  # a machine answered: "left_message" or "hung_up"

    # --- lifecycle --------------------------------------------------------------------------------

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

    # --- the vendor session -----------------------------------------------------------------------

    async def _run(self, greet: bool, resume: bool = False) -> None:
        """Open the session, greet, and handle its events; a lost session is reopened once (`resume`:
        a reply the drop cut off is asked for again)."""
        while not self.closed.is_set():
            try:
                await self._open()
                self._renewing = self._expiring = False
                if greet:
                    await self._open_the_call()
                elif resume and self._turn is None and self._last_words_unanswered():
                    await self._ask("reply", None)
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
        self._conn = await self.model.connect(instructions, tools, list(self.history))
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

    async def _say(self, text: str, turn: _Turn) -> None:
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
        turn.items.append(_Item(LAST_RESORT, sent_ms=ms, marks=[(turn.last_mark, ms)]))

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

    # --- what the vendor tells us -----------------------------------------------------------------

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

    async def _apologise(self, turn: _Turn) -> None:
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

    def _current_turn(self, now: float) -> _Turn:
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

    def _open_turn(self, kind: str) -> _Turn:
        if kind == "reply":  # the vendor's answer to the caller (not a keypad entry's, a goodbye, an apology)
            self._reply_owed_until, self._reply_began = None, time.monotonic()
        metrics = TurnMetrics(call_id=self.call_id, index=len(self.turns), kind=kind, variant=self.variant)
        metrics.vendors = {"llm": f"{self.model.vendor}/{self.model.model}"}
        metrics.failures.extend(self._failures)
        self._failures.clear()
        self.turns.append(metrics)
        turn = _Turn(metrics)
        self._turn = turn
        return turn

    def _play(self, turn: _Turn, audio: BotAudio, now: float) -> None:
        """Queue the vendor's audio for the caller in whole frames, a mark after each delta."""
        metrics = turn.metrics
        metrics.tts_first_byte = metrics.tts_first_byte or now
        if not turn.items or turn.items[-1].item_id != audio.item_id:
            self._flush_item(turn)
            turn.items.append(_Item(audio.item_id))
        item = turn.items[-1]
        pcm = np.concatenate([item.remainder, audio.pcm]) if len(item.remainder) else audio.pcm
        whole = len(pcm) - len(pcm) % FRAME_SAMPLES
        item.remainder = pcm[whole:]
        if not whole:
            return

        def first_frame(at: float, item: _Item = item) -> None:
            item.first_sent = item.first_sent or at
            metrics.first_audio_sent = metrics.first_audio_sent or at

        self.player.enqueue(pcm[:whole], first_frame)
        item.sent_ms += whole // 8
        metrics.bot_audio_ms += whole // 8
        turn.last_mark = self.player.enqueue_mark()
        item.marks.append((turn.last_mark, item.sent_ms))

    def _flush_item(self, turn: _Turn) -> None:
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

    async def _tool_round(self, turn: _Turn, requests: list[ToolRequest]) -> None:
        """Run a response's tool calls (pipeline/realtime_tools.py), then hand the results back: the
        model goes on in the same turn. A barge-in cancels this task (and the requests in flight)."""
        try:
            results = await self._run_round_with_filler(turn, requests)
        except TooManyRounds as exc:
            await self._fail_round(turn, f"{self.model.vendor}: {exc}")
            return
        except Exception as exc:  # a bug must not leave the caller in silence
            log.exception("call %s: the tool round failed", self.call_id)
            await self._fail_round(turn, f"tool round: {type(exc).__name__}: {exc}")
            return
        turn.rounds, turn.results_back = turn.rounds + 1, True
        # kept for a reopened session: the model must know what it booked (the adapter replays it)
        calls = [ToolCall(request.call_id, request.name, request.arguments) for request in requests]
        self.history.append(Message("assistant", "", tool_calls=calls))
        self.history += [Message("tool", output, tool_call_id=call_id) for call_id, output in results]
        conn = self._conn
        if conn is None or self._turn is not turn or self.closed.is_set():
            return  # the session was lost meanwhile: the new one never saw these calls
        self._expect_by = time.monotonic() + self.model.timeouts.first_token_s
        if turn.metrics.reply_text and not turn.metrics.reply_text.endswith(" "):
            turn.metrics.reply_text += " "  # what was said before (a filler): its words come next
        # the continuation is under way from here: a barge-in before its first event cancels it too, and
        # nothing else is asked for meanwhile (set first: its events may all arrive during the send)
        self._responding = True
        try:
            await conn.tool_results(results)
        except ProviderError as exc:  # the reader sees the drop and handles it
            log.warning("call %s: could not send the tool results: %s", self.call_id, exc)

    async def _fail_round(self, turn: _Turn, reason: str) -> None:
        """The round can't go on: the caller hears the apology, the turn ends, what was asked is asked."""
        turn.results_back = True
        log.warning("call %s: %s", self.call_id, reason)
        turn.metrics.error = reason
        turn.metrics.failures.append(reason)
        turn.metrics.reply_text += (" " if turn.metrics.reply_text else "") + self.config.apology
        await self._say(self.config.apology, turn)
        turn.done = True
        await self._finish_when_heard(turn)
        await self._ask_deferred()

    async def _run_round_with_filler(self, turn: _Turn, requests: list[ToolRequest]) -> list[tuple[str, str]]:
        """The round's results; if the tools take `filler_after_s` and nothing was said this turn, the
        model says `tool_use.filler` meanwhile, outside the conversation (where its vendor can), and the
        results wait for that to be done (one response at a time)."""
        running = asyncio.create_task(self.tools.run_round(requests, turn.metrics, turn.rounds),
                                      name=f"tool-calls-{self.call_id}")
        try:
            use = self.tools.box.use
            done, _ = await asyncio.wait({running}, timeout=use.filler_after_s)
            conn = self._conn
            if not done and turn.last_mark is None and use.filler.strip() and conn is not None:
                turn.aside, self._responding = asyncio.Event(), True
                try:
                    said = await conn.say_aside(SAY.format(text=use.filler.strip()))
                except ProviderError as exc:  # the reader sees a drop and handles it
                    log.warning("call %s: could not ask for the filler: %s", self.call_id, exc)
                    said = False
                if said:
                    turn.metrics.tool_fillers += 1
                else:
                    turn.aside.set()
                    self._responding = False
            results = await running
            if turn.aside is not None:
                try:  # bounded: a filler that never ends (no response.done) must not hold the results
                    await asyncio.wait_for(turn.aside.wait(), self.model.timeouts.first_token_s + FILLER_S)
                except TimeoutError:
                    log.warning("call %s: the filler did not end; sending the tool results", self.call_id)
                    self._responding = False
                turn.aside = None
            return results
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)

    async def _drop_tool_round(self, turn: _Turn) -> None:
        """A barge-in: the round's requests are cancelled (their connections closed), the model told."""
        task = turn.tool_round
        if task is None or task.done() or task is asyncio.current_task() or turn.results_back:
            return  # (results being sent: it is the continuation that is cut, not the round)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        log.info("call %s: barge-in cancelled the tool round (%s)", self.call_id, ", ".join(turn.tool_ids))
        if self._conn is not None:
            try:
                await self._conn.tools_cancelled(turn.tool_ids)
            except ProviderError as exc:
                log.warning("call %s: could not tell the vendor the tools were cancelled: %s", self.call_id,
                            exc)

    async def _farewell(self, turn: _Turn) -> None:
        """end_call / transfer_call: acknowledge the tool, have the farewell (or the transfer's line)
        spoken; then hang up (or hand the call over) once it is heard."""
        assert turn.end_call is not None and self._conn is not None
        await self._conn.tool_result(turn.end_call.call_id, '{"ok": true}')
        farewell = str(turn.end_call.arguments.get("farewell") or "").strip()
        if turn.end_call.name == TRANSFER_CALL and self.config.transfer is not None:
            farewell = self.config.transfer.say.strip()
        if farewell:  # its words come back as the farewell response's transcript
            if turn.metrics.reply_text:
                turn.metrics.reply_text += " "
            self._expect_by = time.monotonic() + self.model.timeouts.first_token_s
            await self._conn.respond(FAREWELL.format(text=farewell))
        else:
            turn.done = True
            turn.finishing = asyncio.create_task(self._finish_when_heard(turn), name=f"heard-{self.call_id}")

    async def _finish_when_heard(self, turn: _Turn) -> None:
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

    async def _hand_over(self, turn: _Turn) -> None:
        """transfer_call, its line heard: the carrier hands the call over (our stream ends), or the model
        says `transfer.failed` and the call goes on."""
        assert turn.end_call is not None and self.config.transfer is not None
        transfer, metrics = self.config.transfer, turn.metrics
        target = transfer_target(turn.end_call, transfer.targets, self.call_id)
        if await self.link.transfer(target):
            metrics.transferred_to = target
            self._finish(turn)
            return
        metrics.failures.append(f"transfer to {target} failed")
        metrics.ended_call, self._ending = False, False  # the caller is still with us
        self._finish(turn)
        if self._conn is not None:
            with contextlib.suppress(ProviderError):
                await self._ask(TRANSFER_FAILED, SAY.format(text=transfer.failed))

    async def _await_speech_end(self, turn: _Turn) -> None:
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

    def _finish_now(self, turn: _Turn) -> None:
        if turn.finishing is not None and turn.finishing is not asyncio.current_task():
            turn.finishing.cancel()
        self._finish(turn)

    def _finish(self, turn: _Turn) -> None:
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
        metrics.reply_heard = _heard_words(metrics.reply_text, heard_ms, total_ms)
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

    # --- what the caller heard --------------------------------------------------------------------

    def _heard_ms(self, item: _Item, now: float | None = None) -> int:
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

    async def _finish_later(self, turn: _Turn) -> None:
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

    async def _ask_deferred(self) -> None:
        deferred, self._deferred = self._deferred, None
        if deferred is not None and self._conn is not None:
            await self._ask(*deferred)

    def _stop_playing_turn(self, turn: _Turn) -> None:
        for item in turn.items:
            item.remainder = np.zeros(0, dtype=np.int16)

    # --- what the carrier tells us ----------------------------------------------------------------

    async def on_audio(self, pcm: np.ndarray, now: float | None = None) -> None:
        at = time.monotonic() if now is None else now
        if self.recorder is not None:
            self.recorder.add_caller(pcm, at)
        for event in self.segmenter.push(pcm, at):
            await self._on_segment(event)
        if self._echo and not self.segmenter.in_utterance:
            self._echo = False  # the echo was too short to be an utterance
        await self._recheck_echo()
        await self._forward(np.zeros_like(pcm) if self._echo else pcm)

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


def _heard_words(text: str, heard_ms: int, total_ms: int) -> str:
    """The words of a reply the caller heard: all of it, or the share of its words its audio played
    (the vendor's transcript carries no word timings)."""
    text = text.strip()
    if total_ms <= 0 or heard_ms >= total_ms - 20:
        return text if total_ms > 0 else ""
    words = text.split()
    return " ".join(words[: int(len(words) * heard_ms / total_ms)])
