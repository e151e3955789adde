"""Answering machine detection on Telnyx, Plivo and Vonage: an outbound call placed with `--amd` asks the
carrier's REST API for it (against each carrier's fake), the carrier posts its verdict to our webhook
(signed its way) and the call does what a Twilio call does with `AnsweredBy`: a machine gets the
pipeline's `voicemail:` message (or a hang-up), a person the normal call.

Telnyx (TeXML `AsyncAmd`) and Plivo (`machine_detection_url`) open the stream while they listen: the
call's start is held until the verdict, and nothing is said to the line meanwhile. Vonage's advanced
machine detection (`detect` / `detect_beep`) is synchronous: the verdict comes before the NCCO opens the
socket. Plivo posts only when it hears a machine: a person is whoever is still there when the wait ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from switchboard.config import parse_config
from switchboard.pipeline.call import Providers
from switchboard.server import create_app, running
from switchboard.store import CallStore
from switchboard.telephony import dialing
from switchboard.telephony.plivo import rest as plivo_rest
from tests.fakes.carrier_side import PhoneCall
from tests.fakes.instant import InstantLLM, InstantSTT, InstantTTS
from tests.fakes.plivo_rest_fake import FakePlivo
from tests.fakes.plivo_side import AUTH_ID, AUTH_TOKEN, PlivoSide
from tests.fakes.telnyx_rest_fake import FakeTelnyx
from tests.fakes.telnyx_side import TelnyxSide
from tests.fakes.vonage_rest_fake import vonage_api
from tests.fakes.vonage_side import SIGNATURE_SECRET, VonageSide

pytestmark = pytest.mark.timescale()  # in-process calls on instant/fake providers: tests/timescale.py

CALLED, OURS = "+15557654321", "+15550001111"
GREETING, MESSAGE = "Hi, a reminder from Luigi's.", "Your table is booked for seven. Goodbye."
CONFIG = f"""
pipelines:
  default:
    greeting: "Hi, this is Luigi's."
    stt: {{provider: pocketsphinx}}
    llm: {{provider: scripted}}
    tts: {{provider: espeak}}
  reminders:
    greeting: "{GREETING}"
    stt: {{provider: pocketsphinx}}
    llm: {{provider: scripted}}
    tts: {{provider: espeak}}
    voicemail: {{action: leave_message, message: "{MESSAGE}"}}
"""
ENV = ("TWILIO_AUTH_TOKEN", "PUBLIC_URL", "TELNYX_PUBLIC_KEY", "TELNYX_STREAM_TOKEN", "TELNYX_API_KEY",
       "TELNYX_API_BASE", "TELNYX_CONNECTION_ID", "PLIVO_AUTH_ID", "PLIVO_AUTH_TOKEN", "PLIVO_API_BASE",
       "VONAGE_SIGNATURE_SECRET", "VONAGE_APPLICATION_ID", "VONAGE_PRIVATE_KEY", "VONAGE_PRIVATE_KEY_PATH",
       "VONAGE_API_HOST")
MACHINE = {"telnyx": "machine_end_beep", "plivo": "machine_start", "vonage": "machine_end_beep"}
HANG_UPS = {"telnyx": ("POST", "/actions/hangup"), "plivo": ("DELETE", "/Call/"),
            "vonage": ("PUT", "/v1/calls/")}


@dataclass
class Carrier:
    """One carrier's side of an outbound call: its REST fake, its media side, and its verdict webhook."""

    name: str
    fake: Any
    side: Any
    synchronous: bool  # the verdict comes before the stream opens
    verdict: Callable[[bool], Awaitable[int | None]]  # post machine (True) / person (False); None: nothing
    open: Callable[[str], Awaitable[Any]]  # the stream, from what the call was placed with

    def placed_with(self) -> dict:
        """The body of the REST request that placed the call."""
        placing = {"telnyx": "/texml/calls/", "plivo": "/Call/", "vonage": "/v1/calls"}[self.name]
        return next(each.body for each in self.fake.requests if each.path.endswith(placing)
                    or (self.name == "telnyx" and each.path.startswith(placing)))

    def call_id(self) -> str:
        return {"telnyx": "call_control_id", "plivo": "call_uuid", "vonage": "uuid"}[self.name]

    def hang_ups(self) -> list[str]:
        method, path = HANG_UPS[self.name]
        return [each.path for each in self.fake.requests if getattr(each, "method", "POST") == method
                and path in each.path and (self.name != "vonage" or each.body.get("action") == "hangup")]


