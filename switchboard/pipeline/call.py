"""One phone call: caller audio in, utterances, turns (STT → LLM → TTS), bot audio out.

A `CallSession` owns everything about one call: the segmenter, the conversation history, the turn in
flight (one asyncio task), the outbound player, barge-in and the per-turn metrics. The carrier adapter
(telephony/*) feeds it decoded audio, marks and digits, and gives it a `CarrierLink` to answer on.

Read it top to bottom: inbound audio → `_on_events` → `_start_turn` → `_reply` → `_speak` → player.

Its parts, each a job, are mixins of this one class: `call_interruptions.Interruptions` (barge-in,
backchannel holds, echo), `call_voice.Voice` (`_speak`: synthesis, the 8 kHz queue, marks, waiting until
heard, hang-up and hand-over), `call_own_lines.OwnLines` (greeting, reminders, goodbyes, voicemail);
`call_turn.py` holds the `Turn` and what is said in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from switchboard.audio import smart_turn
from switchboard.audio.noise import NoiseGate
from switchboard.audio.resample import StreamResampler
from switchboard.audio.segmenter import Pause, Resumed, Segmenter, SegmenterEvent, SpeechStarted, Utterance
from switchboard.config import PipelineConfig
from switchboard.config.tools import is_machine
from switchboard.core.carrier import CarrierLink
from switchboard.core.messages import Message, TextDelta, ToolCall, Usage
from switchboard.core.metrics import TurnMetrics, call_summary
from switchboard.core.protocols import LLM, STT, TTS
from switchboard.core.tools import END_CALL_TOOL, TRANSFER_CALL, transfer_call_tool
from switchboard.pipeline import failover
from switchboard.pipeline.call_interruptions import Hold, Interruptions
from switchboard.pipeline.call_own_lines import OwnLines
from switchboard.pipeline.call_turn import Keypad, Turn, joined, so_far
from switchboard.pipeline.call_voice import Voice
from switchboard.pipeline.clock import tick_forever
from switchboard.pipeline.context import CallContext
from switchboard.pipeline.endpointing import Endpointing
from switchboard.pipeline.hedging import Hedging
from switchboard.pipeline.lines import LineCache
from switchboard.pipeline.player import Player
from switchboard.pipeline.recorder import Recorder, save_recording
from switchboard.pipeline.shadow import CallShadows
from switchboard.pipeline.text import SentenceChunker
from switchboard.pipeline.tools import Filler, Pending, ToolBox, rounds
from switchboard.pipeline.wideband import KEEP_MARGIN_S, WideAudio, for_recognisers

log = logging.getLogger("switchboard.call")

MAX_KEYPAD_ENTRY = 32  # keys in one keypad entry; more are ignored (a phone number is at most 15 digits)
# within turn.undo_reply_within_ms of the bot starting a reply, this much of the caller's speech (not
# vad.barge_in_min_ms) is enough to stop it
EARLY_BARGE_IN_MS = 120  # 60 let the bot's own echo start turns on a speakerphone (tests/test_turn_taking.py)
CARRIED_GRACE_S = 0.3  # silent and idle this long after a sound that cut an answer: it was not speech
NOISE_CHECK_ON_LOOP_SAMPLES = 8000 * 3  # longer utterances are checked for noise in a worker thread


@dataclass
class Providers:
    """A pipeline's providers: the primary of each stage, then its fallbacks in order."""

    stt: STT
    llm: LLM
    tts: TTS
    fallback_stt: list[STT] = field(default_factory=list)
    fallback_llm: list[LLM] = field(default_factory=list)
    fallback_tts: list[TTS] = field(default_factory=list)
    tools: ToolBox | None = None  # the pipeline's, shared by its calls (None: built from the call's config)
    hedging: Hedging | None = None  # a stalled request asked again beside it (pipeline/hedging.py)


