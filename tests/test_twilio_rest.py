"""Twilio's REST API against a fake on 127.0.0.1: hang-up after end_call (200, 404, 500), outbound dialing
through `POST /api/calls` and `switchboard dial`."""

from __future__ import annotations

import asyncio
import logging
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import numpy as np
import pytest

from switchboard import cli
from switchboard.audio.wav import write_wav
from switchboard.caller import CallerLine, run_call
from switchboard.config import parse_config
from switchboard.pipeline.call import Providers
from switchboard.server import create_app, running
from tests.fakes.instant import InstantLLM, InstantSTT, InstantTTS
from tests.fakes.twilio_rest_fake import FakeTwilio
from tests.speech import quiet, speech_like

pytestmark = pytest.mark.timescale()  # in-process calls on instant/fake providers: tests/timescale.py

SID, TOKEN = "AC" + "0" * 32, "rest-auth-token-abcdef"
API_TOKEN = "api-token-123"
CONFIG = """
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
PIPELINES = ("default", "sales")
ENV = ("TWILIO_AUTH_TOKEN", "TWILIO_ACCOUNT_SID", "TWILIO_API_BASE", "TWILIO_FROM_NUMBER", "PUBLIC_URL",
       "SWITCHBOARD_API_TOKEN")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def fake_twilio(monkeypatch: pytest.MonkeyPatch):
    fake = FakeTwilio()
    async with running(fake.app()) as port:
        monkeypatch.setenv("TWILIO_ACCOUNT_SID", SID)
        monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
        monkeypatch.setenv("TWILIO_API_BASE", f"http://127.0.0.1:{port}")
        yield fake


def providers() -> dict[str, Providers]:
    return {name: Providers(InstantSTT("goodbye"), InstantLLM(), InstantTTS()) for name in PIPELINES}


# --- hang-up -----------------------------------------------------------------------------------------------


async def goodbye_call(tmp_path: Path):
    wav = tmp_path / "line.wav"
    write_wav(wav, np.concatenate([quiet(0.1), speech_like(1.0), quiet(0.1, seed=1)]), 8000)
    turns = []
    # the simulated caller sends no signature: this test is about the hang-up
    app = create_app(parse_config(CONFIG), on_turn=turns.append, providers=providers(), insecure_dev=True)
    async with running(app) as port:
        result = await run_call(f"ws://127.0.0.1:{port}/media-stream", [CallerLine(wav=str(wav))],
                                hangup_timeout_s=3, on_event=lambda e: None)
        await asyncio.wait_for(app.state.host.wait_idle(), 5)
        assert app.state.calls == {}
    return result, turns


async def test_end_call_hangs_up_through_the_rest_api_then_closes(fake_twilio, tmp_path):
    result, turns = await goodbye_call(tmp_path)
    assert turns[-1].ended_call and turns[-1].reply_heard == "Goodbye!"
    assert result.hangup and not result.stop_sent  # the stream was closed by the server too
    [request] = fake_twilio.requests
    assert request.path == f"/2010-04-01/Accounts/{SID}/Calls/{result.call_sid}.json"
    assert request.form == {"Status": "completed"}
    assert request.auth == (SID, TOKEN)


async def test_hang_up_404_means_already_ended(fake_twilio, tmp_path, caplog):
    fake_twilio.status = 404
    with caplog.at_level(logging.INFO):
        result, _ = await goodbye_call(tmp_path)
    assert result.hangup and len(fake_twilio.requests) == 1
    assert "already ended" in caplog.text and "hang-up failed" not in caplog.text


async def test_hang_up_error_falls_back_to_closing_the_stream(fake_twilio, tmp_path, caplog):
    fake_twilio.status, fake_twilio.error_code = 500, 20500
    with caplog.at_level(logging.INFO):
        result, _ = await goodbye_call(tmp_path)
    assert result.hangup and not result.stop_sent
    assert "REST hang-up failed: HTTP 500" in caplog.text
    assert TOKEN not in caplog.text


async def test_without_credentials_hang_up_just_closes_the_stream(tmp_path):
    result, turns = await goodbye_call(tmp_path)
    assert result.hangup and turns[-1].ended_call


# --- POST /api/calls ---------------------------------------------------------------------------------------


@pytest.fixture
async def api(monkeypatch):
    """An httpx client against a running server with the API token set."""
    monkeypatch.setenv("SWITCHBOARD_API_TOKEN", API_TOKEN)
    monkeypatch.setenv("PUBLIC_URL", "https://bot.example.com")
    monkeypatch.setenv("TWILIO_FROM_NUMBER", "+15550001111")
    app = create_app(parse_config(CONFIG), providers=providers())
    async with running(app) as port, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        yield http


BEARER = {"Authorization": f"Bearer {API_TOKEN}"}


async def test_api_places_a_call_whose_twiml_streams_to_us(fake_twilio, api):
    response = await api.post("/api/calls", json={"to": "+15557654321", "pipeline": "sales"}, headers=BEARER)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["to"] == "+15557654321" and body["from"] == "+15550001111" and body["pipeline"] == "sales"
    [request] = fake_twilio.requests
    assert request.path == f"/2010-04-01/Accounts/{SID}/Calls.json" and request.auth == (SID, TOKEN)
    assert request.form["To"] == "+15557654321" and request.form["From"] == "+15550001111"
    twiml = ET.fromstring(request.form["Twiml"])
    stream = twiml.find("Connect/Stream")
    assert stream is not None and stream.get("url") == "wss://bot.example.com/media-stream"
    assert {p.get("name"): p.get("value") for p in stream.iter("Parameter")}["pipeline"] == "sales"
    assert twiml.find("Hangup") is not None
    assert body["call_sid"].startswith("CA") and body["carrier"] == "twilio"  # the default carrier

    explicit_from = await api.post("/api/calls", json={"to": "+15557654321", "from": "+15550009999"},
                                   headers=BEARER)
    assert explicit_from.status_code == 201 and explicit_from.json()["pipeline"] == "default"
    assert fake_twilio.requests[-1].form["From"] == "+15550009999"


async def test_api_requires_the_bearer_token(fake_twilio, api):
    payload = {"to": "+15557654321", "pipeline": "sales"}
    assert (await api.post("/api/calls", json=payload)).status_code == 401
    wrong = await api.post("/api/calls", json=payload, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert fake_twilio.requests == []


async def test_api_is_off_without_a_token(monkeypatch):
    app = create_app(parse_config(CONFIG), providers=providers())
    async with running(app) as port, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        response = await http.post("/api/calls", json={"to": "+15557654321"}, headers=BEARER)
    assert response.status_code == 403 and "SWITCHBOARD_API_TOKEN" in response.json()["error"]


async def test_api_explains_what_is_wrong(fake_twilio, api, monkeypatch):
    async def error(payload, status):
        response = await api.post("/api/calls", json=payload, headers=BEARER)
        assert response.status_code == status, response.text
        return response.json()["error"]

    assert "'to' '5557654321' is not an E.164 number" in await error({"to": "5557654321"}, 400)
    assert "'from' '+1-555' is not an E.164" in await error({"to": "+15557654321", "from": "+1-555"}, 400)
    assert "unknown pipeline 'nope'; defined: default, sales" in await error(
        {"to": "+15557654321", "pipeline": "nope"}, 400)
    assert "expected a JSON object" in await error(["+15557654321"], 400)
    assert "unknown carrier 'acme'; outbound calls go through: twilio" in await error(
        {"to": "+15557654321", "carrier": "acme"}, 400)

    fake_twilio.status, fake_twilio.error_code = 400, 21211
    assert "Twilio refused the call: HTTP 400, Twilio error 21211" in await error({"to": "+15557654321"}, 502)
    fake_twilio.status = None

    monkeypatch.delenv("PUBLIC_URL")
    monkeypatch.delenv("TWILIO_FROM_NUMBER")
    monkeypatch.delenv("TWILIO_ACCOUNT_SID")
    message = await error({"to": "+15557654321"}, 503)
    assert "set TWILIO_ACCOUNT_SID" in message and "TWILIO_AUTH_TOKEN" not in message
    assert "TWILIO_FROM_NUMBER" in message and "PUBLIC_URL" in message
    assert len(fake_twilio.requests) == 1  # only the refused one reached Twilio


# --- switchboard dial --------------------------------------------------------------------------------------


async def test_dial_command(fake_twilio, monkeypatch, tmp_path, capsys):
    config = tmp_path / "pipeline.yaml"
    config.write_text(CONFIG)
    monkeypatch.setenv("PUBLIC_URL", "https://bot.example.com")
    argv = ["dial", "+15557654321", "--pipeline", "sales", "--from", "+15550001111", "--config", str(config)]
    assert await asyncio.to_thread(cli.main, argv) == 0
    assert "placed call CA" in capsys.readouterr().out
    [request] = fake_twilio.requests
    assert request.form["To"] == "+15557654321" and request.form["From"] == "+15550001111"
    assert '<Parameter name="pipeline" value="sales" />' in request.form["Twiml"]

    assert await asyncio.to_thread(cli.main, ["dial", "12345", "--config", str(config)]) == 2
    assert "'to' '12345' is not an E.164 number" in capsys.readouterr().err
    monkeypatch.delenv("TWILIO_AUTH_TOKEN")
    assert await asyncio.to_thread(cli.main, ["dial", "+15557654321", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "set TWILIO_AUTH_TOKEN" in err and "TWILIO_FROM_NUMBER" in err


# --- the dashboard's "place a call" form -------------------------------------------------------------------


async def test_the_dashboard_form_places_a_call_with_the_api_token(fake_twilio, api):
    page = await api.get("/dashboard", headers=BEARER)
    assert page.status_code == 200 and 'action="/dashboard/dial"' in page.text
    assert '<option value="sales">sales</option>' in page.text

    form = {"to": "+15557654321", "pipeline": "sales", "from": "", "token": API_TOKEN}
    placed = await api.post("/dashboard/dial", data=form, headers=BEARER)
    assert placed.status_code == 303
    shown = await api.get(placed.headers["location"], headers=BEARER)
    assert "Placed call CA" in shown.text and "to +15557654321 on pipeline sales" in shown.text
    [request] = fake_twilio.requests
    assert request.form["To"] == "+15557654321" and request.form["From"] == "+15550001111"


async def test_the_dashboard_form_needs_the_token_and_shows_what_is_wrong(fake_twilio, api):
    # a dashboard session alone (here the bearer header opens the page) cannot dial: the token is typed
    wrong = await api.post("/dashboard/dial", data={"to": "+15557654321", "token": "nope"}, headers=BEARER)
    assert wrong.status_code == 401 and "wrong API token" in wrong.text
    bad = await api.post("/dashboard/dial", data={"to": "12345", "token": API_TOKEN}, headers=BEARER)
    assert bad.status_code == 400 and "&#x27;to&#x27; &#x27;12345&#x27; is not an E.164 number" in bad.text
    assert 'value="12345"' in bad.text  # the number stays in the form to fix
    assert fake_twilio.requests == []
