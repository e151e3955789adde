"""Plivo: the wire module, the answer XML, V3 signatures and the socket's token, and the REST API through
the `plivo` SDK against a fake (tests/fakes/plivo_rest_fake.py). Whole calls are in the carrier
conformance suite (tests/test_carrier_conformance.py) and test_carrier_callers.py."""

import asyncio
import base64
import json
import logging
import re
import xml.etree.ElementTree as ET
from urllib.parse import parse_qs, urlsplit

import httpx
import numpy as np
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from switchboard.config import parse_config
from switchboard.pipeline.call import Providers
from switchboard.server import create_app, running
from switchboard.telephony.dialing import DialError, DialNotConfigured, DialRefused
from switchboard.telephony.plivo import PlivoLink, rest, wire
from switchboard.telephony.plivo.rest import PlivoRest
from switchboard.telephony.plivo.security import PlivoSignatures
from tests.fakes.g711_reference import ulaw_decode, ulaw_encode
from tests.fakes.instant import InstantLLM, InstantSTT, InstantTTS
from tests.fakes.plivo_rest_fake import FakePlivo
from tests.fakes.plivo_side import AUTH_ID, AUTH_TOKEN, PlivoSide, v3_signature

pytestmark = pytest.mark.timescale()  # in-process calls on instant/fake providers: tests/timescale.py

