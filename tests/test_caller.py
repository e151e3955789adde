"""The simulated Twilio caller against a tiny fake Media Streams server (loopback, sped up).

Timing assertions are lower bounds implied by the simulation (never "fast enough" upper bounds on
wall-clock time) or are made on sample counts and the order of messages.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.server import ServerConnection, serve

import switchboard.caller as caller
from switchboard.audio.g711 import ulaw_decode, ulaw_encode
from switchboard.audio.wav import write_wav
from switchboard.caller import (
    BotAudioStarted,
    CallerEvent,
    CallerLine,
    ClearReceived,
    LineStarted,
    MarkEchoed,
    Playback,
    run_call,
)

SPEED = 10.0
LINE_S = 0.6  # the stub synthesiser's line length
REPLY_S = 10.0  # the fake's reply that the barge-in test clears


def tone(seconds: float, rate: int = 8000, freq: float = 440.0, amplitude: float = 8000.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t + 0.3)).astype(np.int16)  # offset: no exact zeros


@pytest.fixture(autouse=True)
def stub_tts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Caller lines become a 0.6 s 300 Hz tone at 22.05 kHz (deterministic; eSpeak is tested separately)."""
    monkeypatch.setattr(caller.lines, "synthesize_line",  # the module whose prepare_audio calls it
                        lambda text, voice, rate=1.0: (tone(LINE_S, 22050, 300.0), 22050))


Behaviour = Callable[["FakeServer", ServerConnection], Awaitable[None]]


