"""`switchboard call --carrier plivo|vonage`: the simulated caller plays the carrier's side (its signed
answer webhook, then the socket it names) through whole calls, and reports what breaks the carrier's
rules."""

import asyncio
import json

import numpy as np
import pytest

from switchboard.caller import CallerLine, run_call
from switchboard.callers import plivo as plivo_caller
from switchboard.callers import vonage as vonage_caller
from switchboard.config import parse_config
from switchboard.core.metrics import TurnMetrics
from switchboard.pipeline.call import Providers
from switchboard.server import create_app, running
from tests.fakes.instant import InstantLLM, InstantSTT, InstantTTS

pytestmark = pytest.mark.timescale()  # in-process calls on instant/fake providers: tests/timescale.py

CONFIG = """
numbers:
  "+15550003333": sales
vonage: {{sample_rate: {rate}}}
pipelines:
  default:
    greeting: "Hi."
    stt: {{provider: pocketsphinx}}
    llm: {{provider: scripted}}
    tts: {{provider: espeak}}
  sales:
    greeting: "Sales here."
    stt: {{provider: pocketsphinx}}
    llm: {{provider: scripted}}
    tts: {{provider: espeak}}
"""
KEYS = {"plivo": ("PLIVO_AUTH_TOKEN", "caller-test-plivo-token"),
        "vonage": ("VONAGE_SIGNATURE_SECRET", "caller-test-vonage-signature-secret-32")}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("PLIVO_AUTH_TOKEN", "PLIVO_AUTH_ID", "VONAGE_SIGNATURE_SECRET", "VONAGE_APPLICATION_ID",
                 "VONAGE_PRIVATE_KEY", "PUBLIC_URL"):
        monkeypatch.delenv(name, raising=False)


async def call_over(carrier: str, lines: list[CallerLine], rate: int = 8000, **options):
    turns: list[TurnMetrics] = []
    providers = Providers(InstantSTT("what time is it"), InstantLLM("It is noon."),
                          InstantTTS(ms_per_char=40))
    app = create_app(parse_config(CONFIG.format(rate=rate)), on_turn=turns.append,
                     providers={"default": providers, "sales": providers})
    async with running(app) as port:
        result = await run_call(f"http://127.0.0.1:{port}", lines, carrier=carrier, hangup_timeout_s=1.0,
                                custom_parameters={"from": "+15550001111", "to": "+15550003333"},
                                on_event=lambda event: None, **options)
        await asyncio.wait_for(app.state.host.wait_idle(), 5)
    return result, turns


@pytest.mark.parametrize(("carrier", "rate"), [("plivo", 8000), ("vonage", 8000), ("vonage", 16000)])
async def test_a_signed_call_routed_by_number_every_mark_confirmed(carrier, rate, monkeypatch, speech_wav):
    name, key = KEYS[carrier]
    monkeypatch.setenv(name, key)  # the server checks signatures; the caller signs with the same key
    result, turns = await call_over(carrier, [CallerLine(wav=speech_wav)], rate)
    assert [t.kind for t in turns] == ["greeting", "reply"]
    assert turns[0].reply_heard == "Sales here."  # the answer webhook routed the call by its number
    assert turns[1].transcript == "what time is it" and turns[1].reply_heard == "It is noon."
    assert result.malformed_count == 0, result.malformed_examples
    assert result.marks_received >= 2 and result.marks_echoed == result.marks_received


async def test_the_caller_is_refused_without_the_key(monkeypatch, speech_wav):
    monkeypatch.setenv("PLIVO_AUTH_TOKEN", "caller-test-plivo-token")
    providers = Providers(InstantSTT("x"), InstantLLM("y"), InstantTTS())
    app = create_app(parse_config(CONFIG.format(rate=8000)),
                     providers={"default": providers, "sales": providers})
    async with running(app) as port:
        monkeypatch.setenv("PLIVO_AUTH_TOKEN", "not-the-servers-token")
        with pytest.raises(OSError, match="answered 403"):
            await run_call(f"http://127.0.0.1:{port}", [CallerLine(wav=speech_wav)], carrier="plivo",
                           on_event=lambda event: None)


def test_plivo_check_reports_what_breaks_its_rules():
    wire = plivo_caller.Wire()
    good = {"event": "playAudio", "streamId": wire.stream_sid,
            "media": {"contentType": "audio/x-mulaw", "sampleRate": 8000, "payload": "//8="}}
    assert wire.check(json.dumps(good))[0] == "media"
    l16 = {**good, "media": {**good["media"], "contentType": "audio/x-l16"}}
    assert "codecs may not switch" in wire.check(json.dumps(l16))
    assert "wrong or missing streamId" in wire.check(json.dumps({**good, "streamId": "other"}))
    assert "unknown event 'media'" in wire.check(json.dumps({**good, "event": "media"}))
    checkpoint = {"event": "checkpoint", "streamId": wire.stream_sid, "name": "m1"}
    assert wire.check(json.dumps(checkpoint)) == ("mark", "m1")
    assert "binary frame" in wire.check(b"\x00\x01")


def test_vonage_check_reports_what_breaks_its_rules():
    wire = vonage_caller.Wire(16000)
    assert wire.check(bytes(640))[0] == "media" and len(wire.check(bytes(640))[1]) == 160
    assert "20 ms frames: 640 bytes" in wire.check(bytes(320))
    assert wire.check('{"action": "clear"}') == ("clear", None)
    assert wire.check('{"action": "notify", "payload": {"name": "m4"}}') == ("mark", "m4")
    assert "not an action Vonage takes" in wire.check('{"event": "media", "payload": "AAAA"}')
    assert np.array_equal(wire.encode(np.zeros(160, np.int16))[1], np.zeros(160, np.int16))
