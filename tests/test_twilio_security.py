"""Twilio signatures on the webhook and the media WebSocket upgrade, and routing by the called number.

Signatures are computed here from Twilio's documented algorithm, not by the code under test:
base64(HMAC-SHA1(auth token, URL + every POST parameter sorted by name, as name + value)).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import websockets
from starlette.testclient import TestClient
from websockets.exceptions import ConnectionClosed

from switchboard.audio.wav import write_wav
from switchboard.caller import CallerLine, run_call
from switchboard.config import parse_config
from switchboard.pipeline.call import Providers
from switchboard.server import create_app, running
from tests.fakes.instant import InstantLLM, InstantSTT, InstantTTS
from tests.speech import quiet, speech_like

pytestmark = pytest.mark.timescale()  # in-process calls on instant/fake providers: tests/timescale.py

TOKEN = "test-auth-token-0123456789abcdef"
ENV = ("TWILIO_AUTH_TOKEN", "TWILIO_ACCOUNT_SID", "TWILIO_API_BASE", "TWILIO_FROM_NUMBER", "PUBLIC_URL",
       "SWITCHBOARD_API_TOKEN")

CONFIG = """
numbers:
  "+15550002222": sales
pipelines:
  default:
    greeting: "Hi there."
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
  sales:
    greeting: "Sales here."
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
"""
CALL = {"CallSid": "CA1", "AccountSid": "AC1", "From": "+15550001111", "To": "+15550002222"}


def twilio_signature(token: str, url: str, params: dict[str, str]) -> str:
    signed = url + "".join(name + params[name] for name in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), signed.encode(), hashlib.sha1).digest()).decode()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def providers() -> dict[str, Providers]:
    return {name: Providers(InstantSTT(), InstantLLM(), InstantTTS()) for name in ("default", "sales")}


def client(config: str = CONFIG, **kwargs) -> TestClient:
    return TestClient(create_app(parse_config(config), providers=providers(), **kwargs))


# --- the webhook -----------------------------------------------------------------------------------------


def test_webhook_accepts_twilios_signature_and_rejects_anything_else(monkeypatch, caplog):
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    web = client()
    proxy = {"X-Forwarded-Host": "bot.example.com", "X-Forwarded-Proto": "https"}
    url = "https://bot.example.com/incoming-call"

    good = web.post("/incoming-call", data=CALL,
                    headers={**proxy, "X-Twilio-Signature": twilio_signature(TOKEN, url, CALL)})
    assert good.status_code == 200 and "<Connect>" in good.text

    with caplog.at_level(logging.WARNING, logger="switchboard.server"):
        missing = web.post("/incoming-call", data=CALL, headers=proxy)
        tampered = web.post("/incoming-call", data={**CALL, "To": "+15559999999"},
                            headers={**proxy, "X-Twilio-Signature": twilio_signature(TOKEN, url, CALL)})
        wrong_token = web.post("/incoming-call", data=CALL,
                               headers={**proxy, "X-Twilio-Signature": twilio_signature("other", url, CALL)})
        wrong_url = web.post("/incoming-call", data=CALL,  # signed for http://, received over https
                             headers={**proxy, "X-Twilio-Signature": twilio_signature(
                                 TOKEN, "http://bot.example.com/incoming-call", CALL)})
    for response in (missing, tampered, wrong_token, wrong_url):
        assert response.status_code == 403 and "<Connect>" not in response.text
    rejected = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert len(rejected) == 4
    assert "no X-Twilio-Signature header" in rejected[0]
    assert "does not match url https://bot.example.com/incoming-call" in rejected[1]
    assert TOKEN not in caplog.text


def test_webhook_url_comes_from_public_url_and_keeps_the_query(monkeypatch):
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("PUBLIC_URL", "https://abc.ngrok.app")
    web = client()
    url = "https://abc.ngrok.app/incoming-call?tenant=7"
    response = web.post("/incoming-call?tenant=7", data=CALL,
                        headers={"X-Twilio-Signature": twilio_signature(TOKEN, url, CALL)})
    assert response.status_code == 200
    assert 'url="wss://abc.ngrok.app/media-stream"' in response.text


def test_no_token_or_switched_off_means_no_check_and_a_loud_warning(monkeypatch, caplog):
    with caplog.at_level(logging.WARNING, logger="switchboard.server"):
        assert client().post("/incoming-call", data=CALL).status_code == 200  # no TWILIO_AUTH_TOKEN
    assert "INSECURE" in caplog.text and "TWILIO_AUTH_TOKEN is not set" in caplog.text

    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="switchboard.server"):
        assert client(insecure_dev=True).post("/incoming-call", data=CALL).status_code == 200
    assert "INSECURE" in caplog.text and "--insecure-dev" in caplog.text

    caplog.clear()
    off = CONFIG + "twilio: {validate_signatures: false}\n"
    with caplog.at_level(logging.WARNING, logger="switchboard.server"):
        assert client(off).post("/incoming-call", data=CALL).status_code == 200
    assert "twilio.validate_signatures is false" in caplog.text
    assert TOKEN not in caplog.text

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="switchboard.server"):
        assert client().post("/incoming-call", data=CALL).status_code == 403  # on by default
    assert "INSECURE" not in caplog.text


# --- the WebSocket upgrade ---------------------------------------------------------------------------------


START = {
    "event": "start", "sequenceNumber": "1", "streamSid": "MZ1",
    "start": {"streamSid": "MZ1", "accountSid": "AC1", "callSid": "CA1", "tracks": ["inbound"],
              "customParameters": {"pipeline": "sales"},
              "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}},
}


async def open_stream(port: int, headers: dict[str, str]) -> str:
    """Connect as Twilio would, send connected + start; return the first event the server sends."""
    async with websockets.connect(f"ws://127.0.0.1:{port}/media-stream", additional_headers=headers) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(json.dumps(START))
        async with asyncio.timeout(5):
            return json.loads(await ws.recv())["event"]


async def test_websocket_upgrade_is_checked_on_the_wss_url(monkeypatch, caplog):
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    app = create_app(parse_config(CONFIG), providers=providers())
    async with running(app) as port:
        # behind a tunnel: the proxy forwards the public host; Twilio signed wss://<public host>/media-stream
        forwarded = {"X-Forwarded-Host": "bot.example.com", "X-Forwarded-Proto": "https"}
        signed = twilio_signature(TOKEN, "wss://bot.example.com/media-stream", {})
        assert await open_stream(port, {**forwarded, "X-Twilio-Signature": signed}) == "media"

        # no proxy: the Host header, still wss:// (Twilio only opens secure WebSockets)
        direct = twilio_signature(TOKEN, f"wss://127.0.0.1:{port}/media-stream", {})
        assert await open_stream(port, {"X-Twilio-Signature": direct}) == "media"

        with caplog.at_level(logging.WARNING, logger="switchboard.server"):
            wrong_token = twilio_signature("other", "wss://bot.example.com/media-stream", {})
            wrong_url = twilio_signature(TOKEN, "https://bot.example.com/incoming-call", {})
            for headers in (
                forwarded,  # no signature
                {**forwarded, "X-Twilio-Signature": wrong_token},
                {**forwarded, "X-Twilio-Signature": wrong_url},
            ):
                with pytest.raises(ConnectionClosed) as closed:
                    await open_stream(port, headers)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        assert app.state.calls == {}
    rejected = [r.getMessage() for r in caplog.records if "media-stream: rejected" in r.getMessage()]
    assert len(rejected) == 3 and "wss://bot.example.com/media-stream" in rejected[1]
    assert TOKEN not in caplog.text


async def test_websocket_url_from_public_url(monkeypatch):
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("PUBLIC_URL", "https://abc.ngrok.app")
    app = create_app(parse_config(CONFIG), providers=providers())
    async with running(app) as port:
        signed = twilio_signature(TOKEN, "wss://abc.ngrok.app/media-stream", {})
        assert await open_stream(port, {"X-Twilio-Signature": signed}) == "media"


# --- routing ---------------------------------------------------------------------------------------------


def test_webhook_routes_the_called_number_and_logs_unknown_ones(caplog):
    web = client()
    routed = web.post("/incoming-call", data=CALL)
    assert '<Parameter name="pipeline" value="sales" />' in routed.text
    with caplog.at_level(logging.INFO, logger="switchboard.server"):
        unknown = web.post("/incoming-call", data={**CALL, "To": "+15559999999"})
    assert '<Parameter name="pipeline" value="default" />' in unknown.text
    assert any("no route for the called number '+15559999999'" in r.getMessage() and r.levelname == "WARNING"
               for r in caplog.records)


async def test_the_routed_pipeline_answers_the_stream(tmp_path):
    """The webhook's <Parameter>s come back in start.customParameters and pick the pipeline."""
    wav = tmp_path / "line.wav"
    write_wav(wav, np.concatenate([quiet(0.1), speech_like(1.0), quiet(0.1, seed=1)]), 8000)
    by_pipeline = {
        "default": Providers(InstantSTT("hello"), InstantLLM("Default."), InstantTTS()),
        "sales": Providers(InstantSTT("hello"), InstantLLM("Sales."), InstantTTS()),
    }
    app = create_app(parse_config(CONFIG), providers=by_pipeline)
    twiml = TestClient(app).post("/incoming-call", data=CALL).text
    parameters = {p.get("name"): p.get("value") for p in ET.fromstring(twiml).iter("Parameter")}
    assert parameters == {"pipeline": "sales", "from": "+15550001111", "to": "+15550002222"}
    async with running(app) as port:
        await run_call(f"ws://127.0.0.1:{port}/media-stream", [CallerLine(wav=str(wav))],
                       custom_parameters=parameters, hangup_timeout_s=1, on_event=lambda e: None)
    assert by_pipeline["sales"].llm.requests and not by_pipeline["default"].llm.requests
    assert by_pipeline["sales"].tts.spoken[0] == "Sales here."


def test_numbers_must_be_e164_and_name_a_pipeline():
    from switchboard.config import ConfigError

    bad = CONFIG.replace('"+15550002222": sales', '"+15550002222": nope\n  "555-1234": default')
    with pytest.raises(ConfigError) as caught:
        parse_config(bad)
    assert caught.value.problems == [
        "numbers['+15550002222']: 'nope' is not a pipeline; defined: default, sales",
        "numbers.555-1234: not an E.164 number; write it as '+' then the country code and number, "
        "digits only, e.g. '+15551234567'",
    ]
    unquoted = CONFIG.replace('"+15550002222"', "+15550002222")  # YAML reads it as a number
    with pytest.raises(ConfigError) as caught:
        parse_config(unquoted)
    assert "put it in quotes" in str(caught.value)
