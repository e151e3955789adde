"""One phone call: caller audio in, utterances, turns (STT → LLM → TTS), bot audio out.

A `CallSession` owns everything about one call: the segmenter, the conversation history, the turn in
flight (one asyncio task), the outbound player, barge-in and the per-turn metrics. The carrier adapter
(telephony/*) feeds it decoded audio, marks and digits, and gives it a `CarrierLink` to answer on.

Read it top to bottom: inbound audio → `_on_events` → `_start_turn` → `_reply` → `_speak` → player.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from audio.resample import StreamResampler, resample
from audio.segmenter import Segmenter, SegmenterEvent, SpeechStarted, Utterance
from pipeline import failover
from pipeline.config import PipelineConfig
from pipeline.metrics import TurnMetrics, call_summary
from pipeline.player import CarrierLink, Player
from pipeline.recorder import Recorder
from pipeline.text import SentenceChunker, speakable
from providers.base import END_CALL_TOOL, LLM, STT, TTS, Message, TextDelta, ToolCall, Usage

log = logging.getLogger("switchboard.call")

TICK_S = 0.05  # how often the wall-clock endpointer runs
MARK_GRACE_S = 5.0  # how long past its audio's end we wait for a mark before giving up on it


@dataclass
class Providers:
    """A pipeline's providers: the primary of each stage, then its fallbacks in order."""

    stt: STT
    llm: LLM
    tts: TTS
    fallback_stt: list[STT] = field(default_factory=list)
    fallback_llm: list[LLM] = field(default_factory=list)
    fallback_tts: list[TTS] = field(default_factory=list)


@dataclass
class _Spoken:
    mark: str
    text: str
    audio_s: float


@dataclass
class Keypad:
    """Digits the caller pressed, and the user message they become (the pipeline's `dtmf.format`)."""

    digits: str
    text: str


