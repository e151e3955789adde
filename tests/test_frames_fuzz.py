"""Every carrier parser is total: any frame becomes an event or a BadFrame, never another exception; and a
live call survives a barrage of arbitrary frames, then still answers its caller."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from switchboard.caller import CallerLine, run_call
from switchboard.config import parse_config
from switchboard.core.carrier import BadFrame
from switchboard.pipeline.call import Providers
from switchboard.server import create_app, running
from switchboard.telephony.exotel import wire as exotel
from switchboard.telephony.twilio import wire as twilio
from tests.fakes.instant import InstantLLM, InstantSTT, InstantTTS

pytestmark = pytest.mark.timescale()  # in-process calls on instant/fake providers: tests/timescale.py

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
EVENTS = ["connected", "start", "media", "mark", "dtmf", "stop", "clear", "nonsense"]
FIELDS = ["start", "media", "mark", "dtmf", "stop", "streamSid", "stream_sid", "payload", "timestamp",
          "digit", "name", "customParameters", "custom_parameters", "mediaFormat", "media_format",
          "sample_rate", "duration", "encoding", "callSid"]
NESTED = JSON | st.dictionaries(st.sampled_from(FIELDS), JSON)
# frames shaped like real ones, with arbitrary values where the real ones have theirs
FRAMES = st.fixed_dictionaries({"event": st.sampled_from(EVENTS)}).flatmap(
    lambda base: st.dictionaries(st.sampled_from(FIELDS), NESTED, max_size=4).map(
        lambda extra: {**base, **extra}))


def parse_all(raw: str | bytes) -> None:
    for parse in (twilio.parse, exotel.parse, exotel.Decoder().parse):
        try:
            parse(raw)
        except BadFrame:
            pass


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(FRAMES)
def test_frames_shaped_like_real_ones_parse_or_are_bad_frames(frame):
    parse_all(json.dumps(frame))


@settings(max_examples=100, deadline=None)
@given(JSON | st.binary(max_size=64) | st.text(max_size=64))
def test_anything_at_all_parses_or_is_a_bad_frame(value):
    parse_all(value if isinstance(value, (str, bytes)) else json.dumps(value))


def test_pathological_frames_are_bad_frames():
    for raw in ('{"event":"media","media":' + "[" * 5000 + "]" * 5000 + "}",
                '{"event":"media","media":{"payload":"AAAA","timestamp":1e400}}',
                '{"event":"media","media":{"payload":"AAAA","timestamp":-5}}',
                '{"event":"dtmf","dtmf":{"digit":"1","duration":1e400}}',
                '{"event":"start","start":{"stream_sid":"S","media_format":{"sample_rate":1e400}}}',
                "x" * (600 * 1024)):
        parse_all(raw)


CONFIG = """
pipelines:
  default:
    greeting: "Hi."
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
"""


async def test_a_live_call_survives_a_barrage_of_arbitrary_frames(speech_wav):
    """300 arbitrary frames (malformed, mistyped, out of range, a second start, marks and digits of
    nothing) in the middle of a call: each is handled or dropped, the call still takes the caller's
    keys afterwards, and another caller on the same server is answered."""
    import asyncio

    import websockets

    rng = random.Random(7)
    alive = [event for event in EVENTS if event != "stop"]  # a stop is the caller hanging up, not bad input
    shapes = [lambda: {"event": rng.choice(alive)},
              lambda: {"event": "media", "media": {"payload": rng.choice(["", "!!", "AAAA", 5, None]),
                                                   "timestamp": rng.choice([1e400, -1, "x", None])}},
              lambda: {"event": "dtmf", "dtmf": {"digit": rng.choice(["", 7, None, "\ud800", [1]])}},
              lambda: {"event": "mark", "mark": {"name": rng.choice(["", "nope", 3, None])}},
              lambda: {"event": "start", "start": {"streamSid": "MZ2", "callSid": "CA2"}},
              lambda: {"event": "media", "media": [[[[]]]]},
              lambda: {"event": "media", "media": {"payload": "A" * 40, "timestamp": 2**80}}]
    nasty = [json.dumps(rng.choice(shapes)()) for _ in range(300)]
    llm = InstantLLM("Still here.")
    providers = Providers(InstantSTT("hello"), llm, InstantTTS(ms_per_char=20))
    app = create_app(parse_config(CONFIG), providers={"default": providers})
    start = {"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA1", "accountSid": "AC1",
                                         "mediaFormat": {"encoding": "audio/x-mulaw"}}}
    async with running(app) as port:
        url = f"ws://127.0.0.1:{port}/media-stream"
        async with websockets.connect(url) as fuzzer:
            await fuzzer.send(json.dumps(start))
            for frame in [*nasty, b"\x00binary"]:
                await fuzzer.send(frame)
            for digit in "12#":
                await fuzzer.send(json.dumps({"event": "dtmf", "dtmf": {"digit": digit}}))
            async with asyncio.timeout(10):  # the call took the keys after the barrage: it lives
                while not any("pressed 12 on" in r[-1].content for r in llm.requests):  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            assert "CA1" in app.state.calls
        result = await run_call(url, [CallerLine(wav=speech_wav)], hangup_timeout_s=2,
                                on_event=lambda e: None)
    assert result.lines[0].response_delay_ms is not None  # another caller is answered


async def test_a_flood_is_logged_in_bounded_lines_and_a_second_connection_for_a_call_is_refused(caplog):
    """2,000 malformed frames and 2,000 keys on one call: at most a few dozen log lines; a second socket
    claiming the same call id is closed (1008) instead of merging into the live call."""
    import asyncio
    import logging

    import websockets

    providers = Providers(InstantSTT("hello"), InstantLLM("Ok."), InstantTTS(ms_per_char=20))
    app = create_app(parse_config(CONFIG), providers={"default": providers})
    start = {"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA1", "accountSid": "AC1"}}
    with caplog.at_level(logging.DEBUG):
        async with running(app) as port:
            url = f"ws://127.0.0.1:{port}/media-stream"
            async with websockets.connect(url) as first:
                await first.send(json.dumps(start))
                for _ in range(2000):
                    await first.send('{"event": "dance"}')
                    await first.send('{"event": "dtmf", "dtmf": {"digit": "5"}}')
                await first.send('{"event": "dtmf", "dtmf": {"digit": "#"}}')
                async with asyncio.timeout(10):
                    while "CA1" not in app.state.calls or not providers.llm.requests:  # noqa: ASYNC110
                        await asyncio.sleep(0.02)
                async with websockets.connect(url) as second:
                    await second.send(json.dumps(start))  # the same call id
                    await asyncio.wait_for(second.wait_closed(), 5)
                    assert second.close_code == 1008
                assert "CA1" in app.state.calls  # the first is untouched
            await asyncio.wait_for(app.state.host.wait_idle(), 10)
            async with websockets.connect(url) as third:  # the id again, once the first call has ended
                await third.send(json.dumps(start))
                async with asyncio.timeout(5):
                    while "CA1#2" not in app.state.calls:  # noqa: ASYNC110
                        await asyncio.sleep(0.02)
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert len([line for line in lines if "dropped" in line]) <= 30
    assert len([line for line in lines if "DTMF" in line or "keypad" in line]) <= 2
    assert "pressed " + "5" * 32 + " on" in providers.llm.requests[0][-1].content  # the entry is bounded
    assert any("refused a second connection" in line for line in lines)
    assert any("used by an earlier call of this process; recorded as CA1#2" in line for line in lines)


async def test_sockets_that_never_start_or_go_dead_are_closed(speech_wav):
    import asyncio

    import websockets

    providers = Providers(InstantSTT("hello"), InstantLLM("Ok."), InstantTTS(ms_per_char=20))
    app = create_app(parse_config(CONFIG), providers={"default": providers})
    app.state.host.start_timeout_s, app.state.host.idle_timeout_s = 0.5, 1.0  # (10 s and 5 min by default)
    start = {"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA1", "accountSid": "AC1"}}
    async with running(app) as port:
        url = f"ws://127.0.0.1:{port}/media-stream"
        async with websockets.connect(url) as idle:
            await idle.send('{"event": "connected"}')  # and then nothing
            await asyncio.wait_for(idle.wait_closed(), 5)
            assert idle.close_code == 1008
        async with websockets.connect(url) as dead:
            await dead.send(json.dumps(start))  # a call, then no frame at all
            await asyncio.wait_for(dead.wait_closed(), 5)
        await asyncio.wait_for(app.state.host.wait_idle(), 5)  # the dead call was closed and recorded
        result = await run_call(url, [CallerLine(wav=speech_wav)], hangup_timeout_s=0.5,
                                on_event=lambda e: None)  # a real caller's frames keep its call alive
    assert result.lines[0].response_delay_ms is not None


async def test_caller_controlled_strings_cannot_corrupt_the_store(tmp_path):
    """A lone surrogate and a 1,000-character 'from' in a start's parameters: the call is stored with
    them cleaned and cut, and the call API keeps answering while it is live and after."""
    import asyncio

    import httpx
    import websockets

    providers = Providers(InstantSTT("hello"), InstantLLM("Ok."), InstantTTS(ms_per_char=20))
    app = create_app(parse_config(CONFIG), providers={"default": providers}, store_url=str(tmp_path / "c.db"))
    params = {"from": "+1555" + "9" * 1000, "to": "+1555\ud800", "note\ud800": "x\x00y"}
    start = {"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA\ud8001", "accountSid": "AC1",
                                         "customParameters": params}}
    async with running(app) as port, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        async with websockets.connect(f"ws://127.0.0.1:{port}/media-stream") as ws:
            await ws.send(json.dumps(start))  # json.dumps writes the lone surrogate as \ud800
            async with asyncio.timeout(5):
                while not app.state.calls:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            live = await http.get("/api/calls")
            assert live.status_code == 200
        await asyncio.wait_for(app.state.host.wait_idle(), 5)
        async with asyncio.timeout(10):
            while not (listed := (await http.get("/api/calls")).json())["calls"]:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    [call] = listed["calls"]
    assert call["id"] == "CA?1" and call["to_number"] == "+1555?"  # the lone surrogates replaced
    assert call["from_number"] == ("+1555" + "9" * 1000)[:64]


def test_many_connections_with_a_few_bad_frames_each_cannot_flood_the_log(caplog, monkeypatch):
    """1,000 connections × 3 bad frames: 100 lines in a 10 s period, then one line saying how many were
    held back; nothing is lost from the counts."""
    import logging

    from switchboard import host

    clock = [1000.0]
    monkeypatch.setattr(host.time, "monotonic", lambda: clock[0])
    budget = host.WarningBudget()
    with caplog.at_level(logging.WARNING, "switchboard.server"):
        for n in range(1000):
            drops = host.FrameDrops(budget)
            for _ in range(3):
                drops.drop(f"CA{n}", "not JSON")
            drops.close(f"CA{n}")
        assert len(caplog.records) == 100
        clock[0] += 10
        budget.take()
    assert len(caplog.records) == 101
    held_back, rest = caplog.records[-1].getMessage().split(" ", 1)
    assert int(held_back) >= 2900 and rest.startswith("log lines about malformed frames held back")


async def test_nothing_of_a_call_is_kept_once_its_socket_closes():
    """20 sockets that start a call and say nothing more, then close: every CallSession (with its audio
    buffers) is gone. Memory the allocator keeps is reused: bench/fuzz.py --idle measures it."""
    import asyncio
    import gc
    import uuid

    import websockets

    from switchboard.pipeline.call import CallSession

    providers = Providers(InstantSTT("hello"), InstantLLM("Ok."), InstantTTS(ms_per_char=20))
    app = create_app(parse_config(CONFIG), providers={"default": providers})
    async with running(app) as port:
        sockets = []
        for n in range(20):
            ws = await websockets.connect(f"ws://127.0.0.1:{port}/media-stream")
            await ws.send(json.dumps({"event": "start", "start": {"streamSid": f"MZ{n}",
                                                                  "callSid": f"CA{uuid.uuid4().hex}"}}))
            sockets.append(ws)
        async with asyncio.timeout(10):
            while len(app.state.calls) < 20:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        for ws in sockets:
            await ws.close()
        await asyncio.wait_for(app.state.host.wait_idle(), 10)
        gc.collect()
        assert not [o for o in gc.get_objects() if isinstance(o, CallSession)]
