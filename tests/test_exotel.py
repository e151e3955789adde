"""Exotel's Voicebot applet: the wire module, and whole calls on `WS /exotel` from the simulated caller.

The simulated caller (switchboard/caller/ with carrier="exotel") checks every outbound media message
against Exotel's size rules itself and reports a violation as a malformed message; the tests also record
each payload's size to assert the rules on every message.
"""

import asyncio
import base64
import json
import re

import numpy as np
import pytest
import websockets
from websockets.exceptions import InvalidStatus

import switchboard.caller as caller
from switchboard.caller import CallerLine, run_call
from switchboard.config import default_config_path, load_config, parse_config
from switchboard.core.metrics import TurnMetrics
from switchboard.pipeline.call import Providers
from switchboard.server import create_app, running
from switchboard.telephony.exotel import auth_ok as exotel_auth_ok
from switchboard.telephony.exotel import wire as exotel
from tests.calls import answered_then_quiet
from tests.fakes.instant import InstantLLM, InstantSTT, InstantTTS
from tests.speech import quiet, speech_like

pytestmark = pytest.mark.timescale()  # in-process calls on instant/fake providers: tests/timescale.py

CONFIG = """
numbers:
  "+15550003333": sales
pipelines:
  default:
    greeting: "Hi there."
    apology: "Sorry, trouble."
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
  sales:
    greeting: "Sales here."
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
"""


def instant(reply: str = "It is noon.", transcript: str = "what time is it", **tts: float) -> Providers:
    return Providers(InstantSTT(transcript), InstantLLM(reply), InstantTTS(**tts))


@pytest.fixture
def chunk_sizes(monkeypatch):
    """The size in bytes of every outbound media payload the simulated Exotel caller receives."""
    sizes: list[int] = []
    check = caller.ExotelWire._decode

    def spy(self, data: bytes):
        sizes.append(len(data))
        return check(self, data)

    monkeypatch.setattr(caller.ExotelWire, "_decode", spy)
    return sizes


def assert_chunk_rules(sizes: list[int]) -> None:
    assert sizes, "no media came back"
    bad = [n for n in sizes if n < 3200 or n % 320 or n > 100 * 1024]
    assert not bad


async def exotel_call(config, providers: dict[str, Providers] | None, lines, **kwargs):
    turns: list[TurnMetrics] = []
    app = create_app(config, on_turn=turns.append, providers=providers)
    async with running(app) as port:
        url = kwargs.pop("url", f"ws://127.0.0.1:{port}/exotel").format(port=port)
        # the caller waits on the bot's answer to its last line (or the greeting), then 1 s of quiet
        kwargs = {"script": answered_then_quiet, "hangup_timeout_s": 1, **kwargs}
        result = await run_call(url, lines, carrier="exotel", **kwargs)
        await asyncio.wait_for(app.state.host.wait_idle(), 5)
        assert app.state.calls == {}
    return result, turns


# --- the wire module --------------------------------------------------------------------------------------


def start_message(camel: bool = False, rate: int | str = 8000, **extra) -> str:
    if camel:
        start = {
            "streamSid": "S1",
            "callSid": "C1",
            "accountSid": "A1",
            "from": "+1555",
            "to": "+1666",
            "customParameters": {"pipeline": "sales"},
            "mediaFormat": {"encoding": "audio/x-raw", "sampleRate": rate, "bitRate": "128kbps"},
        }
        return json.dumps(
            {"event": "start", "sequenceNumber": "1", "streamSid": "S1", "start": start, **extra}
        )
    start = {
        "stream_sid": "S1",
        "call_sid": "C1",
        "account_sid": "A1",
        "from": "+1555",
        "to": "+1666",
        "custom_parameters": {"pipeline": "sales"},
        "media_format": {"encoding": "audio/x-raw", "sample_rate": rate, "bit_rate": "128kbps"},
    }
    return json.dumps({"event": "start", "sequence_number": 1, "stream_sid": "S1", "start": start, **extra})


@pytest.mark.parametrize("camel", [False, True])
def test_start_in_either_spelling(camel):
    start = exotel.parse(start_message(camel, rate="16000"))
    assert isinstance(start, exotel.Start)
    assert (start.stream_sid, start.call_sid, start.account_sid) == ("S1", "C1", "A1")
    assert (start.from_number, start.to_number, start.sample_rate) == ("+1555", "+1666", 16000)
    assert start.custom_parameters == {"pipeline": "sales"}