CONFIG = """
numbers:
  "+15550003333": sales
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
def instant_app():
    providers = Providers(InstantSTT("what time is it"), InstantLLM("It is noon."), InstantTTS())
    return create_app(parse_config(CONFIG), providers={"default": providers, "sales": providers})


PLIVO_ENV = ("PLIVO_AUTH_ID", "PLIVO_AUTH_TOKEN", "PLIVO_API_BASE", "PLIVO_FROM_NUMBER", "PUBLIC_URL")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in PLIVO_ENV:
        monkeypatch.delenv(name, raising=False)


# --- the wire -------------------------------------------------------------------------------------------


def test_start_media_dtmf_checkpoint_echo():
    side = PlivoSide()
    start = wire.parse(side.start()[0])
    assert isinstance(start, wire.Start)
    ids = (start.stream_sid, start.call_sid, start.account_sid)
    assert ids == (side.stream_id, side.call_uuid, AUTH_ID)
    tone = (np.sin(np.arange(160) * 2 * np.pi * 300 / 8000) * 8000).astype(np.int16)
    media = wire.parse(side.media(tone))
    assert isinstance(media, wire.Media) and media.timestamp_ms is not None
    assert np.array_equal(media.pcm, ulaw_decode(ulaw_encode(tone)))  # the fake's codec agrees with ours
    assert wire.parse(side.dtmf("7")) == wire.Dtmf("7")
    assert wire.parse(side.mark_played("m3")) == wire.Mark("m3")
    assert isinstance(wire.parse('{"event": "clearedAudio", "streamId": "s"}'), wire.Connected)


def test_extra_headers_become_parameters():
    start = json.loads(PlivoSide().start()[0])
    start["extra_headers"] = "userId=12345;sessionId=abc"
    assert wire.parse(json.dumps(start)).custom_parameters == {"userId": "12345", "sessionId": "abc"}


@pytest.mark.parametrize(("raw", "reason"), [
    (b"\x00", "binary frame"),
    ("{nope", "not JSON"),
    ('{"event": "dance"}', "unknown event 'dance'"),
    ('{"event": "media", "media": {"payload": "***"}}', "invalid base64"),
    ('{"event": "start", "start": {"streamId": "s", "mediaFormat": {"encoding": "audio/x-l16"}}}',
     "encoding"),
    ('{"event": "start", "start": {"streamId": "s", "mediaFormat": {"sampleRate": 16000}}}', "sampleRate"),
    ('{"event": "playedStream"}', "playedStream.name"),
    ('{"event": "dtmf", "dtmf": {"digit": "Z"}}', "keypad key"),
])
def test_bad_frames_say_why(raw, reason):
    with pytest.raises(wire.BadFrame, match=re.escape(reason)):
        wire.parse(raw)


def test_outbound_messages_follow_the_stream_event_protocol():
    pcm = np.arange(-800, 800, 10, dtype=np.int16)
    play = json.loads(wire.play_audio_message("S1", pcm))
    assert play["event"] == "playAudio" and play["streamId"] == "S1"
    assert (play["media"]["contentType"], play["media"]["sampleRate"]) == ("audio/x-mulaw", 8000)
    assert len(base64.b64decode(play["media"]["payload"])) == len(pcm)  # one μ-law byte a sample
    assert json.loads(wire.checkpoint_message("S1", "m1")) == {"event": "checkpoint", "streamId": "S1",
                                                               "name": "m1"}
    assert json.loads(wire.clear_message("S1")) == {"event": "clearAudio", "streamId": "S1"}


def test_stream_and_dial_xml():
    stream = ET.fromstring(wire.stream_xml("wss://h/plivo/stream?call=c&token=t")).find("Stream")
    assert stream.get("bidirectional") == "true" and stream.get("keepCallAlive") == "true"
    assert stream.get("contentType") == "audio/x-mulaw;rate=8000"
    assert stream.text == "wss://h/plivo/stream?call=c&token=t"
    root = ET.fromstring(wire.stream_xml("wss://h/x"))
    assert [child.tag for child in root] == ["Stream", "Hangup"]
    assert ET.fromstring(wire.dial_xml("+15551234567")).find("Dial/Number").text == "15551234567"
    sip = "sip:desk@example.com"
    assert ET.fromstring(wire.dial_xml(sip)).find("Dial/User").text == sip


# --- signatures -----------------------------------------------------------------------------------------


def test_v3_signature_accepted_and_refused():
    checker = PlivoSignatures(AUTH_TOKEN)
    url, nonce = "https://sb.example.com/plivo/answer", "42"
    form = {"CallUUID": "c1", "From": "1555", "To": "1666"}
    good = {"X-Plivo-Signature-V3": v3_signature(AUTH_TOKEN, url, form, nonce),
            "X-Plivo-Signature-V3-Nonce": nonce}
    assert checker.webhook_problem("POST", url, form, good) is None
    assert "does not match" in checker.webhook_problem("POST", url, {**form, "To": "1777"}, good)
    assert "does not match" in checker.webhook_problem("POST", url.replace("sb.", "evil."), form, good)
    assert "no X-Plivo-Signature-V3" in checker.webhook_problem("POST", url, form, {})


def test_stream_token_binds_the_url_parameters():
    checker = PlivoSignatures(AUTH_TOKEN)
    params = {"call": "c1", "pipeline": "sales", "from": "+1555", "to": "+1666"}
    query = parse_qs(checker.stream_query(params))
    flat = {key: values[0] for key, values in query.items()}
    assert checker.stream_problem(flat) is None
    assert "does not match" in checker.stream_problem({**flat, "pipeline": "default"})
    assert "no stream token" in checker.stream_problem({k: v for k, v in flat.items() if k != "token"})
    assert "does not match" in PlivoSignatures("other").stream_problem(flat)


async def test_answer_routes_by_number_and_refuses_a_bad_signature(monkeypatch, caplog):
    caplog.set_level(logging.WARNING)
    monkeypatch.setenv("PLIVO_AUTH_TOKEN", AUTH_TOKEN)
    app = instant_app()
    async with running(app) as port:
        base = f"http://127.0.0.1:{port}"
        monkeypatch.setenv("PUBLIC_URL", base)
        side = PlivoSide()
        url = await side.answer(base, "+15550003333", "+15550001111")
        parts = urlsplit(url)
        query = {key: values[0] for key, values in parse_qs(parts.query).items()}
        assert (parts.scheme, parts.path) == ("ws", "/plivo/stream")
        assert (query["pipeline"], query["from"], query["to"], query["call"]) == (
            "sales", "+15550001111", "+15550003333", side.call_uuid)
        with pytest.raises(Exception, match="refused with 403"):
            await side.answer(base, "+15550003333", "+15550001111", signed=False)
        with pytest.raises(InvalidStatus):  # the socket without its token
            await websockets.connect(f"ws://127.0.0.1:{port}/plivo/stream?call={side.call_uuid}")
        tampered = url.replace("pipeline=sales", "pipeline=default")
        with pytest.raises(InvalidStatus):
            await websockets.connect(tampered)
        async with httpx.AsyncClient() as client:  # the transfer XML is signed too
            unsigned = await client.post(f"{base}/plivo/transfer?target=%2B15551234567")
        assert unsigned.status_code == 403
    assert "plivo/answer: rejected" in caplog.text and "plivo/stream: rejected" in caplog.text
    assert AUTH_TOKEN not in caplog.text


async def test_start_for_another_call_is_dropped(monkeypatch, caplog):
    monkeypatch.setenv("PLIVO_AUTH_TOKEN", AUTH_TOKEN)
    app = instant_app()
    async with running(app) as port:
        monkeypatch.setenv("PUBLIC_URL", f"http://127.0.0.1:{port}")
        side = PlivoSide()
        ws = await side.open(f"http://127.0.0.1:{port}", "+15550002222", "+15550001111")
        side.call_uuid = "someone-elses-call"
        await ws.send(side.start()[0])
        await ws.send('{"event": "media", "media": {"payload": "AAAA"}}')
        await ws.close()
    assert "is not the call this stream was opened for" in caplog.text
    assert app.state.calls == {}


# --- the REST API (the plivo SDK against a fake) --------------------------------------------------------


@pytest.fixture
async def fake_plivo(monkeypatch):
    fake = FakePlivo()
    async with running(fake.app()) as port:
        monkeypatch.setenv("PLIVO_API_BASE", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("PLIVO_AUTH_ID", AUTH_ID)
        monkeypatch.setenv("PLIVO_AUTH_TOKEN", AUTH_TOKEN)
        yield fake


async def test_link_hangs_up_and_transfers_through_the_rest_api(fake_plivo):
    class Socket:
        application_state = None

    client = PlivoRest.from_env()
    link = PlivoLink(Socket(), "S1", "call-1", client,
                     lambda target: f"https://sb.example.com/plivo/transfer?target={target}")
    assert link.transfers
    assert await link.transfer("+15551234567")
    await link.hang_up()
    transfer, hang_up = fake_plivo.requests
    assert (transfer.method, transfer.path) == ("POST", f"/v1/Account/{AUTH_ID}/Call/call-1/")
    assert transfer.body["legs"] == "aleg" and transfer.body["aleg_url"].endswith("target=+15551234567")
    assert (hang_up.method, hang_up.path, hang_up.auth) == ("DELETE", f"/v1/Account/{AUTH_ID}/Call/call-1/",
                                                           (AUTH_ID, AUTH_TOKEN))
    fake_plivo.status = 404
    assert await client.hang_up("gone")  # already ended: fine
    fake_plivo.status = 500
    assert not await client.hang_up("call-2") and not await client.transfer("call-2", "https://x/y")


async def test_dial_places_a_call_that_fetches_our_answer_url(fake_plivo, monkeypatch):
    monkeypatch.setenv("PUBLIC_URL", "https://sb.example.com")
    placed = await asyncio.to_thread(rest.dial, "+15551234567", "sales", ["default", "sales"], "+15550001111")
    [create] = fake_plivo.requests
    assert create.path == f"/v1/Account/{AUTH_ID}/Call/"
    assert (create.body["to"], create.body["from"]) == ("15551234567", "15550001111")
    assert create.body["answer_url"] == "https://sb.example.com/plivo/answer?pipeline=sales"
    assert placed.call_sid.endswith("-request") and placed.pipeline == "sales"
    fake_plivo.status = 401
    with pytest.raises(DialRefused, match="Plivo refused"):
        await asyncio.to_thread(rest.dial, "+15551234567", "sales", ["sales"], "+15550001111")


def test_dial_says_what_is_missing(monkeypatch):
    with pytest.raises(DialError, match=r"not an E\.164 number"):
        rest.dial("555", "default", ["default"])
    with pytest.raises(DialNotConfigured, match=r"PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN.*FROM_NUMBER.*PUBLIC"):
        rest.dial("+15551234567", "default", ["default"])


async def test_post_api_calls_with_carrier_plivo(fake_plivo, monkeypatch):
    monkeypatch.setenv("SWITCHBOARD_API_TOKEN", "api-token")
    monkeypatch.setenv("PUBLIC_URL", "https://sb.example.com")
    monkeypatch.setenv("PLIVO_FROM_NUMBER", "+15550001111")
    app = instant_app()
    async with running(app) as port, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        placed = await http.post("/api/calls", headers={"Authorization": "Bearer api-token"},
                                 json={"to": "+15551234567", "pipeline": "sales", "carrier": "plivo"})
        amd = await http.post("/api/calls", headers={"Authorization": "Bearer api-token"},
                              json={"to": "+15551234567", "carrier": "plivo", "machine_detection": True})
    assert placed.status_code == 201, placed.text
    assert placed.json()["carrier"] == "plivo" and placed.json()["from"] == "+15550001111"
    create, with_amd = fake_plivo.requests
    assert create.body["answer_url"] == "https://sb.example.com/plivo/answer?pipeline=sales"
    assert "machine_detection" not in create.body
    assert amd.status_code == 201, amd.text  # tests/test_carrier_amd.py: the call it places
    assert with_amd.body["machine_detection"] == "true"
    assert with_amd.body["machine_detection_url"] == "https://sb.example.com/plivo/amd"