class CallSession:
    def __init__(
        self,
        call_id: str,
        config: PipelineConfig,
        providers: Providers,
        link: CarrierLink,
        on_turn: Callable[[TurnMetrics], None] | None = None,
    ) -> None:
        self.call_id = call_id
        self.config = config
        self.stt_chain = [providers.stt, *providers.fallback_stt]
        self.llm_chain = [providers.llm, *providers.fallback_llm]
        self.tts_chain = [providers.tts, *providers.fallback_tts]
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
        )
        self.recorder = Recorder(time.monotonic()) if config.record else None
        self.recording: Path | None = None  # the WAV, once written at the end of the call
        # a link that holds audio back to fill its carrier's chunks (Exotel) needs that much more lead
        lead_ms = config.player.lead_ms + getattr(link, "holds_ms", 0)
        self.player = Player(link, lead_ms=lead_ms, recorder=self.recorder)
        self.to_line_rate: dict[int, StreamResampler] = {}  # one outbound stream per TTS rate, per call
        self.history: list[Message] = []
        self.turns: list[TurnMetrics] = []
        self._turn: asyncio.Task | None = None
        self._carried_audio: np.ndarray | None = None  # an utterance whose turn was cut before STT
        self._ticker: asyncio.Task | None = None
        self._ending = False
        self._digits = ""  # keypad digits collected so far
        self._digits_due: float | None = None  # when they are handed over (the inter-digit timeout)
        self.closed = asyncio.Event()
        self.started_at = time.monotonic()

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        self.player.start()
        self._ticker = asyncio.create_task(self._tick_loop(), name=f"tick-{self.call_id}")
        if self.config.greeting:
            self._turn = asyncio.create_task(self._greet(), name=f"greeting-{self.call_id}")

    async def close(self) -> dict:
        """The caller hung up or we did: stop everything and return the call's summary."""
        if self.closed.is_set():
            return self._summary()
        self.closed.set()
        for task in (self._turn, self._ticker):
            if task and not task.done():
                task.cancel()
        await asyncio.gather(*(t for t in (self._turn, self._ticker) if t), return_exceptions=True)
        await self.player.close()
        if self.recorder is not None:
            await self._save_recording(self.recorder)
        summary = self._summary()
        log.info("call %s ended after %.1f s: %s", self.call_id, time.monotonic() - self.started_at, summary)
        return summary

    def _summary(self) -> dict:
        summary = call_summary(self.turns)
        if self.recording is not None:
            summary["recording"] = str(self.recording)
        return summary

    async def _save_recording(self, recorder: Recorder) -> None:
        name = re.sub(r"[^A-Za-z0-9._-]", "_", self.call_id).lstrip(".") or "call"
        path = Path(self.config.recordings_dir) / f"{name}.wav"
        try:
            self.recording = await asyncio.to_thread(recorder.write, path, time.monotonic())
        except OSError as exc:
            log.error("call %s: could not write the recording %s: %s", self.call_id, path, exc)

    # --- what the carrier tells us ----------------------------------------------------------------

    async def on_audio(self, pcm: np.ndarray, now: float | None = None) -> None:
        at = time.monotonic() if now is None else now
        if self.recorder is not None:
            self.recorder.add_caller(pcm, at)
        await self._on_events(self.segmenter.push(pcm, at))

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
        if digit == "#" and dtmf.end_on_hash:
            self._digits = self._digits or "#"  # a lone # is still an answer
            self._digits_due = now
        else:
            self._digits += digit
            self._digits_due = now + dtmf.inter_digit_timeout_ms / 1000
        log.info("call %s: DTMF %s (entry so far: %s)", self.call_id, digit, self._digits)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            await self._on_events(self.segmenter.tick(now))
            if self._digits_due is not None and now >= self._digits_due:
                digits, self._digits, self._digits_due = self._digits, "", None
                await self._start_turn(Keypad(digits, self.config.dtmf.format.format(digits=digits)))

    async def _on_events(self, events: list[SegmenterEvent]) -> None:
        for event in events:
            if isinstance(event, SpeechStarted):
                await self._barge_in()
            elif isinstance(event, Utterance):
                await self._start_turn(event)

    # --- turns ------------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """The bot is thinking or talking."""
        return (self._turn is not None and not self._turn.done()) or self.player.audible

    async def _barge_in(self) -> None:
        """The caller talks over the bot: stop talking at once and drop the turn in flight."""
        if self._ending or not self.busy:
            return
        log.info("call %s: barge-in", self.call_id)
        turn = self._turn
        if turn is not None:
            turn.cancel()  # it can't queue more audio now: it wakes up to CancelledError
        await self.player.clear()  # the clear goes out before we wait for the turn to unwind
        if turn is not None:
            await asyncio.gather(turn, return_exceptions=True)
        for resampler in self.to_line_rate.values():
            resampler.flush()  # drop what the cut chunk left inside it

    async def _start_turn(self, utterance: Utterance | Keypad) -> None:
        if self._ending:
            return
        if self.busy:  # an utterance too short to count as barge-in still supersedes the reply
            await self._barge_in()
        if isinstance(utterance, Utterance) and self._carried_audio is not None:
            utterance.pcm = np.concatenate([self._carried_audio, utterance.pcm])
            self._carried_audio = None
        self._turn = asyncio.create_task(self._run_turn(utterance), name=f"turn-{self.call_id}")

    def _new_metrics(self, kind: str) -> TurnMetrics:
        metrics = TurnMetrics(call_id=self.call_id, index=len(self.turns), kind=kind)
        metrics.vendors = {  # the primaries; a fallback that serves replaces its stage's entry
            stage: f"{chain[0].vendor}/{chain[0].model}"
            for stage, chain in (("stt", self.stt_chain), ("llm", self.llm_chain), ("tts", self.tts_chain))
        }
        self.turns.append(metrics)
        return metrics

    async def _greet(self) -> None:
        metrics = self._new_metrics("greeting")
        metrics.reply_text = self.config.greeting
        spoken: list[_Spoken] = []
        try:
            await self._speak(self.config.greeting, metrics, spoken)
            await self._wait_heard(spoken)
        finally:
            self._finish(metrics, spoken)

    async def _run_turn(self, heard: Utterance | Keypad) -> None:
        """Answer what the caller said (an utterance, transcribed here) or keyed in (digits)."""
        metrics = self._new_metrics("reply" if isinstance(heard, Utterance) else "keypad")
        metrics.endpoint = time.monotonic()
        spoken: list[_Spoken] = []
        try:
            if isinstance(heard, Keypad):
                metrics.transcript = heard.text
            else:
                metrics.transcript = await self._transcribe(heard, metrics)
            if not metrics.transcript:  # speech with no words (logged): no reply
                return
            self.history.append(Message("user", metrics.transcript))
            end_call = await self._reply(metrics, spoken)
            if end_call is None:
                await self._wait_heard(spoken)
            else:
                await self._wait_heard(spoken, watchdog_s=self.config.end_call_watchdog_s)
                await self._hang_up(spoken)
        except asyncio.CancelledError:
            metrics.interrupted = not metrics.ended_call  # hanging up closes the call, which cancels us
            raise
        except Exception as exc:  # a vendor failure must never leave the caller in silence
            log.exception("call %s: turn %d failed", self.call_id, metrics.index)
            metrics.error = f"{type(exc).__name__}: {exc}"
            with contextlib.suppress(Exception):
                await self._speak(self.config.apology, metrics, spoken)
                await self._wait_heard(spoken)
        finally:
            self._finish(metrics, spoken)

    async def _transcribe(self, utterance: Utterance, metrics: TurnMetrics) -> str:
        metrics.speech_start, metrics.speech_end = utterance.speech_start, utterance.speech_end
        try:
            transcript = await failover.transcribe(
                self.stt_chain, lambda rate: resample(utterance.pcm, 8000, rate), metrics
            )
        except asyncio.CancelledError:
            self._carried_audio = utterance.pcm  # cut before we knew what they said: keep it
            raise
        metrics.stt_done = time.monotonic()
        if not transcript.text.strip():
            log.info("call %s: %d ms of speech, no words: no reply", self.call_id, utterance.voiced_ms)
        return transcript.text.strip()

    async def _reply(self, metrics: TurnMetrics, spoken: list[_Spoken]) -> ToolCall | None:
        """Stream the LLM's answer into speech, sentence by sentence. Returns an end_call, if asked."""
        messages = [Message("system", self.config.system_prompt), *self.history]
        chunker = SentenceChunker()
        end_call: ToolCall | None = None
        events = failover.stream_reply(self.llm_chain, messages, [END_CALL_TOOL], metrics)
        async with contextlib.aclosing(events):  # a failing TTS mid-reply must close the LLM stream
            async for _, event in events:
                if isinstance(event, TextDelta):
                    metrics.llm_first_token = metrics.llm_first_token or time.monotonic()
                    metrics.reply_text += event.text
                    for chunk in chunker.push(event.text):
                        await self._speak(chunk, metrics, spoken)
                elif isinstance(event, ToolCall) and event.name == END_CALL_TOOL.name:
                    metrics.llm_first_token = metrics.llm_first_token or time.monotonic()
                    end_call = event
                elif isinstance(event, Usage):
                    metrics.tokens_in, metrics.tokens_out = event.input_tokens, event.output_tokens
        rest = chunker.flush()
        if rest:
            await self._speak(rest, metrics, spoken)
        if end_call is not None:
            self._ending = True  # from here on the caller can't talk us out of hanging up
            metrics.ended_call = True
            farewell = str(end_call.arguments.get("farewell") or "").strip()
            if farewell:
                metrics.reply_text += (" " if metrics.reply_text else "") + farewell
                await self._speak(farewell, metrics, spoken)
        return end_call

    async def _speak(self, text: str, metrics: TurnMetrics, spoken: list[_Spoken]) -> None:
        """Synthesise one chunk, queue it for the caller at 8 kHz, and put a mark after it."""
        text = speakable(text)
        if not text:
            return
        metrics.first_chunk = metrics.first_chunk or time.monotonic()
        metrics.tts_chars += len(text)

        def first_frame_sent(at: float) -> None:
            metrics.first_audio_sent = metrics.first_audio_sent or at

        samples = 0
        resampler: StreamResampler | None = None
        async for tts, pcm in failover.synthesize(self.tts_chain, text, metrics):
            metrics.tts_first_byte = metrics.tts_first_byte or time.monotonic()
            resampler = self._line_resampler(tts.sample_rate)
            line_audio = resampler.process(pcm)
            samples += len(line_audio)
            self.player.enqueue(line_audio, first_frame_sent)
        if resampler is not None:
            tail = resampler.flush()  # soxr holds back tens of ms until flushed
            samples += len(tail)
            self.player.enqueue(tail, first_frame_sent)
        metrics.bot_audio_ms += samples // 8
        spoken.append(_Spoken(self.player.enqueue_mark(), text, samples / 8000))

    def _line_resampler(self, rate: int) -> StreamResampler:
        if rate not in self.to_line_rate:
            self.to_line_rate[rate] = StreamResampler(rate, 8000)
        return self.to_line_rate[rate]

    async def _wait_heard(self, spoken: list[_Spoken], watchdog_s: float | None = None) -> None:
        """Wait until the caller has heard the last chunk, it was cleared, or its mark is overdue."""
        if spoken:
            overdue_s = watchdog_s or sum(s.audio_s for s in spoken) + MARK_GRACE_S
            await self.player.wait_mark(spoken[-1].mark, within_s=overdue_s)

    async def _hang_up(self, spoken: list[_Spoken]) -> None:
        if spoken and not self.player.heard(spoken[-1].mark):
            log.warning("call %s: farewell not acknowledged; hanging up anyway", self.call_id)
        log.info("call %s: hanging up (end_call)", self.call_id)
        await self.link.hang_up()

    def _finish(self, metrics: TurnMetrics, spoken: list[_Spoken]) -> None:
        """Record the turn; history keeps only what the caller actually heard."""
        metrics.turn_done = time.monotonic()
        metrics.reply_heard = " ".join(s.text for s in spoken if self.player.heard(s.mark))
        if metrics.reply_heard:
            self.history.append(Message("assistant", metrics.reply_heard))
        metrics.log()
        if self.on_turn is not None:
            try:
                self.on_turn(metrics)
            except Exception:
                log.exception("on_turn callback failed")