@contextlib.asynccontextmanager
async def carrier(name: str, monkeypatch, tmp_path) -> AsyncIterator[Carrier]:
    if name == "telnyx":
        side, fake = TelnyxSide(), FakeTelnyx()
        async with running(fake.app()) as port:
            monkeypatch.setenv("TELNYX_API_KEY", "KEY0123456789")
            monkeypatch.setenv("TELNYX_API_BASE", f"http://127.0.0.1:{port}")
            monkeypatch.setenv("TELNYX_CONNECTION_ID", "texml-app-1")

            async def verdict(machine: bool) -> int:
                return await fake.machine_detected(MACHINE[name] if machine else "human", side.key)

            async def open_stream(base_url: str) -> Any:
                side.call_control_id, side.to, side.from_ = fake.placed[-1], CALLED, OURS
                return await side.run_texml(line.placed_with()["Texml"])

            line = Carrier(name, fake, side, False, verdict, open_stream)
            yield line
    elif name == "plivo":
        side, fake = PlivoSide(), FakePlivo()
        async with running(fake.app()) as port:
            monkeypatch.setenv("PLIVO_API_BASE", f"http://127.0.0.1:{port}")
            monkeypatch.setenv("PLIVO_AUTH_ID", AUTH_ID)
            monkeypatch.setattr(plivo_rest, "DETECTION_MS", 2000)  # Plivo's least: a person waits 3 s here

            async def verdict(machine: bool) -> int | None:
                return await fake.machine_detected(side.call_uuid, AUTH_TOKEN) if machine else None

            async def open_stream(base_url: str) -> Any:
                url = next(each.body for each in fake.requests if each.path.endswith("/Call/"))["answer_url"]
                return await side.open(base_url, CALLED, OURS, url=url)

            yield Carrier(name, fake, side, False, verdict, open_stream)
    else:
        side = VonageSide()
        async with vonage_api(tmp_path) as (fake, env):
            for key, value in env.items():
                monkeypatch.setenv(key, value)

            async def verdict(machine: bool) -> int:
                if machine:
                    return await fake.detection_event("machine", SIGNATURE_SECRET, "beep_start")
                return await fake.detection_event("human", SIGNATURE_SECRET)

            async def open_stream(base_url: str) -> Any:
                side.uuid = fake.placed[-1]
                url = next(each.body for each in fake.requests if each.path == "/v1/calls")["answer_url"][0]
                return await side.open(base_url, CALLED, OURS, url=url)

            yield Carrier(name, fake, side, True, verdict, open_stream)


@dataclass
class Outcome:
    phone: PhoneCall
    tts: InstantTTS
    summary: dict
    turns: list[dict]
    before_verdict_s: float  # bot audio that played before the verdict was posted (must be none)


async def outbound_call(name: str, machine: bool, monkeypatch, tmp_path) -> tuple[Carrier, Outcome]:
    for each in ENV:
        monkeypatch.delenv(each, raising=False)
    async with contextlib.AsyncExitStack() as stack:
        line = await stack.enter_async_context(carrier(name, monkeypatch, tmp_path))
        for key, value in line.side.server_env().items():
            monkeypatch.setenv(key, value)
        tts = InstantTTS(ms_per_char=10)
        url = f"sqlite:///{tmp_path / 'calls.db'}"
        providers = {each: Providers(InstantSTT("hello?"), InstantLLM(), tts)
                     for each in ("default", "reminders")}
        app = create_app(parse_config(CONFIG), providers=providers, store_url=url)
        port = await stack.enter_async_context(running(app))
        base_url = f"http://127.0.0.1:{port}"
        monkeypatch.setenv("PUBLIC_URL", base_url)  # where the carrier posts its verdict and finds our socket
        placed = await asyncio.to_thread(dialing.dial, name, CALLED, "reminders", ["default", "reminders"],
                                         OURS, machine_detection="DetectMessageEnd")
        assert placed.carrier == name
        if line.synchronous:
            assert await line.verdict(machine) in (200, 204, None)
        phone = PhoneCall(line.side, await line.open(base_url))
        await phone.begin()
        before = 0.0
        if not line.synchronous:
            await asyncio.sleep(0.6)  # the carrier listens; the stream is open, the call held
            before = sum(each.end - each.start for each in phone.played)
            assert await line.verdict(machine) in (200, 204, None)
        if machine:
            await phone.until(lambda: phone.closed_by_server, within_s=10)
        else:
            await phone.until(lambda: tts.spoken, within_s=10)
            await phone.until_quiet(quiet_s=0.3)
            await phone.hang_up()
        await asyncio.wait_for(app.state.host.wait_idle(), 5)
        if not machine:
            await phone.close()
    store = CallStore(url)  # once the server has stopped: its writer has written everything
    await store.open()
    try:
        stored = await store.get_call(getattr(line.side, line.call_id()))
    finally:
        await store.close()
    assert stored is not None and stored["carrier"] == name
    return line, Outcome(phone, tts, stored["summary"], stored["turns"], before)


