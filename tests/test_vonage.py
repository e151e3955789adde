"""Vonage: the wire module (binary L16 at 8 or 16 kHz, JSON events), the NCCOs, signed webhooks and the
socket's token, and the Voice API through the `vonage` SDK against a fake over TLS
(tests/fakes/vonage_rest_fake.py). Whole calls are in the carrier conformance suite
(tests/test_carrier_conformance.py) and test_carrier_callers.py."""

import asyncio
import hashlib
import json
import logging
import re
import time

import jwt
import numpy as np
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from switchboard.config import parse_config
from switchboard.pipeline.call import Providers
from switchboard.server import create_app, running
from switchboard.telephony.dialing import DialNotConfigured, DialRefused
from switchboard.telephony.vonage import rest, wire
from switchboard.telephony.vonage.carrier import VonageLink
from switchboard.telephony.vonage.rest import VonageRest
from switchboard.telephony.vonage.security import VonageSignatures
from tests.fakes.carrier_side import dominant_hz
from tests.fakes.instant import InstantLLM, InstantSTT, InstantTTS
from tests.fakes.vonage_rest_fake import vonage_api
from tests.fakes.vonage_side import SIGNATURE_SECRET, VonageSide, signed_jwt

pytestmark = pytest.mark.timescale()  # in-process calls on instant/fake providers: tests/timescale.py

CONFIG = """
numbers:
  "+15550003333": sales
vonage: {sample_rate: 16000}
pipelines:
  default:
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
  sales:
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
"""
VONAGE_ENV = ("VONAGE_SIGNATURE_SECRET", "VONAGE_APPLICATION_ID", "VONAGE_PRIVATE_KEY",
              "VONAGE_PRIVATE_KEY_PATH", "VONAGE_API_HOST", "VONAGE_FROM_NUMBER", "PUBLIC_URL")
OTHER_SECRET = "another-signature-secret-of-32-bytes!"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in VONAGE_ENV:
        monkeypatch.delenv(name, raising=False)


def instant_app():
    providers = Providers(InstantSTT("what time is it"), InstantLLM("It is noon."), InstantTTS())
    return create_app(parse_config(CONFIG), providers={"default": providers, "sales": providers})


# --- the wire -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000])
def test_connected_then_binary_audio_at_8k(rate):
    decoder = wire.Decoder()
    connected = {"event": "websocket:connected", "content-type": f"audio/l16;rate={rate}",
                 "call": "u1", "pipeline": "sales", "from": "+1555", "to": "+1666"}
    start = decoder.parse(json.dumps(connected))
    assert isinstance(start, wire.Start) and start.sample_rate == rate
    assert (start.call_sid, start.from_number, start.to_number) == ("u1", "+1555", "+1666")
    assert start.custom_parameters == {"pipeline": "sales", "from": "+1555", "to": "+1666"}
    tone = (np.sin(np.arange(rate) * 2 * np.pi * 300 / rate) * 8000).astype("<i2")
    step = rate // 50
    out = [decoder.parse(tone[i:i + step].tobytes()).pcm for i in range(0, rate, step)]
    got = sum(len(p) for p in out)
    assert got == 8000  # one second at 8 kHz, all of it out at once: the half-band filter holds nothing back
    assert dominant_hz(np.concatenate(out)[800:], 8000) == pytest.approx(300, abs=3)  # still 300 Hz


def test_events():
    dtmf = '{"event": "websocket:dtmf", "digit": "5", "duration": 260}'
    assert wire.parse_text(dtmf) == wire.Dtmf("5", 260)
    assert wire.parse_text('{"event": "websocket:notify", "payload": {"name": "m2"}}') == wire.Mark("m2")
    assert isinstance(wire.parse_text('{"event": "websocket:cleared"}'), wire.Connected)


@pytest.mark.parametrize(("raw", "reason"), [
    (b"\x00\x00", "audio before websocket:connected"),
    ("{nope", "not JSON"),
    ('{"event": "websocket:connected", "content-type": "audio/l16;rate=11025"}', "content-type"),
    ('{"event": "websocket:connected", "content-type": "audio/pcmu"}', "content-type"),
    ('{"event": "websocket:notify", "payload": {}}', "payload.name"),
    ('{"event": "websocket:dtmf", "digit": "Z"}', "keypad key"),
    ('{"event": "websocket:dance"}', "unknown event"),
])
def test_bad_frames_say_why(raw, reason):
    with pytest.raises(wire.BadFrame, match=re.escape(reason)):
        wire.Decoder().parse(raw)