class FakeServer:
    """A minimal Media Streams server: records what the caller sends and runs one test's behaviour."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.messages: list[tuple[float, dict[str, Any]]] = []  # (loop time received, message)
        self.sent: list[tuple[float, str]] = []  # (loop time sent, what)
        self.stream_sid: str | None = None
        self.closed = False
        self._speech: list[dict[str, Any]] = []  # voiced media frames, decoded once on arrival
        self._runs = 0
        self._in_speech = False
        self._changed = asyncio.Event()
        self.url = ""

    async def __aenter__(self) -> FakeServer:
        self._server = await serve(self._handler, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/media-stream"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _handler(self, ws: ServerConnection) -> None:
        reader = asyncio.create_task(self._read(ws))
        try:
            await self.behaviour(self, ws)
        finally:
            await ws.close()
            await reader

    async def _read(self, ws: ServerConnection) -> None:
        async for raw in ws:
            msg = json.loads(raw)
            self.messages.append((asyncio.get_running_loop().time(), msg))
            if msg["event"] == "start":
                self.stream_sid = msg["streamSid"]
            if msg["event"] == "media":
                voiced = bool(np.any(decode(msg)))
                if voiced:
                    self._speech.append(msg)
                self._runs += self._in_speech and not voiced
                self._in_speech = voiced
            self._changed.set()
        self.closed = True
        self._changed.set()

    async def wait_for(self, predicate: Callable[[], bool], limit_s: float = 10.0) -> None:
        async with asyncio.timeout(limit_s):
            while not predicate():
                if self.closed:
                    raise AssertionError("the caller closed the socket while the fake was waiting")
                self._changed.clear()
                await self._changed.wait()

    # -- what the caller sent --

    def events(self, name: str) -> list[dict[str, Any]]:
        return [m for _, m in self.messages if m["event"] == name]

    def media(self) -> list[dict[str, Any]]:
        return self.events("media")

    def speech_frames(self) -> list[dict[str, Any]]:
        return list(self._speech)

    def speech_runs(self) -> int:
        """Completed caller lines: runs of speech frames followed by a silence frame."""
        return self._runs

    def echoed(self, name: str) -> bool:
        return any(m["mark"]["name"] == name for m in self.events("mark"))

    def index_of(self, predicate: Callable[[dict[str, Any]], bool]) -> int:
        return next(i for i, (_, m) in enumerate(self.messages) if predicate(m))

    # -- what the fake sends --

    async def send_audio(self, ws: ServerConnection, pcm: np.ndarray) -> None:
        """Send PCM as 20 ms μ-law media frames in one burst."""
        self.sent.append((asyncio.get_running_loop().time(), "audio"))
        for i in range(0, len(pcm), 160):
            payload = base64.b64encode(ulaw_encode(pcm[i : i + 160])).decode()
            await ws.send(
                json.dumps({"event": "media", "streamSid": self.stream_sid, "media": {"payload": payload}})
            )

    async def send_mark(self, ws: ServerConnection, name: str) -> None:
        await ws.send(json.dumps({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}}))
        self.sent.append((asyncio.get_running_loop().time(), f"mark:{name}"))

    async def send_clear(self, ws: ServerConnection) -> None:
        await ws.send(json.dumps({"event": "clear", "streamSid": self.stream_sid}))
        self.sent.append((asyncio.get_running_loop().time(), "clear"))


def decode(media_msg: dict[str, Any]) -> np.ndarray:
    return ulaw_decode(base64.b64decode(media_msg["media"]["payload"]))


def collect() -> tuple[list[CallerEvent], Callable[[CallerEvent], None]]:
    events: list[CallerEvent] = []
    return events, events.append


def expected_frames(seconds: float) -> int:
    return math.ceil(round(seconds * 8000) / 160)


# ------------------------------------------------------------------------------------------ playback


def test_playback_queues_audio_and_marks_by_sample_count() -> None:
    pb = Playback()
    assert pb.add_audio(np.ones(8000, np.int16), now=0.5)  # starts at arrival: samples 4000..12000
    assert not pb.add_audio(np.ones(800, np.int16), now=0.6)  # queued after it: ..12800
    pb.add_mark("m", now=0.6)
    assert pb.due_marks(1.59) == []
    assert pb.due_marks(1.6) == ["m"]
    assert pb.audible(1.59) and not pb.audible(1.6)
    assert pb.played_samples(1.0) == 4000
    assert pb.add_audio(np.ones(80, np.int16), now=3.0)  # the queue ran dry: plays at arrival
    pb.add_mark("late", now=5.0)  # nothing queued: due at once
    assert pb.due_marks(5.0) == ["late"]


def test_playback_clear_cuts_queue_and_returns_pending_marks() -> None:
    pb = Playback()
    pb.add_audio(np.ones(16000, np.int16), now=0.0)
    pb.add_mark("a", now=0.0)
    pb.add_audio(np.ones(8000, np.int16), now=0.0)
    pb.add_mark("b", now=0.0)
    assert pb.clear(0.5) == ["a", "b"]
    assert not pb.audible(0.5)
    assert pb.played_samples(10.0) == 4000
    assert pb.due_marks(10.0) == []
    assert pb.add_audio(np.ones(160, np.int16), now=0.6)  # new audio plays at arrival


def test_playback_talking_spans_short_gaps_and_ends_at_a_clear() -> None:
    pb = Playback()
    assert pb.add_audio(np.ones(800, np.int16), now=0.0)  # 0.0-0.1 s
    assert not pb.add_audio(np.ones(800, np.int16), now=0.5)  # a 0.4 s gap: still the same talk
    assert pb.talking(1.2) and not pb.talking(1.3)  # silent since 0.6 s; BOT_IDLE_S = 0.7 s
    assert pb.add_audio(np.ones(8000, np.int16), now=2.0)
    assert pb.talk_start == 2.0
    pb.clear(2.5)
    assert not pb.talking(2.5)
    assert pb.add_audio(np.ones(80, np.int16), now=2.6)  # after a clear: talking anew


# ------------------------------------------------------------------------------------------ calls


async def test_handshake_frames_mark_echo_and_hangup() -> None:
    """Start/media wire format; the mark comes back only after 2 s of audio played; the caller waits for
    the greeting to finish before speaking; the server closing the socket is a hang-up."""

    async def behaviour(fake: FakeServer, ws: ServerConnection) -> None:
        await fake.wait_for(lambda: fake.stream_sid is not None)
        await fake.send_audio(ws, tone(2.0))
        await fake.send_mark(ws, "greeting")
        await fake.wait_for(lambda: fake.speech_runs() >= 1)

    events, on_event = collect()
    custom = {"pipeline": "default", "from": "+15550001111", "to": "+15550002222"}
    async with FakeServer(behaviour) as fake:
        result = await run_call(
            fake.url, [CallerLine("hello")], speed=SPEED, custom_parameters=custom, on_event=on_event
        )

    assert result.hangup and not result.stop_sent and result.close_code == 1000
    msgs = [m for _, m in fake.messages]
    assert msgs[0] == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    start = msgs[1]
    assert start["event"] == "start" and start["sequenceNumber"] == "1"
    sid = start["streamSid"]
    assert sid == start["start"]["streamSid"] == result.stream_sid
    assert len(sid) == 34 and sid.startswith("MZ") and int(sid[2:], 16) >= 0
    for key, prefix in (("accountSid", "AC"), ("callSid", "CA")):
        value = start["start"][key]
        assert isinstance(value, str) and len(value) == 34 and value.startswith(prefix)
    assert start["start"]["callSid"] == result.call_sid
    assert start["start"]["tracks"] == ["inbound"]
    assert start["start"]["customParameters"] == custom
    assert start["start"]["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}

    # every message after `connected`: string sequence numbers 1, 2, 3, … and our streamSid
    assert [m["sequenceNumber"] for m in msgs[1:]] == [str(i) for i in range(1, len(msgs))]
    assert all(m["streamSid"] == sid for m in msgs[1:])
    media = fake.media()
    assert len(media) > 100
    for i, m in enumerate(media):
        assert m["media"]["track"] == "inbound"
        assert m["media"]["chunk"] == str(i + 1)
        assert isinstance(m["media"]["timestamp"], str)
        assert len(base64.b64decode(m["media"]["payload"])) == 160
    stamps = [int(m["media"]["timestamp"]) for m in media]
    assert stamps == list(range(0, 20 * len(stamps), 20))  # silence frames fill every 20 ms

    # the mark: echoed once, no earlier than 2 s of audio could play (in the fake's clock, / speed)
    echoes = fake.events("mark")
    assert [e["mark"]["name"] for e in echoes] == ["greeting"]
    audio_sent_at = next(t for t, what in fake.sent if what == "audio")
    echo_at = next(t for t, m in fake.messages if m["event"] == "mark")
    assert echo_at - audio_sent_at >= 2.0 / SPEED - 0.005
    assert result.marks_received == 1 and result.marks_echoed == 1 and result.marks_cleared == 0
    assert result.bot_audio_received_s == pytest.approx(2.0)
    assert result.bot_audio_played_s == pytest.approx(2.0)

    # the caller spoke only after the greeting had played, plus the idle wait and its pause
    speech = fake.speech_frames()
    assert len(speech) == expected_frames(LINE_S)
    first_speech = fake.index_of(lambda m: m["event"] == "media" and bool(np.any(decode(m))))
    assert first_speech > fake.index_of(lambda m: m["event"] == "mark")
    assert int(speech[0]["media"]["timestamp"]) >= 1000 * (
        2.0 + caller.BOT_IDLE_S + caller.PAUSE_BEFORE_LINE_S
    )
    line = result.lines[0]
    assert line.spoken and line.started_s == pytest.approx(int(speech[0]["media"]["timestamp"]) / 1000)
    assert line.ended_s == pytest.approx(line.started_s + len(speech) * 0.02)
    assert line.response_delay_ms is None  # the fake never replied
    kinds = [e.kind for e in events]
    assert kinds.index("bot_audio_started") < kinds.index("line_started") < kinds.index("line_ended")
    assert kinds[-1] == "hangup"
    assert result.malformed_count == 0


async def test_reply_delay_barge_in_clear_and_recording(tmp_path: Path) -> None:
    """A reply after line 1 is timed; the barge-in line starts ≥ 1 s into the reply; the clear echoes
    the pending mark at once; the recording's right channel is cut at the clear, its left channel is
    exactly what the server received, at the right offset."""
    record = tmp_path / "call.wav"

    async def behaviour(fake: FakeServer, ws: ServerConnection) -> None:
        await fake.wait_for(lambda: fake.stream_sid is not None)
        await fake.send_audio(ws, tone(1.0))
        await fake.send_mark(ws, "greeting")
        await fake.wait_for(lambda: fake.speech_runs() >= 1)  # line 1 ended
        await fake.send_audio(ws, tone(REPLY_S, freq=600.0))  # long: the clear cuts it
        await fake.send_mark(ws, "reply")
        line1_frames = len(fake.speech_frames())
        await fake.wait_for(lambda: len(fake.speech_frames()) > line1_frames)  # line 2 started
        await fake.send_clear(ws)
        await fake.wait_for(lambda: fake.echoed("reply"))
        await fake.wait_for(lambda: fake.speech_runs() >= 2)

    events, on_event = collect()
    lines = [CallerLine("question"), CallerLine("interrupt", barge_in=True)]
    async with FakeServer(behaviour) as fake:
        result = await run_call(fake.url, lines, speed=SPEED, record_path=str(record), on_event=on_event)

    assert result.hangup
    line1, line2 = result.lines
    assert line1.response_delay_ms is not None and line1.response_delay_ms >= 0
    assert not line1.clear_received
    reply = next(e for e in events if isinstance(e, BotAudioStarted) and e.delay_after_caller_ms is not None)
    assert reply.delay_after_caller_ms == line1.response_delay_ms
    assert line2.started_s is not None and line2.started_s - reply.t >= caller.BARGE_IN_AFTER_S
    assert line2.clear_received and line2.clear_after_onset_ms is not None
    assert line2.clear_after_onset_ms >= 0
    clear = next(e for e in events if isinstance(e, ClearReceived))
    assert clear.since_caller_onset_ms == line2.clear_after_onset_ms and clear.marks_flushed == 1

    # the pending mark came back at the clear, long before its audio could have played
    echo = next(e for e in events if isinstance(e, MarkEchoed) and e.name == "reply")
    assert echo.cleared and echo.t == clear.t < reply.t + REPLY_S
    remaining_frames = (reply.t + REPLY_S - clear.t) / 0.02
    clear_at = next(t for t, what in fake.sent if what == "clear")
    after_clear = [m for t, m in fake.messages if t >= clear_at]
    echo_index = next(i for i, m in enumerate(after_clear) if m["event"] == "mark")
    assert echo_index < remaining_frames / 2  # caller frames the fake saw between its clear and the echo
    assert [e["mark"]["name"] for e in fake.events("mark")] == ["greeting", "reply"]
    assert result.marks_echoed == 2 and result.marks_cleared == 1 and result.clears_received == 1

    # sample counts: the greeting, plus the reply from its start to the clear
    assert result.bot_audio_received_s == pytest.approx(1.0 + REPLY_S)
    assert result.bot_audio_played_s == pytest.approx(1.0 + clear.t - reply.t, abs=2 / 8000)

    # recording: stereo 8 kHz on the caller's clock
    pcm, rate = _read_stereo(record)
    assert rate == 8000
    left, right = pcm[:, 0], pcm[:, 1]
    # right: bot audio as played, nothing after the clear (the fake never replied again)
    assert np.count_nonzero(right) <= round(result.bot_audio_played_s * 8000)
    assert np.count_nonzero(right) > round((result.bot_audio_played_s - 0.1) * 8000)
    clear_sample = round(clear.t * 8000)
    assert not np.any(right[clear_sample + 1 :])
    assert np.any(right[clear_sample - 800 : clear_sample])
    # left: exactly the frames the server received, at their timestamps
    expected = np.zeros(len(left), dtype=np.int16)
    for m in fake.media():
        pos = int(m["media"]["timestamp"]) * 8
        expected[pos : pos + 160] = decode(m)[: len(expected) - pos]
    np.testing.assert_array_equal(left, expected)
    first_voiced = int(np.flatnonzero(left)[0])  # (the line's first sample may decode to 0)
    assert first_voiced // 160 * 160 == round(line1.started_s * 8000)
    assert int(fake.speech_frames()[0]["media"]["timestamp"]) * 8 == first_voiced // 160 * 160


def _read_stereo(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    pcm, rate = sf.read(str(path), dtype="int16", always_2d=True)
    assert pcm.shape[1] == 2
    return pcm, int(rate)


async def test_wav_line_and_stop_when_server_never_hangs_up(tmp_path: Path) -> None:
    """A --wav line is resampled to 8 kHz; with no hang-up the caller sends a well-formed stop."""
    wav = tmp_path / "line.wav"
    write_wav(wav, tone(0.5, 16000, 500.0), 16000)

    async def behaviour(fake: FakeServer, ws: ServerConnection) -> None:
        await fake.wait_for(lambda: fake.stream_sid is not None)
        await fake.send_audio(ws, tone(0.5))
        await fake.wait_for(lambda: bool(fake.events("stop")))

    events, on_event = collect()
    async with FakeServer(behaviour) as fake:
        result = await run_call(
            fake.url, [CallerLine(wav=str(wav))], speed=SPEED, on_event=on_event, hangup_timeout_s=2.0
        )

    assert result.stop_sent and not result.hangup
    assert len(fake.speech_frames()) == expected_frames(0.5)
    assert result.lines[0].text == f"(plays {wav})"
    stop = fake.messages[-1][1]
    start = fake.messages[1][1]
    assert stop["event"] == "stop"
    assert stop["streamSid"] == start["streamSid"]
    assert stop["stop"] == {"accountSid": start["start"]["accountSid"], "callSid": start["start"]["callSid"]}
    assert stop["sequenceNumber"] == str(len(fake.messages) - 1)
    # the caller waited hangup_timeout_s (simulated) of bot silence after its line before giving up
    assert result.duration_s - result.lines[0].ended_s >= 2.0
    assert events[-1].kind == "stop_sent"


async def test_no_silence_frames_sends_only_speech() -> None:
    async def behaviour(fake: FakeServer, ws: ServerConnection) -> None:
        await fake.wait_for(lambda: fake.stream_sid is not None)
        await fake.send_audio(ws, tone(0.5))
        await fake.wait_for(lambda: len(fake.media()) >= expected_frames(LINE_S))

    async with FakeServer(behaviour) as fake:
        result = await run_call(
            fake.url, [CallerLine("hi")], speed=SPEED, silence_frames=False, on_event=lambda e: None
        )

    assert result.hangup
    media = fake.media()
    assert len(media) == expected_frames(LINE_S)
    assert all(np.any(decode(m)) for m in media)
    assert [m["media"]["chunk"] for m in media] == [str(i) for i in range(1, len(media) + 1)]
    stamps = [int(m["media"]["timestamp"]) for m in media]
    # the timestamp still tells stream time: the first frame is after the greeting, not at 0
    assert stamps[0] >= 1000 * (0.5 + caller.BOT_IDLE_S)
    assert stamps == list(range(stamps[0], stamps[0] + 20 * len(stamps), 20))


async def test_malformed_server_messages_are_counted() -> None:
    async def behaviour(fake: FakeServer, ws: ServerConnection) -> None:
        await fake.wait_for(lambda: fake.stream_sid is not None)
        sid = fake.stream_sid
        await ws.send(b"\x00binary")
        await ws.send("not json")
        await ws.send(json.dumps({"event": "media", "streamSid": "MZwrong", "media": {"payload": "//8="}}))
        await ws.send(json.dumps({"event": "media", "streamSid": sid, "media": {"payload": "!!notbase64"}}))
        await ws.send(json.dumps({"event": "playAudio", "streamSid": sid}))
        await ws.send(json.dumps({"event": "mark", "streamSid": sid, "mark": {}}))
        await fake.send_audio(ws, tone(0.3))
        await fake.wait_for(lambda: fake.speech_runs() >= 1)

    events, on_event = collect()
    async with FakeServer(behaviour) as fake:
        result = await run_call(fake.url, [CallerLine("hello")], speed=SPEED, on_event=on_event)

    assert result.hangup
    assert result.malformed_count == 6
    assert len(result.malformed_examples) == caller.MAX_MALFORMED_EXAMPLES
    assert "binary" in result.malformed_examples[0]
    assert "wrong or missing streamSid" in result.malformed_examples[2]
    assert result.bot_audio_received_s == pytest.approx(0.3)
    assert sum(e.kind == "malformed" for e in events) == 6


async def test_nothing_is_said_before_a_greeting_then_no_reply_notice() -> None:
    """With no greeting the caller waits reply_timeout_s before speaking, and says so."""

    async def behaviour(fake: FakeServer, ws: ServerConnection) -> None:
        await fake.wait_for(lambda: fake.speech_runs() >= 1)

    events, on_event = collect()
    async with FakeServer(behaviour) as fake:
        result = await run_call(
            fake.url, [CallerLine("anyone?")], speed=SPEED, on_event=on_event, reply_timeout_s=1.5
        )

    assert result.hangup
    assert int(fake.speech_frames()[0]["media"]["timestamp"]) >= 1500
    assert any(e.kind == "notice" for e in events)
    assert isinstance(next(e for e in events if e.kind == "line_started"), LineStarted)


def test_cli_arguments_keep_script_order() -> None:
    parser = argparse.ArgumentParser()
    caller.add_arguments(parser)
    args = parser.parse_args(
        [
            "ws://x/media-stream",
            "--say",
            "one",
            "--barge-in",
            "two",
            "--wav",
            "three.wav",
            "--say",
            "four",
            "--speed",
            "4",
            "--param",
            "pipeline=fast",
            "--no-silence-frames",
            "--record",
            "out.wav",
        ]
    )
    assert args.script == [
        CallerLine("one"),
        CallerLine("two", barge_in=True),
        CallerLine(wav="three.wav"),
        CallerLine("four"),
    ]
    assert args.speed == 4.0 and args.params == [("pipeline", "fast")]
    assert args.silence_frames is False and args.record == "out.wav"
    assert parser.parse_args(["ws://x/media-stream"]).script == []


def test_cli_reports_unreachable_server(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    caller.add_arguments(parser)
    assert caller.run_from_args(parser.parse_args(["ws://127.0.0.1:9/media-stream"])) == 1
    assert "failed" in capsys.readouterr().err


def test_printer_format() -> None:
    assert caller.format_event(BotAudioStarted(7.95, 830.0)) == (
        "[  7.95s] bot   : audio started 0.83 s after you stopped talking"
    )
    assert (
        caller.format_event(ClearReceived(9.31, 310.0, 1))
        == "[  9.31s] server: clear (0.31 s after you started)"
    )
    assert caller.format_event(LineStarted(5.1, 0, "hi", False)) == "[  5.10s] caller: hi"


async def test_real_espeak_line_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the real eSpeak NG provider (skipped until providers/espeak.py exists)."""
    pytest.importorskip("switchboard.providers.espeak")
    monkeypatch.undo()  # drop the stub synthesiser

    async def behaviour(fake: FakeServer, ws: ServerConnection) -> None:
        await fake.wait_for(lambda: fake.stream_sid is not None)
        await fake.send_audio(ws, tone(0.3))
        await fake.wait_for(lambda: fake.speech_runs() >= 1)

    async with FakeServer(behaviour) as fake:
        result = await run_call(
            fake.url, [CallerLine("what are your opening hours")], speed=SPEED, on_event=None
        )
    assert result.hangup
    assert 0.8 < result.lines[0].ended_s - result.lines[0].started_s < 4.0
    assert len(fake.speech_frames()) > 20


async def test_server_closing_at_once_is_a_hangup_with_its_close_code() -> None:
    async def behaviour(fake: FakeServer, ws: ServerConnection) -> None:
        await ws.close(1008, "bad signature")

    async with FakeServer(behaviour) as fake:
        result = await run_call(fake.url, [CallerLine("hello")], speed=SPEED, on_event=lambda e: None)
    assert result.hangup and not result.stop_sent
    assert result.close_code == 1008 and result.close_reason == "bad signature"
    assert not result.lines[0].spoken
    assert "not spoken" in caller.format_summary(result)
