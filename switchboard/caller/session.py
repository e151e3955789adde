"""One simulated call: `run_call` opens the socket and runs the caller's tasks (the receiver, the
playback ticker, the frame loop and the script) on their shared state, `_Call`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import websockets
from websockets.exceptions import ConnectionClosed

from switchboard.caller.events import (
    BotAudioEnded,
    BotAudioStarted,
    ClearReceived,
    EventCallback,
    Hangup,
    LineEnded,
    LineStarted,
    MalformedMessage,
    MarkEchoed,
    Notice,
    StopSent,
    print_event,
)
from switchboard.caller.lines import DEFAULT_VOICE, CallerLine, Echo, background_noise, mix, prepare_audio
from switchboard.caller.results import CallResult, LineResult, talk_over_s, write_recording
from switchboard.caller.sender import MediaSender
from switchboard.caller.timeline import RATE, Playback, SimClock, sample_at
from switchboard.caller.wire import Checked, make_wire

TICK_S = 0.01  # playback / script polling step (simulated seconds)
PAUSE_BEFORE_LINE_S = 0.3  # the caller's pause before answering
BARGE_IN_AFTER_S = 1.0  # a barge-in line starts once the bot's reply has been audible this long
MAX_MALFORMED_EXAMPLES = 5
DEFAULT_CUSTOM_PARAMETERS = {"from": "+15550001111", "to": "+15550002222"}


class _Call:
    """One simulated call: the receiver, playback ticker and script tasks, and their shared state."""

    def __init__(
        self,
        ws: Any,
        clock: SimClock,
        sender: MediaSender,
        lines: list[CallerLine],
        audio: list[np.ndarray],
        *,
        emit: EventCallback,
        hangup_timeout_s: float,
        reply_timeout_s: float,
        echo_marks: bool = True,
    ) -> None:
        self.ws = ws
        self.echo_marks = echo_marks
        self.clock = clock
        self.sender = sender
        self.playback = Playback()
        self.lines = lines
        self.audio = audio
        self.emit = emit
        self.hangup_timeout_s = hangup_timeout_s
        self.reply_timeout_s = reply_timeout_s
        self.result = CallResult(
            stream_sid=sender.stream_sid,
            call_sid=sender.call_sid,
            lines=[LineResult(i, line.label, line.barge_in) for i, line in enumerate(lines)],
        )
        self._current: LineResult | None = None  # the line spoken most recently
        self._awaiting_reply: LineResult | None = None  # ended, no bot reply yet
        self._reply_needs_new_talk = False  # the bot was audible when that line ended
        self._bot_talking = False  # as last reported by an event
        self.closing = False  # we are ending the call ourselves

    # -- receiver ------------------------------------------------------------------------------------

    async def receive(self) -> None:
        """Handle the server's messages until the socket closes."""
        try:
            async for raw in self.ws:
                await self._handle(raw)
        except ConnectionClosed:
            pass
        if not self.closing:
            self.result.hangup = True
            self.emit(Hangup(self.clock.now()))

    async def _handle(self, raw: str | bytes) -> None:
        now = self.clock.now()
        self._check_bot_ended(now)
        checked = self._parse(raw)
        if isinstance(checked, str):
            self._malformed(now, checked, raw)
        elif checked[0] == "media":
            self._on_bot_audio(checked[1], now)
        elif checked[0] == "mark":
            self.result.marks_received += 1
            self.playback.add_mark(checked[1], now)
            await self._echo_due_marks(now)
        else:
            await self._on_clear(now)

    def _parse(self, raw: str | bytes) -> Checked:
        """Validate a server message: ``("media", pcm)``, ``("mark", name)``, ``("clear", None)``, or the
        reason it is malformed (the carrier's wire format decides)."""
        return self.sender.wire.check(raw)

    def _malformed(self, now: float, reason: str, raw: str | bytes) -> None:
        example = repr(raw[:120]) + ("…" if len(raw) > 120 else "")
        self.result.malformed_count += 1
        if len(self.result.malformed_examples) < MAX_MALFORMED_EXAMPLES:
            self.result.malformed_examples.append(f"{reason}: {example}")
        self.emit(MalformedMessage(now, reason, example))

    def _on_bot_audio(self, pcm: np.ndarray, now: float) -> None:
        starts = self.playback.add_audio(pcm, now)
        lead_s = (self.playback.queue_end - sample_at(now)) / RATE
        self.result.max_bot_lead_s = max(self.result.max_bot_lead_s, lead_s)
        line, delay_ms = self._awaiting_reply, None
        # the reply is the first audio after the line ended — or, if the bot was still audible then
        # (talking over the caller), the next time it starts talking
        if line is not None and (starts or not self._reply_needs_new_talk):
            assert line.ended_s is not None
            delay_ms = line.response_delay_ms = (now - line.ended_s) * 1000
            self._awaiting_reply = None
        if starts or delay_ms is not None:
            self._bot_talking = True
            self.emit(BotAudioStarted(now, delay_ms))

    async def _on_clear(self, now: float) -> None:
        pending = self.playback.clear(now)
        self.result.clears_received += 1
        line, since_ms = self._current, None
        # a clear answers the current line if it came after its onset and before the bot replied to it
        if line is not None and not line.clear_received and line.response_delay_ms is None:
            assert line.started_s is not None
            since_ms = (now - line.started_s) * 1000
            line.clear_after_onset_ms = since_ms
        self.emit(ClearReceived(now, since_ms, len(pending)))
        self._check_bot_ended(now)
        for name in pending:
            await self._echo(name, now, cleared=True)

    # -- playback ticker -----------------------------------------------------------------------------

    async def tick(self) -> None:
        """Advance the playhead: echo marks it passed, notice when the bot falls silent."""
        while True:
            await self.clock.sleep(TICK_S)
            now = self.clock.now()
            self._check_bot_ended(now)
            await self._echo_due_marks(now)

    def _check_bot_ended(self, now: float) -> None:
        if self._bot_talking and not self.playback.talking(now):
            self._bot_talking = False
            self.emit(BotAudioEnded(self.playback.ended_at()))

    async def _echo_due_marks(self, now: float) -> None:
        for name in self.playback.due_marks(now):
            await self._echo(name, now, cleared=False)

    async def _echo(self, name: str, now: float, *, cleared: bool) -> None:
        if not self.echo_marks:  # a carrier that never confirms playback: the server must not wait forever
            return
        if cleared and not getattr(self.sender.wire, "echoes_cleared_marks", True):  # Plivo, Vonage
            return
        await self.sender.echo_mark(name)
        self.result.marks_echoed += 1
        self.result.marks_cleared += cleared
        self.emit(MarkEchoed(now, name, cleared))

    # -- script --------------------------------------------------------------------------------------

    async def script(self) -> None:
        """Speak every line in turn, then wait for the server to hang up (or send stop)."""
        since = 0.0  # the bot must say something after this before a normal line
        for line, audio, result in zip(self.lines, self.audio, self.result.lines, strict=True):
            since = await self.speak(line, audio, result, since)
        await self.hang_up(since)

    async def speak(self, line: CallerLine, audio: np.ndarray, result: LineResult, since: float) -> float:
        """Say one line at its moment after ``since`` (see `CallerLine`); returns when it ended."""
        await self._wait_for_turn(line, since)
        started, ended = self.sender.say(audio)
        result.started_s = await started
        self._current = result
        self.emit(LineStarted(result.started_s, result.index, result.text, result.barge_in))
        result.ended_s = await ended
        self._awaiting_reply = result
        self._reply_needs_new_talk = self.playback.audible(result.ended_s)
        self.emit(LineEnded(result.ended_s, result.index))
        return result.ended_s

    async def speak_next(self, line: CallerLine, audio: np.ndarray, since: float) -> float:
        """Say a line decided during the call (an LLM caller's): its result joins the call's."""
        result = LineResult(len(self.result.lines), line.label, line.barge_in)
        self.result.lines.append(result)
        return await self.speak(line, audio, result, since)

    async def wait_for_reply(self, since: float) -> np.ndarray:
        """Until the bot has replied since ``since`` and finished (or the reply timeout); returns the bot's
        audio the caller heard since then (8 kHz; cut where a clear cut it)."""
        await self._wait_for_turn(CallerLine(text="(waiting)"), since)
        start = sample_at(since)
        return self.playback.window(start, max(0, sample_at(self.clock.now()) - start))

    async def hang_up(self, since: float, wait: bool = True) -> None:
        """Wait (``wait``) for the server to hang up after the last line and its reply, else send stop."""
        if wait:
            await self._wait_for_hangup(since)
        self.closing = True
        await self.sender.send_stop()
        self.result.stop_sent = True
        self.emit(StopSent(self.clock.now()))

    def _replied_since(self, since: float) -> bool:
        return self.playback.talk_start is not None and self.playback.talk_start >= since

    async def _wait_for_turn(self, line: CallerLine, since: float) -> None:
        """Wait until the bot has replied (or greeted) since ``since`` and it is this line's moment."""
        deadline = since + self.reply_timeout_s
        pb = self.playback
        while True:
            now = self.clock.now()
            replied = self._replied_since(since)
            if line.barge_in and replied:
                assert pb.talk_start is not None
                if pb.audible(now) and now - pb.talk_start >= BARGE_IN_AFTER_S:
                    return
                if not pb.talking(now):
                    self.emit(Notice(now, "the bot's reply was too short to talk over"))
                    return
            elif replied and not pb.talking(now):
                await self.clock.sleep(PAUSE_BEFORE_LINE_S)
                if not pb.audible(self.clock.now()):
                    return
            elif now >= deadline and (not pb.audible(now) or now >= deadline + self.reply_timeout_s):
                self.emit(
                    Notice(now, f"no reply from the bot within {self.reply_timeout_s:g} s; speaking anyway")
                )
                return
            await self.clock.sleep(TICK_S)

    async def _wait_for_hangup(self, since: float) -> None:
        """Return once the bot has been silent for ``hangup_timeout_s`` after the last line and its reply."""
        while True:
            now = self.clock.now()
            quiet_since = max(since, self.playback.ended_at())
            if not self.playback.audible(now) and now - quiet_since >= self.hangup_timeout_s:
                return
            await self.clock.sleep(TICK_S)

    # -- results -------------------------------------------------------------------------------------

    def finish(self, record_path: str | None) -> CallResult:
        """Fill in the totals (and write the recording) at the end of the call."""
        now = self.clock.now()
        self._check_bot_ended(now)
        result = self.result
        result.duration_s = now
        result.bot_audio_received_s = self.playback.received_samples / RATE
        result.bot_audio_played_s = self.playback.played_samples(now) / RATE
        result.talk_over_s = talk_over_s(result.lines, self.playback.segments, now)
        if record_path is not None:
            write_recording(record_path, self.sender.sent_speech, self.playback.segments, now)
            result.record_path = record_path
        return result