class CallSession(Interruptions, OwnLines, Voice):
    def __init__(
        self,
        call_id: str,
        config: PipelineConfig,
        providers: Providers,
        link: CarrierLink,
        on_turn: Callable[[TurnMetrics], None] | None = None,
        shadows: CallShadows | None = None,  # pipeline/shadow.py: asked every user turn, never heard
        variant: str | None = None,  # the A/B variant drawn for this call (pipeline/variants.py)
        lines: LineCache | None = None,  # fixed lines from memory, shared by the process's calls
    ) -> None:
        self.call_id = call_id
        self.shadows, self.variant = shadows, variant
        self.lines = lines
        self.config = config
        self.stt_chain = [providers.stt, *providers.fallback_stt]
        self.llm_chain = [providers.llm, *providers.fallback_llm]
        self.tts_chain = [providers.tts, *providers.fallback_tts]
        self.hedging = providers.hedging
        self.link = link
        self.on_turn = on_turn
        vad = config.vad
        self.segmenter = Segmenter(
            aggressiveness=vad.aggressiveness,
            min_speech_ms=vad.min_speech_ms,
            pre_roll_ms=vad.pre_roll_ms,
            end_silence_ms=vad.end_silence_ms,
            max_utterance_s=vad.max_utterance_s,
            barge_in_min_ms=vad.barge_in_min_ms,
            speculate_after_ms=config.turn.speculate_after_ms,
        )
        self.endpointing = Endpointing(config.turn, vad.end_silence_ms)  # how long a pause must last
        self.recorder = Recorder(time.monotonic()) if config.record else None
        self.recording: Path | None = None  # the WAV, once written at the end of the call
        # a link that holds audio back to fill its carrier's chunks (Exotel) needs that much more lead
        lead_ms = config.player.lead_ms + link.holds_ms
        self.player = Player(link, lead_ms=lead_ms, recorder=self.recorder)
        self.noise_gate = NoiseGate()  # vad.noise_gate: an utterance with no voicing is not a turn
        # a browser call's 16 kHz copy of the caller, for the recognisers that want it (pipeline/wideband.py)
        self.wideband = (WideAudio(link.wideband_rate, vad.max_utterance_s + KEEP_MARGIN_S, call_id)
                         if link.wideband_rate else None)
        self.to_line_rate: dict[int, StreamResampler] = {}  # one outbound stream per TTS rate, per call
        self.history: list[Message] = []
        # the audio end-of-turn model, one per process (loaded at start-up by the server's warm-up)
        self.turn_model = smart_turn.shared() if config.turn.audio_model == "smart-turn-v3" else None
        # pipeline/tools.py (none: unknown ones refused); the host's is shared and has the MCP servers' tools
        self.tools = providers.tools or ToolBox(config.tools, config.tool_use)
        transfer = [transfer_call_tool(config.transfer.targets)] if config.transfer and link.transfers else []
        self.builtin_tools = [END_CALL_TOOL, *transfer]  # they end the bot's part of the call
        self.call_info: dict[str, str] = {"call_id": call_id}  # what the context webhook is told
        self.context = CallContext(config)  # the greeting and system prompt (pipeline/context.py)
        self.answered_by: str | None = None  # outbound with machine detection: Twilio's AnsweredBy
        self.voicemail: str | None = None  # a machine answered: "left_message" or "hung_up"
        self.turns: list[TurnMetrics] = []
        self._turn: Turn | None = None  # the turn the caller hears (or is about to)
        self._speculation: Turn | None = None  # prepared at a pause in the utterance being heard
        self._speculated = self._dropped = 0  # speculative turns started / dropped for that utterance
        self._carried: Utterance | None = None  # an utterance cut before the caller heard a reply to it
        self._owed_since: float | None = None  # carried words or the greeting owed, caller silent, bot idle
        self._carried_answered_again = False  # it was answered once without new words: not again
        self._greeting_owed = False  # the greeting was cut before any of it was heard, by a sound
        self._greeted_again = False
        self._barging_in = 0
        self._echo = False  # the utterance being heard is the bot's own voice coming back
        self._hold: Hold | None = None  # the bot paused while the caller talks over it
        self._judging: asyncio.Task | None = None  # the latest judge of words said over the bot
        self._echo_checks = 0
        self._ticker: asyncio.Task | None = None
        self._ending = False
        self._digits = ""  # keypad digits collected so far
        self._digits_due: float | None = None  # when they are handed over (the inter-digit timeout)
        self._digits_overflow = False  # the entry reached MAX_KEYPAD_ENTRY (warned once)
        self.closed = asyncio.Event()
        self.started_at = time.monotonic()
        self._quiet_since = self.started_at  # neither side has said anything since
        self._reminders = 0  # said since the caller last spoke

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        self.player.start()
        ticks = tick_forever(self._tick, self.call_id)
        self._ticker = asyncio.create_task(ticks, name=f"tick-{self.call_id}")
        self.context.start(self.call_info)
        if is_machine(self.answered_by):
            await self._leave_voicemail()
        elif self.config.greeting:
            greeting = self._new_turn("greeting")
            self._commit(greeting)
            greeting.task = asyncio.create_task(self._greet(greeting), name=f"greeting-{self.call_id}")

    async def close(self) -> dict:
        """The caller hung up or we did: stop everything and return the call's summary."""
        if self.closed.is_set():
            return self._summary()
        self.closed.set()
        turns = [turn for turn in (self._turn, self._speculation) if turn is not None]
        tasks = [task for task in (self._ticker, self._judging, *(turn.task for turn in turns))
                 if task is not None]  # a judge may be starting a turn
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.context.cancel()
        await self.player.close()
        if self.recorder is not None:
            self.recording = await save_recording(self.recorder, self.call_id, self.config.recordings_dir)
        summary = self._summary()
        log.info("call %s ended after %.1f s: %s", self.call_id, time.monotonic() - self.started_at, summary)
        return summary

    def _summary(self) -> dict:
        return call_summary(self.turns, shadows=self.shadows.summary() if self.shadows is not None else None,
                            recording=str(self.recording) if self.recording is not None else None,
                            context_error=self.context.error, answered_by=self.answered_by or None,
                            voicemail=self.voicemail)

    # --- what the carrier tells us ----------------------------------------------------------------

    async def on_audio(self, pcm: np.ndarray, now: float | None = None, *, wide: np.ndarray | None = None
                       ) -> None:
        at = time.monotonic() if now is None else now
        if self.recorder is not None:
            self.recorder.add_caller(pcm, at)
        if self.wideband is not None:
            self.wideband.add(pcm, wide)
        await self._on_events(self.segmenter.push(pcm, at))
        if self._echo:
            await self._recheck_echo()

    def on_mark(self, name: str) -> None:
        self.player.on_mark(name)

    def on_dtmf(self, digit: str, now: float | None = None) -> None:
        """Collect a keypad digit; the tick loop hands the entry over once it is complete."""
        dtmf = self.config.dtmf
        if not dtmf.enabled or self._ending:
            log.info("call %s: DTMF %s ignored (%s)", self.call_id, digit,
                     "hanging up" if dtmf.enabled else "dtmf.enabled is false")
            return
        now = time.monotonic() if now is None else now
        if len(self._digits) >= MAX_KEYPAD_ENTRY:  # bounded: a flood of keys can't grow the entry or the log
            if not self._digits_overflow:
                log.warning("call %s: keypad entry over %d keys: further keys ignored", self.call_id,
                            MAX_KEYPAD_ENTRY)
            self._digits_overflow = True
            return
        if digit == "#" and dtmf.end_on_hash:
            self._digits = self._digits or "#"  # a lone # is still an answer
            self._digits_due = now
        else:
            self._digits += digit
            self._digits_due = now + dtmf.inter_digit_timeout_ms / 1000
        log.debug("call %s: DTMF %s (%d keys so far)", self.call_id, digit, len(self._digits))

    async def _tick(self, now: float) -> None:
        """The wall-clock work: the endpointer's silences, a paused bot's hold, keypad entries, idleness."""
        await self._on_events(self.segmenter.tick(now))
        if self._hold is not None:
            await self._check_hold(now)
        await self._answer_what_was_cut(now)
        vad_ms = self.config.vad.barge_in_min_ms
        early = self._just_started_answering()
        self.segmenter.barge_in_min_ms = min(EARLY_BARGE_IN_MS, vad_ms) if early else vad_ms
        if self._digits_due is not None and now >= self._digits_due:
            digits, self._digits, self._digits_due = self._digits, "", None
            self._digits_overflow = False
            await self._start_turn(Keypad(digits, self.config.dtmf.format.format(digits=digits)))
        await self._check_idle(now)

    async def _on_events(self, events: list[SegmenterEvent]) -> None:
        if self.wideband is not None and events:
            events = self.wideband.attach(events)
        for event in events:
            if isinstance(event, SpeechStarted):
                if self._sounds_like_echo():
                    self._echo = True
                    log.info("call %s: the bot's own voice is coming back on the line (echo): ignored",
                             self.call_id)
                elif self._just_started_answering():
                    if self.busy:  # its reply is cut (not a new line after a short reply that ended)
                        self._learn_went_on()
                    await self._undo_reply()
                elif self._hold is not None and self._hold.heard is not None:
                    await self._caller_went_on(spoke_again_at=event.at)
                elif self._may_hold():
                    await self._hold_for_words(event.at)
                else:
                    if self._turn is not None and self._turn.metrics.first_audio_sent is None and self.busy:
                        self._learn_went_on()  # ...before it said a word of its answer
                    await self._barge_in()
            elif isinstance(event, Pause):
                if self._hold is not None:
                    self._judge_hold(so_far(event), ended=False)
                else:
                    await self._speculate(event)
            elif isinstance(event, Resumed):
                if self._hold is not None:
                    await self._caller_went_on()
                else:
                    if self._speculation is not None and isinstance(self._speculation.heard, Utterance):
                        self.endpointing.resumed((event.at - self._speculation.heard.speech_end) * 1000)
                    await self._drop_speculation()
            elif isinstance(event, Utterance):
                if self._echo:
                    self._echo = False
                    log.info("call %s: dropped %d ms of echo", self.call_id, event.voiced_ms)
                    continue
                if await self._is_noise(event.pcm, event.speech_start):
                    log.info("call %s: dropped %d ms of noise (no voicing in it)", self.call_id,
                             event.voiced_ms)
                    await self._drop_speculation()
                    continue
                if self._hold is not None:
                    self._judge_hold(event, ended=True)  # a turn of its own only if it interrupts
                    continue
                await self._start_turn(event)
        if self._echo and not self.segmenter.in_utterance:
            self._echo = False  # the echo was too short to be an utterance

    async def _is_noise(self, pcm: np.ndarray, started: float) -> bool:
        if not self.config.vad.noise_gate or self.noise_gate.known_speech(pcm, started):
            return False
        if len(pcm) <= NOISE_CHECK_ON_LOOP_SAMPLES:  # speech is told at its first voiced block: < 1 ms
            return self.noise_gate.is_noise(pcm, started)
        return await asyncio.to_thread(self.noise_gate.is_noise, pcm, started)  # noise is read to its end

    # --- turns ------------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """The bot is thinking or talking."""
        task = self._turn.task if self._turn is not None else None
        return (task is not None and not task.done()) or self.player.audible

    async def _speculate(self, pause: Pause) -> None:
        """The caller paused: start on what they said so far, heard by nobody until they stay silent."""
        if self._ending or self.busy or self._speculation is not None or self._echo:
            return
        if await self._is_noise(pause.pcm, pause.speech_start):
            return
        heard = joined(self._carried, so_far(pause))
        turn = self._new_turn("reply", heard)
        self._speculation = turn
        self._speculated += 1
        # commit no sooner than the transcript can say whether they sounded finished
        self.segmenter.set_end_silence(self.endpointing.pending_ms())
        turn.task = asyncio.create_task(self._run_turn(turn), name=f"speculation-{self.call_id}")
        if self.turn_model is not None:  # how it sounds, heard beside the recogniser (≈ 0.1 s of a core)
            turn.sounds = asyncio.get_running_loop().run_in_executor(
                smart_turn.executor(), smart_turn.finished_or_none, self.turn_model, heard.pcm, self.call_id)
            turn.sounds.add_done_callback(lambda _: self._judge_pause(turn))

    async def _drop_speculation(self) -> None:
        """The caller went on after a pause: what was prepared is void; the utterance continues."""
        turn, self._speculation = self._speculation, None
        self.segmenter.set_end_silence(None)
        if turn is not None and turn.sounds is not None:
            turn.sounds.cancel()  # not yet started in its thread: never run
        if turn is None or turn.task is None:
            return
        self._dropped += 1
        turn.task.cancel()  # closes its vendor streams
        await asyncio.gather(turn.task, return_exceptions=True)
        self._flush_line_resamplers()
        log.info("call %s: the caller went on after a pause; speculative turn dropped", self.call_id)

    async def _start_turn(self, heard: Utterance | Keypad) -> None:
        """The caller has finished (an utterance ended) or keyed in digits: this becomes the turn."""
        if self._ending or self.closed.is_set():
            return
        prepared, self._speculation = self._speculation, None
        if prepared is not None and isinstance(heard, Utterance):
            self._reminders = 0
            self._commit(prepared)  # they stayed silent: what was prepared at the pause is the answer
            return
        if prepared is not None:  # digits instead of the rest of the utterance
            self._speculation = prepared
            await self._drop_speculation()
        if self.busy:  # an utterance too short to count as barge-in still supersedes the reply
            await self._barge_in()
            if self._ending or self.closed.is_set():  # a goodbye or the hang-up came meanwhile
                return
        if isinstance(heard, Utterance):
            heard = joined(self._carried, heard)
        turn = self._new_turn("reply" if isinstance(heard, Utterance) else "keypad", heard)
        self._reminders = 0
        self._commit(turn)
        turn.task = asyncio.create_task(self._run_turn(turn), name=f"turn-{self.call_id}")

    async def _answer_what_was_cut(self, now: float) -> None:
        """A sound stopped the work on the caller's answer, then proved not to be speech (noise, a click
        too short to be an utterance): the words whose answer it stopped are answered all the same (and
        a greeting it cut before a word of it was heard is said)."""
        owed = self._carried is not None and not self._carried_answered_again
        greeting_owed = self._greeting_owed and not self._greeted_again
        if (not (owed or greeting_owed) or self.segmenter.in_utterance or self.busy or self._barging_in
                or self._hold is not None or self._speculation is not None or self._digits or self._ending):
            self._owed_since = None
            return
        if self._owed_since is None:
            self._owed_since = now
        if now - self._owed_since < CARRIED_GRACE_S:
            return
        self._owed_since = None
        if not owed:
            log.info("call %s: what cut the greeting was not speech: greeting again", self.call_id)
            self._greeting_owed, self._greeted_again = False, True
            greeting = self._new_turn("greeting")
            self._commit(greeting)
            greeting.task = asyncio.create_task(self._greet(greeting), name=f"greeting-{self.call_id}")
            return
        carried, self._carried = self._carried, None
        log.info("call %s: what cut the answer was not speech: answering the caller's words", self.call_id)
        await self._start_turn(carried)
        # once: if that answer is cut the same way (an echo, a noise that repeats), wait for the caller
        self._carried_answered_again = True

    def _new_turn(self, kind: str, heard: Utterance | Keypad | None = None) -> Turn:
        metrics = TurnMetrics(call_id=self.call_id, index=len(self.turns), kind=kind, variant=self.variant)
        metrics.vendors = {  # the primaries; a fallback that serves replaces its stage's entry
            stage: f"{chain[0].vendor}/{chain[0].model}"
            for stage, chain in (("stt", self.stt_chain), ("llm", self.llm_chain), ("tts", self.tts_chain))
        }
        if isinstance(heard, Utterance):
            metrics.speech_start, metrics.speech_end = heard.speech_start, heard.speech_end
        return Turn(metrics, heard)

    def _commit(self, turn: Turn) -> None:
        """This is the turn now: it is recorded, may be heard, and its words join the history."""
        metrics = turn.metrics
        metrics.index = len(self.turns)
        self.turns.append(metrics)
        metrics.endpoint = time.monotonic()
        metrics.speculated, metrics.speculation_dropped = self._speculated, self._dropped
        self._speculated = self._dropped = 0
        if isinstance(turn.heard, Utterance):
            self._carried = None  # it is part of this turn's audio
            self._carried_answered_again = self._greeting_owed = False  # the caller speaks: no greeting now
        self._turn = turn
        turn.committed.set()
        self._add_user_words(turn)

    def _add_user_words(self, turn: Turn) -> None:
        """Once a turn is committed and transcribed, what the caller said joins the history."""
        if turn.user is None or turn.in_history or not turn.committed.is_set():
            return
        turn.in_history = True
        self.history.append(turn.user)
        self._start_shadows(turn.metrics)

    def _take_back(self, turn: Turn) -> None:
        """A turn cut before the caller heard any of it: its audio and words become part of the next.
        Not one whose tools ran: asked again, they would run again (a second booking)."""
        if turn.exchanges:
            return
        if isinstance(turn.heard, Utterance):  # it holds what was carried into it; then what came since
            later = self._carried
            self._carried = turn.heard if later is None else joined(turn.heard, later)
            self._owed_since = None
        if turn.in_history:
            self.history[:] = [m for m in self.history if m is not turn.user]
            turn.in_history = False

    async def _run_turn(self, turn: Turn) -> None:
        """Answer what the caller said (an utterance, transcribed here) or keyed in (digits).

        A speculative turn runs the same code before it is committed: everything up to the first chunk
        of speech happens, then `_speak` waits for the commit (or the task is cancelled, unheard)."""
        metrics, heard = turn.metrics, turn.heard
        try:
            if isinstance(heard, Keypad):
                metrics.transcript = heard.text
            elif isinstance(heard, Utterance):
                metrics.transcript = await self._transcribe(heard, metrics)
            if metrics.transcript:
                turn.user = Message("user", metrics.transcript)
                self._add_user_words(turn)
                if not turn.committed.is_set():
                    self._judge_pause(turn)
            else:  # speech with no words (logged): answered if there was enough of it, else no reply
                await turn.committed.wait()
                unheard = self.config.unheard
                if isinstance(heard, Utterance) and heard.voiced_ms >= unheard.min_voiced_ms:
                    metrics.reply_text = unheard.reply
                    await self._speak(unheard.reply, turn, fixed=True)
                    await self._wait_heard(turn.spoken)
                return
            end_call = await self._reply(turn)
            await turn.committed.wait()
            if end_call is None:
                await self._wait_heard(turn.spoken)
            else:
                await self._wait_heard(turn.spoken, watchdog_s=self.config.end_call_watchdog_s)
                if end_call.name == TRANSFER_CALL:
                    await self._hand_over(turn, end_call)
                else:
                    await self._hang_up(turn.spoken)
        except asyncio.CancelledError:
            if turn.committed.is_set():
                metrics.interrupted = not metrics.ended_call  # hanging up closes the call, cancelling us
                if (metrics.first_audio_sent is None or turn.undone) and not metrics.ended_call:
                    self._take_back(turn)
            raise
        except Exception as exc:  # a vendor failure must never leave the caller in silence
            log.exception("call %s: turn %d failed", self.call_id, metrics.index)
            metrics.error = f"{type(exc).__name__}: {exc}"
            with contextlib.suppress(Exception):
                await self._speak(self.config.apology, turn, fixed=True)
                await self._wait_heard(turn.spoken)
        finally:
            if turn.committed.is_set():  # a speculative turn dropped unheard leaves no record
                self._finish(turn)

    def _judge_pause(self, turn: Turn) -> None:
        """The pause's transcript is in (and, with an audio model, maybe how it sounds): does the caller
        sound finished? That sets how long the pause must last. Called when the transcript comes, and
        again when the model's verdict does if the turn is not committed by then: a slow model never
        delays an answer; in time, it changes how long the pause must last."""
        if self._speculation is not turn or turn.user is None:
            return
        sounds = turn.sounds
        heard = sounds is not None and sounds.done() and not sounds.cancelled()
        probability = sounds.result() if heard else None
        if probability is not None:
            turn.metrics.sounds_finished = round(probability, 3)
        reads, silence_ms = self.endpointing.judge(turn.metrics.transcript, probability)
        turn.metrics.reads = reads.value
        self.segmenter.set_end_silence(silence_ms)

    def _start_shadows(self, metrics: TurnMetrics) -> None:
        """Ask the shadow LLMs what the live one is about to be asked, in the background; never waits."""
        if self.shadows is not None:
            messages = [Message("system", self.context.system_prompt), *self.history]
            self.shadows.start(metrics.index, messages, [*self.builtin_tools, *self.tools.offered])

    async def _transcribe(self, utterance: Utterance, metrics: TurnMetrics) -> str:
        metrics.stt_start = time.monotonic()
        transcript = await failover.transcribe(self.stt_chain, for_recognisers(utterance, self.wideband),
                                               metrics, self.hedging)
        metrics.stt_done = time.monotonic()
        if not transcript.text.strip():
            log.info("call %s: %d ms of speech, no words", self.call_id, utterance.voiced_ms)
        return transcript.text.strip()

    async def _reply(self, turn: Turn) -> ToolCall | None:
        """Stream the LLM's answer into speech, sentence by sentence. Returns an end_call, if asked."""
        assert turn.user is not None
        metrics = turn.metrics
        history = self.history if turn.in_history else [*self.history, turn.user]
        await self.context.ready()
        messages = [Message("system", self.context.system_prompt), *history]
        chunker = SentenceChunker()
        end_call: ToolCall | None = None
        events = rounds(self.llm_chain, messages, self.builtin_tools, self.tools, metrics, turn.exchanges,
                        turn.committed.wait, self.hedging)
        async with contextlib.aclosing(events):  # a failing TTS mid-reply must close the LLM stream
            async for _, event in events:
                if isinstance(event, Pending):  # tools are about to run: say what the LLM said so far
                    if rest := chunker.flush():
                        await self._speak(rest, turn)
                elif isinstance(event, Filler):  # a tool is slow: never dead air
                    metrics.reply_text += (" " if metrics.reply_text else "") + event.text
                    await self._speak(event.text, turn, fixed=True)
                elif isinstance(event, TextDelta):
                    metrics.llm_first_token = metrics.llm_first_token or time.monotonic()
                    metrics.reply_text += event.text
                    for chunk in chunker.push(event.text):
                        await self._speak(chunk, turn)
                elif isinstance(event, ToolCall) and event.name in (END_CALL_TOOL.name, TRANSFER_CALL):
                    metrics.llm_first_token = metrics.llm_first_token or time.monotonic()
                    end_call = event
                elif isinstance(event, Usage):
                    metrics.tokens_in, metrics.tokens_out = event.input_tokens, event.output_tokens
        rest = chunker.flush()
        if rest:
            await self._speak(rest, turn)
        if end_call is not None:
            await turn.committed.wait()
            self._ending = True  # from here on the caller can't talk us out of hanging up
            metrics.ended_call = True
            farewell = str(end_call.arguments.get("farewell") or "").strip()
            fixed = end_call.name == TRANSFER_CALL and self.config.transfer is not None
            if fixed:
                farewell = self.config.transfer.say
            if farewell:
                metrics.reply_text += (" " if metrics.reply_text else "") + farewell
                await self._speak(farewell, turn, fixed)
        return end_call

    def _finish(self, turn: Turn) -> None:
        """Record the turn; history keeps only what the caller actually heard."""
        metrics, spoken = turn.metrics, turn.spoken
        metrics.turn_done = time.monotonic()
        metrics.reply_heard = " ".join(s.text for s in spoken if self.player.heard(s.mark))
        self.history.extend(turn.exchanges)  # tools that ran stay known, heard or not
        if metrics.reply_heard and not turn.undone:
            self.history.append(Message("assistant", metrics.reply_heard))
        metrics.log()
        if self.on_turn is not None:
            try:
                self.on_turn(metrics)
            except Exception:
                log.exception("on_turn callback failed")