def test_media_dtmf_mark_stop():
    pcm = np.array([0, 1, -1, 32767, -32768], dtype=np.int16)
    media = exotel.parse(
        json.dumps(
            {
                "event": "media",
                "stream_sid": "S1",
                "media": {
                    "chunk": 1,
                    "timestamp": "20",
                    "payload": base64.b64encode(pcm.astype("<i2").tobytes()).decode(),
                },
            }
        )
    )
    assert isinstance(media, exotel.Media) and media.timestamp_ms == 20
    assert media.pcm.dtype == np.int16 and list(media.pcm) == list(pcm)
    dtmf = exotel.parse('{"event": "dtmf", "stream_sid": "S1", "dtmf": {"digit": "5", "duration": "250"}}')
    assert isinstance(dtmf, exotel.Dtmf) and (dtmf.digit, dtmf.duration_ms) == ("5", 250)
    assert exotel.parse('{"event": "mark", "stream_sid": "S1", "mark": {"name": "m1"}}') == exotel.Mark("m1")
    stop = exotel.parse('{"event": "stop", "stream_sid": "S1", "stop": {"reason": "callended"}}')
    assert isinstance(stop, exotel.Stop) and stop.reason == "callended"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\x00", "binary frame"),
        ("{nope", "not JSON"),
        ("[]", "top level is list"),
        ('{"event": "dance"}', "unknown event 'dance'"),
        ('{"event": "media", "media": {"payload": "***"}}', "invalid base64"),
        ('{"event": "media", "media": {"payload": "AAAA"}}', "not whole 16-bit samples"),
        ('{"event": "start", "start": {}}', "start.stream_sid"),
        (start_message(rate=11025), "sample_rate"),
        ('{"event": "mark", "mark": {"name": 7}}', "mark.name"),
    ],
)
def test_bad_frames_say_why(raw, reason):
    with pytest.raises(exotel.BadFrame, match=re.escape(reason)):
        exotel.parse(raw)


def test_decoder_brings_the_negotiated_rate_to_8k():
    decoder = exotel.Decoder()
    decoder.parse(start_message(rate=16000))
    tone = (np.sin(np.arange(16000) * 2 * np.pi * 300 / 16000) * 8000).astype(np.int16)
    out = []
    for offset in range(0, len(tone), 1600):  # 100 ms chunks
        payload = base64.b64encode(tone[offset : offset + 1600].astype("<i2").tobytes()).decode()
        out.append(decoder.parse(json.dumps({"event": "media", "media": {"payload": payload}})).pcm)
    assert sum(len(p) for p in out) == 8000  # 1 s at 8 kHz, all out at once (the half-band filter holds none)


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
def test_chunker_makes_only_valid_chunks(rate):
    chunker = exotel.Chunker(rate)
    rng = np.random.default_rng(1)
    chunks, pushed = [], 0
    for _sentence in range(5):
        for _ in range(int(rng.integers(1, 40))):
            frame = rng.integers(-3000, 3000, 160).astype(np.int16)
            pushed += len(frame)
            chunks += chunker.push(frame)
        chunks += chunker.flush()  # before a mark
    assert_chunk_rules([len(c) for c in chunks])
    sent_s = sum(len(c) for c in chunks) / 2 / rate
    assert pushed / 8000 <= sent_s + 0.01 and sent_s <= pushed / 8000 + 5 * 0.2  # padding: < 200 ms a mark
    chunker.push(np.ones(800, dtype=np.int16))
    chunker.clear()
    assert chunker.flush() == []


def test_chunker_splits_more_than_100_kb():
    chunker = exotel.Chunker(24000)
    chunks = chunker.push(np.zeros(8000 * 3, dtype=np.int16))  # 3 s at 24 kHz = 144,000 bytes
    assert len(chunks) == 2
    chunks += chunker.flush()
    assert 144000 <= sum(map(len, chunks)) < 144000 + 3200  # the tail padded to a valid chunk
    assert_chunk_rules([len(c) for c in chunks])


def test_basic_auth_header():
    good = "Basic " + base64.b64encode(b"key:token").decode()
    assert exotel_auth_ok(good, "key:token")
    assert not exotel_auth_ok(good, "key:other")
    assert not exotel_auth_ok(None, "key:token")
    assert not exotel_auth_ok("Bearer key:token", "key:token")
    assert not exotel_auth_ok("Basic !!!", "key:token")


# --- whole calls ------------------------------------------------------------------------------------------


@pytest.mark.timescale(1)  # the bundled embedded pipeline runs in threads: real time
async def test_embedded_call_recognises_each_line_and_hangs_up_on_goodbye(chunk_sizes):
    """The bundled offline pipeline over Exotel: slin in 100 ms chunks, replies in valid chunks."""
    from tests.test_call_embedded import rule_reply

    config = load_config(default_config_path())
    lines = [CallerLine("i would like to book a table"), CallerLine("thank you goodbye")]
    result, turns = await exotel_call(config, None, lines)
    replies = [t for t in turns if t.kind == "reply"]
    assert len(replies) == len(lines)
    for line, turn in zip(lines, replies, strict=True):
        assert rule_reply(config, turn.transcript) == rule_reply(config, line.text), (
            line.text,
            turn.transcript,
        )
    assert replies[-1].ended_call and replies[-1].reply_heard == rule_reply(config, "goodbye")
    assert result.hangup and not result.stop_sent  # the server closed the socket
    assert result.malformed_count == 0
    assert_chunk_rules(chunk_sizes)