def _closed_under(task: asyncio.Task[None]) -> bool:
    """True if the task ended because the socket closed under one of its sends."""
    return not task.cancelled() and isinstance(task.exception(), ConnectionClosed)


async def run_call(
    url: str,
    lines: list[CallerLine],
    *,
    speed: float = 1.0,
    custom_parameters: dict[str, str] | None = None,
    record_path: str | None = None,
    voice: str = DEFAULT_VOICE,
    silence_frames: bool = True,
    on_event: EventCallback | None = None,
    hangup_timeout_s: float = 15.0,
    reply_timeout_s: float = 15.0,
    carrier: str = "twilio",
    sample_rate: int = RATE,
    echo: Echo | None = None,
    echo_marks: bool = True,
    rate: float = 1.0,
    noise_db: float | None = None,
    script: Callable[[_Call], Awaitable[None]] | None = None,
) -> CallResult:
    """Place a simulated Twilio call to the Media Streams server at ``url`` and play the script.

    ``carrier="exotel"`` speaks Exotel's Voicebot protocol instead, at ``sample_rate`` (8000, 16000
    or 24000); ``from``/``to`` in ``custom_parameters`` then go into `start`'s own fields.

    ``on_event`` receives every `CallerEvent` (default: print the conversation). The call ends when the
    server closes the socket (``hangup=True``) or, after the last line, once the bot has been silent for
    ``hangup_timeout_s`` — then the caller sends `stop` and closes. A normal line waits at most
    ``reply_timeout_s`` for the bot's reply to the previous line. All durations are simulated seconds.
    ``echo`` feeds the bot's audio back into the caller's line (a speakerphone without echo control).
    ``echo_marks=False`` never echoes the server's marks (a carrier that doesn't confirm playback).
    ``rate`` > 1 speaks the lines faster; ``noise_db`` mixes steady noise at that level (dBFS) into the line.
    ``script(call)`` plays the caller instead of ``lines`` (an LLM caller: `_Call.wait_for_reply`,
    `speak_next`, `hang_up`).
    Raises OSError / websockets errors when the server cannot be reached.
    """
    if speed <= 0:
        raise ValueError("speed must be > 0")
    emit = on_event if on_event is not None else print_event
    params = dict(DEFAULT_CUSTOM_PARAMETERS if custom_parameters is None else custom_parameters)
    wire = make_wire(carrier, sample_rate)
    audio = [await asyncio.to_thread(prepare_audio, line, voice, rate) for line in lines]

    headers: dict[str, str] = {}
    if hasattr(wire, "open"):  # the carrier's answer webhook first (switchboard/callers/)
        url, headers = await wire.open(url, params)
    async with websockets.connect(url, max_size=2**24, additional_headers=headers) as ws:
        clock = SimClock(speed)
        sender = MediaSender(ws, clock, custom_parameters=params, silence_frames=silence_frames, wire=wire)
        call = _Call(
            ws,
            clock,
            sender,
            list(lines),
            audio,
            emit=emit,
            hangup_timeout_s=hangup_timeout_s,
            reply_timeout_s=reply_timeout_s,
            echo_marks=echo_marks,
        )
        leaks = [echo.leak(call.playback)] if echo is not None else []
        leaks += [background_noise(noise_db)] if noise_db is not None else []
        if leaks:
            sender.echo = leaks[0] if len(leaks) == 1 else mix(leaks)
        with contextlib.suppress(ConnectionClosed):  # a server closing at once: the receiver reports it
            await sender.send_handshake()
        receiver = asyncio.create_task(call.receive(), name="caller-receive")
        others = [
            asyncio.create_task(sender.run(), name="caller-frames"),
            asyncio.create_task(call.tick(), name="caller-playback"),
            asyncio.create_task(call.script() if script is None else script(call), name="caller-script"),
        ]
        done: set[asyncio.Task[None]] = set()
        try:
            done, _ = await asyncio.wait([receiver, *others], return_when=asyncio.FIRST_COMPLETED)
        finally:
            # unless the server went away, it is us ending the call: closing the socket is no hang-up
            server_gone = receiver in done or any(_closed_under(task) for task in done)
            call.closing = call.closing or not server_gone
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            await ws.close()
            await asyncio.gather(receiver, return_exceptions=True)
        for task in done:  # surface bugs
            exc = task.exception()
            if exc is not None and not isinstance(exc, ConnectionClosed):
                raise exc
        result = call.finish(record_path)
        result.close_code, result.close_reason = ws.close_code, ws.close_reason or ""
        return result