def test_odd_and_oversized_binary_frames():
    decoder = wire.Decoder()
    decoder.parse('{"event": "websocket:connected", "content-type": "audio/l16;rate=8000"}')
    with pytest.raises(wire.BadFrame, match="whole 16-bit samples"):
        decoder.parse(b"\x01\x02\x03")
    with pytest.raises(wire.BadFrame, match="too large"):
        decoder.parse(bytes(40000))


@pytest.mark.parametrize("rate", [8000, 16000])
def test_framer_sends_only_20_ms_frames(rate):
    framer = wire.Framer(rate)
    rng = np.random.default_rng(3)
    frames, pushed = [], 0
    for _ in range(4):
        for _ in range(int(rng.integers(1, 30))):
            frames += framer.push(rng.integers(-3000, 3000, 160).astype(np.int16))
            pushed += 160
        frames += framer.flush()  # before a notify
    assert frames and {len(f) for f in frames} == {rate // 50 * 2}
    sent_s = sum(len(f) for f in frames) / 2 / rate
    assert pushed / 8000 - 0.001 <= sent_s <= pushed / 8000 + 4 * 0.02 + 0.03
    framer.push(np.ones(100, dtype=np.int16))
    framer.clear()
    assert framer.flush() == [] and framer.holds_ms == 0
    # a 20 ms frame in is a 20 ms frame out at once, at either rate (16 kHz: the half-band filter)
    assert [len(f) for f in framer.push(np.ones(160, dtype=np.int16))] == [rate // 50 * 2]


def test_nccos():
    [connect] = wire.connect_ncco("wss://h/vonage/stream", 16000, {"pipeline": "sales"}, "+15550003333",
                                  "Bearer t")
    endpoint = connect["endpoint"][0]
    assert connect["action"] == "connect" and connect["from"] == "15550003333"
    assert endpoint == {"type": "websocket", "uri": "wss://h/vonage/stream",
                        "content-type": "audio/l16;rate=16000", "headers": {"pipeline": "sales"},
                        "authorization": {"type": "custom", "value": "Bearer t"}}
    assert wire.busy_ncco("All busy.") == [{"action": "talk", "text": "All busy."}]
    assert json.loads(wire.clear_message()) == {"action": "clear"}
    assert json.loads(wire.notify_message("m1")) == {"action": "notify", "payload": {"name": "m1"}}


# --- signatures -----------------------------------------------------------------------------------------


def test_signed_webhook_accepted_and_refused():
    checker = VonageSignatures(SIGNATURE_SECRET)
    body = b'{"uuid": "u1", "from": "15550001111", "to": "15550002222"}'
    token = signed_jwt(SIGNATURE_SECRET, body)
    assert checker.webhook_problem(f"Bearer {token}", body) is None
    assert "payload_hash" in checker.webhook_problem(f"Bearer {token}", body.replace(b"u1", b"u2"))
    assert "signature" in checker.webhook_problem(f"Bearer {signed_jwt(OTHER_SECRET, body)}", body)
    assert "no 'Authorization" in checker.webhook_problem(None, body)
    assert "within 300 s" in checker.webhook_problem(f"Bearer {token}", body, now=time.time() + 3600)


def test_stream_token():
    checker = VonageSignatures(SIGNATURE_SECRET)
    token = checker.stream_token({"call": "u1", "pipeline": "sales"})
    claims, problem = checker.stream_claims(token)
    assert problem is None and (claims["call"], claims["pipeline"]) == ("u1", "sales")
    assert "does not verify" in VonageSignatures(OTHER_SECRET).stream_claims(token)[1]
    old = checker.stream_token({"call": "u1"}, now=time.time() - 3600)
    assert "expired" in checker.stream_claims(old)[1]
    forged = "Bearer " + jwt.encode({"call": "u1", "iat": int(time.time()), "exp": int(time.time()) + 60},
                                    SIGNATURE_SECRET, algorithm="HS256")  # a Vonage JWT, not our token
    assert "iss" in checker.stream_claims(forged)[1]


async def test_answer_routes_by_number_and_refuses_a_bad_signature(monkeypatch, caplog):
    caplog.set_level(logging.WARNING)
    monkeypatch.setenv("VONAGE_SIGNATURE_SECRET", SIGNATURE_SECRET)
    app = instant_app()
    async with running(app) as port:
        base = f"http://127.0.0.1:{port}"
        monkeypatch.setenv("PUBLIC_URL", base)
        side = VonageSide()
        endpoint = await side.answer(base, "+15550003333", "+15550001111")
        assert endpoint["uri"] == f"ws://127.0.0.1:{port}/vonage/stream"
        assert endpoint["content-type"] == "audio/l16;rate=16000"  # vonage.sample_rate in the config
        assert endpoint["headers"] == {"call": side.uuid, "pipeline": "sales", "from": "+15550001111",
                                       "to": "+15550003333"}
        with pytest.raises(Exception, match="refused with 403"):
            await side.answer(base, "+15550003333", "+15550001111", signed=False)
        with pytest.raises(InvalidStatus):
            await websockets.connect(endpoint["uri"])  # no token
        with pytest.raises(InvalidStatus):
            await websockets.connect(endpoint["uri"], additional_headers={"Authorization": "Bearer forged"})
    assert "vonage/answer: rejected" in caplog.text and "vonage/stream: rejected" in caplog.text
    assert SIGNATURE_SECRET not in caplog.text


async def test_the_token_decides_the_pipeline_not_the_headers(monkeypatch):
    """With the route verified, `websocket:connected`'s headers cannot move the call to another pipeline."""
    monkeypatch.setenv("VONAGE_SIGNATURE_SECRET", SIGNATURE_SECRET)
    app = instant_app()
    async with running(app) as port:
        base = f"http://127.0.0.1:{port}"
        monkeypatch.setenv("PUBLIC_URL", base)
        side = VonageSide()
        ws = await side.open(base, "+15550003333", "+15550001111")
        side.headers = {**side.headers, "pipeline": "default", "to": "+19999999999"}
        await ws.send(side.start()[0])
        for _ in range(10):
            await ws.send(side.media(np.zeros(160, np.int16)))
        await asyncio.sleep(0.2)
        [session] = app.state.calls.values()
        assert session.call_info["pipeline"] == "sales" and session.call_info["to"] == "+15550003333"
        await ws.close()
        await asyncio.wait_for(app.state.host.wait_idle(), 5)


def test_signed_webhook_payload_hash_is_the_body():
    body = b"{}"
    claims = jwt.decode(signed_jwt(SIGNATURE_SECRET, body), SIGNATURE_SECRET, algorithms=["HS256"])
    assert claims["payload_hash"] == hashlib.sha256(body).hexdigest()


# --- the Voice API (the vonage SDK against a fake over TLS) ---------------------------------------------


@pytest.fixture
async def fake_vonage(monkeypatch, tmp_path):
    async with vonage_api(tmp_path) as (fake, env):
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        yield fake


async def test_link_hangs_up_and_transfers_through_the_voice_api(fake_vonage):
    class Socket:
        application_state = None

    client = VonageRest.from_env()
    link = VonageLink(Socket(), "u-1", 8000, client, "+15550003333")
    assert link.transfers
    assert await link.transfer("+15551234567")
    await link.hang_up()
    transfer, hang_up = fake_vonage.requests
    assert (transfer.method, transfer.path) == ("PUT", "/v1/calls/u-1")
    assert transfer.claims["application_id"] == "conformance-app"  # signed with the application's key
    assert transfer.body == {"action": "transfer", "destination": {"type": "ncco", "ncco": [
        {"action": "connect", "endpoint": [{"type": "phone", "number": "15551234567"}],
         "from": "15550003333"}]}}
    assert (hang_up.path, hang_up.body) == ("/v1/calls/u-1", {"action": "hangup"})
    fake_vonage.status = 404
    assert await client.hang_up("gone")
    fake_vonage.status = 500
    assert not await client.hang_up("u-2") and not await client.transfer("u-2", "+15551234567", "")


async def test_dial_places_a_call_that_fetches_our_answer_url(fake_vonage, monkeypatch):
    monkeypatch.setenv("PUBLIC_URL", "https://sb.example.com")
    placed = await asyncio.to_thread(rest.dial, "+15551234567", "sales", ["default", "sales"], "+15550001111")
    [create] = fake_vonage.requests
    assert create.path == "/v1/calls"
    assert create.body["to"] == [{"type": "phone", "number": "15551234567"}]
    assert create.body["from"] == {"type": "phone", "number": "15550001111"}
    assert create.body["answer_url"] == ["https://sb.example.com/vonage/answer?pipeline=sales"]
    assert placed.pipeline == "sales" and len(placed.call_sid) == 32
    fake_vonage.status = 500
    with pytest.raises(DialRefused, match="Vonage refused"):
        await asyncio.to_thread(rest.dial, "+15551234567", "sales", ["sales"], "+15550001111")


def test_dial_says_what_is_missing():
    with pytest.raises(DialNotConfigured, match=r"VONAGE_APPLICATION_ID and VONAGE_PRIVATE_KEY.*PUBLIC_URL"):
        rest.dial("+15551234567", "default", ["default"], "+15550001111")
