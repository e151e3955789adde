"""transfer_call: on Twilio the live call is redirected to `<Dial>` through the REST API (against the
fake REST server); where it cannot be (no credentials, Exotel) it is not offered and `switchboard check` says
why."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

import pytest

from switchboard.caller import CallerLine, run_call
from switchboard.check import describe
from switchboard.config import ConfigError, parse_config
from switchboard.core.metrics import call_summary
from switchboard.pipeline.call import Providers
from switchboard.providers.scripted import ScriptedLLM
from switchboard.server import create_app, running
from tests.fakes.instant import InstantSTT, InstantTTS
from tests.fakes.twilio_rest_fake import FakeTwilio

pytestmark = pytest.mark.timescale()  # in-process calls on instant/fake providers: tests/timescale.py

SID, TOKEN = "AC" + "1" * 32, "rest-auth-token-transfer"
CONFIG = """
pipelines:
  default:
    greeting: "Hi."
    stt: {provider: pocketsphinx}
    llm:
      provider: scripted
      rules:
        - match: "person"
          tool: transfer_call
          arguments: {target: "sip:desk@example.com"}
          reply: "unused"
          failed: "I can't transfer you, sorry."
    tts: {provider: espeak}
    transfer:
      targets: ["+15551234567", "sip:desk@example.com"]
      say: "Putting you through to the desk."
      failed: "The desk isn't answering. Anything else?"
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("TWILIO_AUTH_TOKEN", "TWILIO_ACCOUNT_SID", "TWILIO_API_BASE", "SWITCHBOARD_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def fake_twilio(monkeypatch):
    fake = FakeTwilio()
    async with running(fake.app()) as port:
        monkeypatch.setenv("TWILIO_ACCOUNT_SID", SID)
        monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
        monkeypatch.setenv("TWILIO_API_BASE", f"http://127.0.0.1:{port}")
        yield fake


async def ask_for_a_person(speech_wav: str, carrier: str = "twilio"):
    config = parse_config(CONFIG)
    tts = InstantTTS(ms_per_char=10)
    llm = ScriptedLLM(config.pipelines["default"].llm)
    providers = {"default": Providers(InstantSTT("Can I talk to a person?"), llm, tts)}
    turns = []
    app = create_app(config, on_turn=turns.append, providers=providers, insecure_dev=True)
    async with running(app) as port:
        path = "/media-stream" if carrier == "twilio" else "/exotel"
        result = await run_call(f"ws://127.0.0.1:{port}{path}", [CallerLine(wav=speech_wav)],
                                hangup_timeout_s=1, on_event=lambda e: None, carrier=carrier)
        await asyncio.wait_for(app.state.host.wait_idle(), 5)
    return result, turns, tts


async def test_transfer_redirects_the_live_call_to_dial_and_records_where(fake_twilio, speech_wav):
    result, turns, tts = await ask_for_a_person(speech_wav)
    assert "Putting you through to the desk." in tts.spoken
    [request] = fake_twilio.requests
    assert request.path == f"/2010-04-01/Accounts/{SID}/Calls/{result.call_sid}.json"
    assert request.auth == (SID, TOKEN)
    twiml = ET.fromstring(request.form["Twiml"])
    assert [(e.tag, (e.text or "").strip()) for e in twiml.iter()] == [
        ("Response", ""), ("Dial", ""), ("Sip", "sip:desk@example.com")]
    assert result.hangup and not result.stop_sent  # our media stream closed: the call left us
    last = turns[-1]
    assert last.transferred_to == "sip:desk@example.com" and last.ended_call
    assert call_summary(turns)["transferred_to"] == "sip:desk@example.com"


async def test_a_refused_transfer_is_said_and_the_call_goes_on(fake_twilio, speech_wav):
    fake_twilio.status, fake_twilio.error_code = 400, 21220
    result, turns, tts = await ask_for_a_person(speech_wav)
    assert tts.spoken[-2:] == ["Putting you through to the desk.", "The desk isn't answering. Anything else?"]
    last = turns[-1]
    assert last.transferred_to is None and not last.ended_call
    assert last.failures == ["transfer to sip:desk@example.com failed"]
    assert result.stop_sent and not result.hangup  # the caller hung up, not us


async def test_without_rest_credentials_transfer_is_not_offered(speech_wav):
    _, turns, tts = await ask_for_a_person(speech_wav)
    assert tts.spoken[-1] == "I can't transfer you, sorry."  # the scripted rule's tool was not offered
    assert turns[-1].transferred_to is None


async def test_on_exotel_transfer_is_not_offered_even_with_twilio_credentials(fake_twilio, speech_wav):
    _, turns, tts = await ask_for_a_person(speech_wav, carrier="exotel")
    assert tts.spoken[-1] == "I can't transfer you, sorry."
    assert fake_twilio.requests == [] and turns[-1].transferred_to is None


def test_dial_twiml_numbers_and_sip():
    from switchboard.telephony.twilio.wire import dial_twiml

    assert ET.fromstring(dial_twiml("+15551234567")).find("Dial/Number").text == "+15551234567"
    assert ET.fromstring(dial_twiml("sip:a@b.example")).find("Dial/Sip").text == "sip:a@b.example"


def test_check_says_where_transfer_is_offered_and_why_not(monkeypatch):
    lines, _ = describe(parse_config(CONFIG))
    text = "\n".join(lines)
    assert "transfer_call    +15551234567, sip:desk@example.com: NOT offered on Twilio calls: set " \
           "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN" in text
    assert "not offered on Exotel calls: Exotel's Voicebot stream has no way to hand a live call" in text
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", SID)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    assert "sip:desk@example.com: offered on Twilio calls" in "\n".join(describe(parse_config(CONFIG))[0])


def test_targets_must_be_numbers_or_sip_uris():
    with pytest.raises(ConfigError) as caught:
        parse_config(CONFIG.replace('"+15551234567"', '"555-1234"'))
    assert caught.value.problems == [
        "pipelines.default.transfer.targets: '555-1234' is neither an E.164 number ('+' then digits, e.g. "
        "'+15551234567') nor a SIP URI (e.g. 'sip:desk@example.com')"]


def test_check_says_where_plivo_and_vonage_transfer(monkeypatch):
    for name in ("PLIVO_AUTH_ID", "PLIVO_AUTH_TOKEN", "VONAGE_APPLICATION_ID", "VONAGE_PRIVATE_KEY",
                 "VONAGE_PRIVATE_KEY_PATH"):
        monkeypatch.delenv(name, raising=False)
    text = "\n".join(describe(parse_config(CONFIG))[0])
    assert "NOT offered on Plivo calls: set PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN" in text
    assert "NOT offered on Vonage calls: set VONAGE_APPLICATION_ID and VONAGE_PRIVATE_KEY" in text
    monkeypatch.setenv("PLIVO_AUTH_ID", "MAZDQ1ZJIYMDZKMTGWNZ")
    monkeypatch.setenv("PLIVO_AUTH_TOKEN", "token")
    monkeypatch.setenv("VONAGE_APPLICATION_ID", "app")
    monkeypatch.setenv("VONAGE_PRIVATE_KEY_PATH", "/etc/vonage.key")
    text = "\n".join(describe(parse_config(CONFIG))[0])
    assert "offered on Plivo calls" in text and "NOT offered on Plivo" not in text
    assert "offered on Vonage calls" in text and "NOT offered on Vonage" not in text


def test_check_says_where_telnyx_transfers(monkeypatch):
    monkeypatch.delenv("TELNYX_API_KEY", raising=False)
    text = "\n".join(describe(parse_config(CONFIG))[0])
    assert "NOT offered on Telnyx calls: set TELNYX_API_KEY (the call is transferred through Telnyx" in text
    monkeypatch.setenv("TELNYX_API_KEY", "KEY0123")
    text = "\n".join(describe(parse_config(CONFIG))[0])
    assert "offered on Telnyx calls" in text and "NOT offered on Telnyx" not in text