async def test_16k_call_bot_audio_lasts_as_long_as_rendered(speech_wav, chunk_sizes):
    providers = instant(sample_rate=24000, ms_per_char=60)
    result, turns = await exotel_call(
        parse_config(CONFIG),
        {"default": providers, "sales": instant()},
        [CallerLine(wav=speech_wav), CallerLine(wav=speech_wav)],
        sample_rate=16000,
    )
    assert [t.transcript for t in turns if t.kind == "reply"] == ["what time is it"] * 2
    # the caller's line, at the right rate (the last upload: earlier ones may be speculative, cut at a
    # pause that a late chunk made look longer than it was)
    assert 1.2 <= len(providers.stt.heard[-1]) / 16000 <= 1.9
    tts = providers.tts
    rendered_s = sum(len(tts.render(text)) for text in tts.spoken) / 24000
    # each chunk ends padded to a whole Exotel chunk (≥ 200 ms at 8 kHz, ≥ 100 ms at 16 kHz)
    assert rendered_s - 0.01 <= result.bot_audio_received_s <= rendered_s + 0.1 * len(tts.spoken) + 0.01
    assert result.malformed_count == 0
    assert_chunk_rules(chunk_sizes)


async def test_barge_in_clears(speech_wav, chunk_sizes):
    providers = instant("Yes. No. " * 12, "tell me everything")
    lines = [CallerLine(wav=speech_wav), CallerLine(wav=speech_wav, barge_in=True)]
    result, turns = await exotel_call(parse_config(CONFIG), {"default": providers, "sales": instant()}, lines)
    assert result.lines[1].clear_received and sum(t.interrupted for t in turns) == 1
    assert result.malformed_count == 0
    assert_chunk_rules(chunk_sizes)


async def test_routes_by_the_number_called(speech_wav):
    turns: list[TurnMetrics]
    _, turns = await exotel_call(
        parse_config(CONFIG),
        {"default": instant(), "sales": instant()},
        [],
        custom_parameters={"from": "+15550001111", "to": "+15550003333"},
    )
    assert turns[0].reply_text == "Sales here."
    _, turns = await exotel_call(parse_config(CONFIG), {"default": instant(), "sales": instant()}, [])
    assert turns[0].reply_text == "Hi there."  # an unknown number: the default pipeline


async def test_basic_auth_rejects_then_accepts(monkeypatch, speech_wav):
    monkeypatch.setenv("EXOTEL_BASIC_AUTH", "key:s3cret")
    app = create_app(parse_config(CONFIG), providers={"default": instant(), "sales": instant()})
    async with running(app) as port:
        for url in (f"ws://127.0.0.1:{port}/exotel", f"ws://key:wrong@127.0.0.1:{port}/exotel"):
            with pytest.raises(InvalidStatus) as refused:
                async with websockets.connect(url):
                    pass
            assert refused.value.response.status_code == 403
    result, turns = await exotel_call(
        parse_config(CONFIG),
        {"default": instant(), "sales": instant()},
        [CallerLine(wav=speech_wav)],
        url="ws://key:s3cret@127.0.0.1:{port}/exotel",
    )
    assert turns[0].reply_heard == "Hi there." and result.lines[0].response_delay_ms is not None


async def test_camel_case_is_accepted_and_garbage_is_dropped(caplog):
    providers = instant("Hi.", "hello")
    app = create_app(parse_config(CONFIG), providers={"default": providers, "sales": instant()})
    garbage = [
        "{not json",
        b"\x00binary",
        '{"event": "dance"}',
        '{"event": "media", "media": {"payload": "***"}}',
        '{"event": "media", "media": {"payload": "AAAA"}}',
        start_message(camel=True),
    ]
    audio = np.concatenate([quiet(0.3), speech_like(1.0), quiet(1.0, seed=3)])
    async with running(app) as port, websockets.connect(f"ws://127.0.0.1:{port}/exotel") as ws:
        await ws.send('{"event": "connected"}')
        await ws.send(start_message(camel=True).replace('"sales"', '"default"'))
        for n, offset in enumerate(range(0, len(audio) - 799, 800)):  # 100 ms chunks
            if n < len(garbage):
                await ws.send(garbage[n])
            payload = base64.b64encode(audio[offset : offset + 800].astype("<i2").tobytes()).decode()
            await ws.send(
                json.dumps(
                    {
                        "event": "media",
                        "streamSid": "S1",
                        "sequenceNumber": str(n + 2),
                        "media": {"chunk": n + 1, "timestamp": str(n * 100), "payload": payload},
                    }
                )
            )
            await asyncio.sleep(0.1)
        events = []
        async with asyncio.timeout(10):
            while "Hi." not in providers.tts.spoken or events.count("mark") < 2:
                message = json.loads(await ws.recv())
                assert message["stream_sid"] == "S1"
                events.append(message["event"])
        assert app.state.calls and "media" in events
    dropped = [r.getMessage() for r in caplog.records if "dropped a frame" in r.getMessage()]
    assert len(dropped) == len(garbage)
    for reason in (
        "not JSON",
        "binary frame",
        "unknown event 'dance'",
        "invalid base64",
        "16-bit",
        "second start",
    ):
        assert any(reason in line for line in dropped), reason