@pytest.mark.parametrize("name", ["telnyx", "plivo", "vonage"])
async def test_a_machine_gets_the_voicemail_message_then_a_hang_up(name, monkeypatch, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    line, outcome = await outbound_call(name, True, monkeypatch, tmp_path)
    asked = line.placed_with()
    if name == "telnyx":
        assert (asked["MachineDetection"], asked["AsyncAmd"]) == ("DetectMessageEnd", True)
        assert asked["AsyncAmdStatusCallback"].endswith("/telnyx/amd")
    elif name == "plivo":
        assert (asked["machine_detection"], asked["machine_detection_time"]) == ("true", 2000)
        assert asked["machine_detection_url"].endswith("/plivo/amd")
    else:
        assert asked["advanced_machine_detection"] == {"behavior": "continue", "mode": "detect_beep"}
        assert asked["event_url"][0].endswith("/vonage/event")
    assert outcome.before_verdict_s == 0  # nothing said to the line while the carrier listened
    assert outcome.tts.spoken == [MESSAGE]  # no greeting, no reply: the message, then the hang-up
    heard = sum(each.end - each.start for each in outcome.phone.played)
    assert heard == pytest.approx(len(MESSAGE) * 0.010, abs=0.1)
    assert outcome.phone.closed_by_server and outcome.phone.violations == []
    assert line.hang_ups(), "the call is ended through the carrier's REST API"
    assert outcome.summary["answered_by"] == MACHINE[name] and outcome.summary["voicemail"] == "left_message"
    assert [(t["kind"], t["reply_heard"], t["ended_call"]) for t in outcome.turns] == [
        ("voicemail", MESSAGE, True)]


@pytest.mark.parametrize("name", ["telnyx", "plivo", "vonage"])
async def test_a_person_gets_the_normal_call(name, monkeypatch, tmp_path):
    _line, outcome = await outbound_call(name, False, monkeypatch, tmp_path)
    assert outcome.before_verdict_s == 0
    assert outcome.tts.spoken[0] == GREETING
    assert outcome.phone.violations == [] and not outcome.phone.closed_by_server
    assert "voicemail" not in outcome.summary
    # Plivo says nothing of a person: the wait ran out, and nobody told the call who answered
    assert outcome.summary.get("answered_by") == (None if name == "plivo" else "human")


@pytest.mark.parametrize("name", ["telnyx", "plivo", "vonage"])
async def test_a_verdict_is_believed_only_when_the_carrier_signed_it(name, monkeypatch, tmp_path, caplog):
    """A forged verdict (signed with another key) is refused with 403 and a logged reason, and the call
    it names is not told it reached a machine; the carrier's own is taken."""
    for each in ENV:
        monkeypatch.delenv(each, raising=False)
    async with carrier(name, monkeypatch, tmp_path) as line:
        for key, value in line.side.server_env().items():
            monkeypatch.setenv(key, value)
        instant = Providers(InstantSTT("hello?"), InstantLLM(), InstantTTS())
        app = create_app(parse_config(CONFIG), providers={"default": instant, "reminders": instant})
        async with running(app) as port:
            monkeypatch.setenv("PUBLIC_URL", f"http://127.0.0.1:{port}")
            await asyncio.to_thread(dialing.dial, name, CALLED, "reminders", ["reminders"], OURS,
                                    machine_detection="Enable")
            if name == "telnyx":
                call = line.fake.placed[-1]
                forged = await line.fake.machine_detected("machine_start", Ed25519PrivateKey.generate())
            elif name == "plivo":
                call = line.side.call_uuid
                forged = await line.fake.machine_detected(call, "not-the-auth-token")
            else:
                call = line.fake.placed[-1]
                forged = await line.fake.detection_event("machine", "not-the-signature-secret-of-32-bytes")
            verdicts = app.state.host.verdicts
            assert forged == 403 and verdicts.known(call) is None
            assert "rejected a request from 127.0.0.1" in caplog.text
            assert await line.verdict(True) in (200, 204) and verdicts.known(call) == MACHINE[name]
