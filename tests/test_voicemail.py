"""Outbound calls that meet a voicemail: `switchboard dial --amd` / `POST /api/calls` ask Twilio for answering
machine detection (against the fake REST server); Twilio's verdict reaches the call through /incoming-call,
and the pipeline's `voicemail:` leaves a message after the beep or hangs up; the outcome is stored."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

import httpx
import pytest

from switchboard import cli
from switchboard.caller import CallerLine, run_call
from switchboard.config import parse_config
from switchboard.pipeline.call import Providers
from switchboard.server import create_app, running
from switchboard.store import CallStore
from tests.fakes.instant import InstantLLM, InstantSTT, InstantTTS
from tests.fakes.twilio_rest_fake import FakeTwilio

pytestmark = pytest.mark.timescale()  # in-process calls on instant/fake providers: tests/timescale.py

SID, TOKEN, API_TOKEN = "AC" + "2" * 32, "rest-auth-token-amd", "api-token-amd"
BEARER = {"Authorization": f"Bearer {API_TOKEN}"}
CONFIG = """
pipelines:
  default:
    greeting: "Hi, this is Luigi's."
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
  reminders:
    greeting: "Hi, a reminder from Luigi's."
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
    voicemail: {action: leave_message, message: "Your table is booked for seven. Goodbye."}
"""


@pytest.fixture(autouse=True)
def env(monkeypatch):
    for name in ("TWILIO_AUTH_TOKEN", "SWITCHBOARD_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PUBLIC_URL", "https://bot.example.com")
    monkeypatch.setenv("TWILIO_FROM_NUMBER", "+15550001111")


@pytest.fixture
async def fake_twilio(monkeypatch):
    fake = FakeTwilio()
    async with running(fake.app()) as port:
        monkeypatch.setenv("TWILIO_ACCOUNT_SID", SID)
        monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
        monkeypatch.setenv("TWILIO_API_BASE", f"http://127.0.0.1:{port}")
        yield fake


def providers(tts: InstantTTS | None = None) -> dict[str, Providers]:
    return {name: Providers(InstantSTT("hello?"), InstantLLM(), tts or InstantTTS(ms_per_char=10))
            for name in ("default", "reminders")}


@pytest.mark.parametrize(("pipeline", "mode"), [("reminders", "DetectMessageEnd"), ("default", "Enable")])
async def test_the_api_asks_for_detection_in_the_mode_voicemail_needs(fake_twilio, monkeypatch, pipeline,
                                                                    mode):
    monkeypatch.setenv("SWITCHBOARD_API_TOKEN", API_TOKEN)
    app = create_app(parse_config(CONFIG), providers=providers())
    async with running(app) as port, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as api:
        payload = {"to": "+15557654321", "pipeline": pipeline, "machine_detection": True}
        assert (await api.post("/api/calls", json=payload, headers=BEARER)).status_code == 201
        bad = await api.post("/api/calls", json={"to": "+15557654321", "machine_detection": "yes"},
                             headers=BEARER)
        assert bad.status_code == 400 and "machine_detection" in bad.json()["error"]
    [request] = fake_twilio.requests
    assert request.form["MachineDetection"] == mode
    assert request.form["Url"] == f"https://bot.example.com/incoming-call?pipeline={pipeline}"
    assert request.form["Method"] == "POST" and "Twiml" not in request.form


async def test_the_dial_command_asks_for_detection(fake_twilio, tmp_path):
    config = tmp_path / "pipeline.yaml"
    config.write_text(CONFIG)
    argv = ["dial", "+15557654321", "--pipeline", "reminders", "--amd", "--config", str(config)]
    assert await asyncio.to_thread(cli.main, argv) == 0
    [request] = fake_twilio.requests
    assert request.form["MachineDetection"] == "DetectMessageEnd"


async def test_twilios_verdict_goes_on_to_the_stream():
    app = create_app(parse_config(CONFIG), providers=providers(), insecure_dev=True)
    async with running(app) as port, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        form = {"CallSid": "CA9", "From": "+15550001111", "To": "+15557654321",
                "AnsweredBy": "machine_end_beep"}
        response = await http.post("/incoming-call?pipeline=reminders", data=form)
    stream = ET.fromstring(response.text).find("Connect/Stream")
    assert stream is not None
    parameters = {p.get("name"): p.get("value") for p in stream.iter("Parameter")}
    assert parameters["answered_by"] == "machine_end_beep" and parameters["pipeline"] == "reminders"


async def answered_by(who: str, pipeline: str, speech_wav: str, tmp_path):
    tts = InstantTTS(ms_per_char=10)
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    app = create_app(parse_config(CONFIG), providers=providers(tts), insecure_dev=True, store_url=url)
    params = {"from": "+15550001111", "to": "+15557654321", "pipeline": pipeline, "answered_by": who}
    async with running(app) as port:
        result = await run_call(f"ws://127.0.0.1:{port}/media-stream", [CallerLine(wav=speech_wav)],
                                custom_parameters=params, hangup_timeout_s=1, on_event=lambda e: None)
        await asyncio.wait_for(app.state.host.wait_idle(), 5)
    store = CallStore(url)
    await store.open()
    try:
        stored = await store.get_call(result.call_sid)
    finally:
        await store.close()
    return result, tts, stored


async def test_a_machine_gets_the_message_after_the_beep_then_a_hang_up(speech_wav, tmp_path):
    result, tts, stored = await answered_by("machine_end_beep", "reminders", speech_wav, tmp_path)
    assert tts.spoken == ["Your table is booked for seven. Goodbye."]  # no greeting, no reply
    assert result.hangup and not result.stop_sent
    assert stored["summary"]["answered_by"] == "machine_end_beep"
    assert stored["summary"]["voicemail"] == "left_message"
    assert [(t["kind"], t["reply_heard"], t["ended_call"]) for t in stored["turns"]] == [
        ("voicemail", "Your table is booked for seven. Goodbye.", True)]


async def test_a_machine_on_a_hang_up_pipeline_is_hung_up_on_at_once(speech_wav, tmp_path):
    result, tts, stored = await answered_by("machine_start", "default", speech_wav, tmp_path)
    assert tts.spoken == [] and result.hangup and result.bot_audio_received_s == 0
    assert stored["summary"]["voicemail"] == "hung_up"


async def test_a_person_gets_the_normal_call(speech_wav, tmp_path):
    _, tts, stored = await answered_by("human", "reminders", speech_wav, tmp_path)
    assert tts.spoken[0] == "Hi, a reminder from Luigi's."
    assert stored["summary"]["answered_by"] == "human" and "voicemail" not in stored["summary"]
