"""The carrier conformance suite: the same whole calls over every carrier. A carrier is done when it passes.

How to add a carrier to it
--------------------------
Write its fake under `tests/fakes/<carrier>_side.py` from the carrier's documentation (not from our
code) and add it to `SIDES` below. The fake is a `tests.fakes.carrier_side.CarrierSide`:

- `name`            the plug-in's name, recorded on every call it carries ("twilio");
- `frame_ms`        how much caller audio one of its inbound media messages carries;
- `clears`          True if its protocol lets the server drop what the carrier has buffered (a `clear`);
                    False if not: then the server must keep the least audio queued there that still
                    plays smoothly, and the barge-in test holds it to the same audible stop;
- `marks_on_clear`  True if a clear sends back the marks it dropped;
- `server_env()`    the environment the server needs to verify the carrier (its keys), set before start;
- `open(base_url, to, from_, signed=)`  what the carrier does when a call comes in: its webhook (if
                    any, signed its way, or wrongly with `signed=False`), then the media socket's upgrade;
                    returns the open socket or raises `Refused`;
- `start()`, `media(pcm)`, `dtmf(digit)`, `stop()`, `mark_played(name)`  its frames for the stream's
                    opening, `frame_ms` of 8 kHz caller audio, a key, the caller hanging up, a mark's echo;
- `read(raw)`       a server message as `Audio(pcm, rate)`, `MarkOut(name)` or `Clear()`, or `Violation`
                    naming the carrier rule it breaks (every test asserts there are none);
- `malformed()`     frames that break its protocol: the server must log and drop each and go on.

`PhoneCall` (tests/fakes/carrier_side.py) is the rest of the carrier, shared: it paces the caller's
audio at real time, plays the bot's audio on the carrier's clock, echoes marks when their audio has
played, honours `clear`. Providers are the instant ones (tests/fakes/instant.py): a 300 Hz tone lasting
60 ms a character is the bot's voice, so pitch and length prove the audio's rate on every carrier.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import numpy as np
import pytest

from switchboard.config import parse_config
from switchboard.core.metrics import TurnMetrics
from switchboard.pipeline.call import Providers
from switchboard.server import create_app, running
from switchboard.store import CallStore
from tests.fakes.carrier_side import CarrierSide, PhoneCall, Refused, dominant_hz
from tests.fakes.exotel_side import ExotelSide
from tests.fakes.instant import InstantLLM, InstantSTT, InstantTTS
from tests.fakes.plivo_side import PlivoSide
from tests.fakes.telnyx_side import TelnyxSide
from tests.fakes.twilio_side import TwilioSide
from tests.fakes.vonage_side import VonageSide
from tests.speech import quiet, speech_like

pytestmark = pytest.mark.timescale()  # in-process calls on instant/fake providers: tests/timescale.py

SIDES: dict[str, Callable[[], CarrierSide]] = {
    "twilio": TwilioSide,
    "exotel": ExotelSide,
    "plivo": PlivoSide,
    "vonage": VonageSide,
    "telnyx": TelnyxSide,
}

CALLER, MAIN, SALES = "+15550001111", "+15550002222", "+15550003333"
CONFIG = f"""
numbers:
  "{SALES}": sales
pipelines:
  default:
    greeting: "Hi."
    apology: "Sorry."
    stt: {{provider: pocketsphinx}}
    llm: {{provider: scripted}}
    tts: {{provider: espeak}}
    dtmf: {{inter_digit_timeout_ms: 5000}}
  sales:
    greeting: "Sales here."
    stt: {{provider: pocketsphinx}}
    llm: {{provider: scripted}}
    tts: {{provider: espeak}}
"""
TONE_HZ = 300  # InstantTTS's voice
MS_PER_CHAR = 60
SECRETS = ("TWILIO_AUTH_TOKEN", "TWILIO_ACCOUNT_SID", "TWILIO_API_BASE", "PUBLIC_URL", "EXOTEL_BASIC_AUTH",
           "PLIVO_AUTH_ID", "PLIVO_AUTH_TOKEN", "PLIVO_API_BASE", "VONAGE_SIGNATURE_SECRET",
           "VONAGE_APPLICATION_ID", "VONAGE_PRIVATE_KEY", "VONAGE_PRIVATE_KEY_PATH", "VONAGE_API_HOST",
           "TELNYX_PUBLIC_KEY", "TELNYX_STREAM_TOKEN", "TELNYX_API_KEY")


@pytest.fixture(params=list(SIDES))
def side(request, monkeypatch) -> CarrierSide:
    for name in SECRETS:
        monkeypatch.delenv(name, raising=False)
    made = SIDES[request.param]()
    for name, value in made.server_env().items():
        monkeypatch.setenv(name, value)
    return made


@dataclass
class Server:
    app: object
    base_url: str
    providers: Providers
    turns: list[TurnMetrics] = field(default_factory=list)

    async def settle(self) -> None:
        """Until every call has ended and its last turn is recorded."""
        await asyncio.wait_for(self.app.state.host.wait_idle(), 5)


def instant(reply: str = "It is noon.", transcript: str = "what time is it") -> Providers:
    return Providers(InstantSTT(transcript), InstantLLM(reply), InstantTTS(ms_per_char=MS_PER_CHAR))


@contextlib.asynccontextmanager
async def serving(monkeypatch, providers: Providers, store_url: str | None = None) -> AsyncIterator[Server]:
    turns: list[TurnMetrics] = []
    app = create_app(parse_config(CONFIG), on_turn=turns.append, store_url=store_url,
                     providers={"default": providers, "sales": instant()})
    async with running(app) as port:
        base_url = f"http://127.0.0.1:{port}"
        monkeypatch.setenv("PUBLIC_URL", base_url)  # where the carrier reaches us (its signed URLs)
        yield Server(app, base_url, providers, turns)


@contextlib.asynccontextmanager
async def phone(side: CarrierSide, server: Server, to: str = MAIN) -> AsyncIterator[PhoneCall]:
    call = PhoneCall(side, await side.open(server.base_url, to, CALLER))
    await call.begin()
    try:
        yield call
    finally:
        await call.close()
    assert call.violations == []


def a_line(seconds: float = 0.8) -> np.ndarray:
    return np.concatenate([speech_like(seconds), quiet(0.05, seed=2)])


def rendered_s(text: str) -> float:
    return len(text) * MS_PER_CHAR / 1000


# --- the tests -----------------------------------------------------------------------------------------


async def test_greeting_routed_by_the_number_called(side, monkeypatch):
    async with serving(monkeypatch, instant()) as server:
        async with phone(side, server, to=SALES) as call:
            await call.until_quiet()
            audio, rate = call.heard()
        await server.settle()
    assert server.turns[0].kind == "greeting" and server.turns[0].reply_heard == "Sales here."
    assert abs(dominant_hz(audio, rate) - TONE_HZ) < 10  # the right pitch: the rate is what it says
    # the right speed: as long as it was rendered (a carrier that pads its chunks may add a little)
    assert rendered_s("Sales here.") - 0.03 <= len(audio) / rate <= rendered_s("Sales here.") + 0.25


async def test_reply_at_the_right_pitch_and_speed_with_every_mark_echoed(side, monkeypatch):
    reply = "It is noon. The shop is open."
    async with serving(monkeypatch, instant(reply)) as server:
        async with phone(side, server) as call:
            await call.until_quiet()
            _, line_end = await call.say_and_wait(a_line())
            await call.until(lambda: call.played and call.played[-1].arrived > line_end)
            await call.until_quiet()
            audio, rate = call.heard(since=line_end)
        await server.settle()
    _, answer = server.turns
    assert answer.transcript == "what time is it" and answer.reply_heard == reply
    assert abs(dominant_hz(audio, rate) - TONE_HZ) < 10
    spoken = sum(rendered_s(text) for text in server.providers.tts.spoken[1:])
    assert spoken - 0.03 <= len(audio) / rate <= spoken + 0.25 * 2
    assert call.marks_sent and sorted(call.marks_echoed) == sorted(call.marks_sent)


async def test_barge_in_stops_the_bot(side, monkeypatch):
    reply = "Yes. No. " * 12
    async with serving(monkeypatch, instant(reply.strip(), "tell me everything")) as server:
        async with phone(side, server) as call:
            await call.until_quiet()
            _, line_end = await call.say_and_wait(a_line())
            await call.until(lambda: call.played and call.played[-1].arrived > line_end + 1.0)
            onset, _ = await call.say_and_wait(a_line(1.0))
            stopped = call.quiet_after(onset)
            await call.hang_up()
        await server.settle()
    assert server.turns[1].interrupted and server.turns[1].reply_heard != reply.strip()
    if side.clears:
        assert [t for t in call.clears if t > onset]
    assert stopped - onset < 1.0  # the caller hears the bot stop within a second of speaking


async def test_keypad_digits_become_a_turn(side, monkeypatch):
    async with serving(monkeypatch, instant("Got it.")) as server:
        async with phone(side, server) as call:
            await call.until_quiet()
            await call.press("42#")
            await call.until(lambda: len(server.turns) == 2, within_s=5)
        await server.settle()
    keypad = server.turns[1]
    assert keypad.kind == "keypad" and keypad.transcript == "The caller pressed 42 on the keypad."
    assert keypad.reply_heard == "Got it."


async def test_the_bot_hangs_up(side, monkeypatch):
    async with serving(monkeypatch, instant(transcript="thanks goodbye")) as server:
        async with phone(side, server) as call:
            await call.until_quiet()
            await call.say_and_wait(a_line())
            await call.until(lambda: call.closed_by_server, within_s=8)
        await server.settle()
    last = server.turns[-1]
    assert last.ended_call and last.reply_heard == "Goodbye!"


async def test_the_caller_hangs_up_mid_reply(side, monkeypatch):
    async with serving(monkeypatch, instant("This is a long answer. " * 8)) as server:
        async with phone(side, server) as call:
            await call.until_quiet()
            _, line_end = await call.say_and_wait(a_line())
            await call.until(lambda: call.played and call.played[-1].arrived > line_end)
            await call.hang_up()
            await server.settle()
    assert server.app.state.calls == {}
    assert server.turns[-1].interrupted and not call.closed_by_server


async def test_malformed_frames_are_dropped_and_the_call_goes_on(side, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="switchboard.server")
    async with serving(monkeypatch, instant()) as server:
        async with phone(side, server) as call:
            garbage = side.malformed()
            for frame in garbage:
                await call.send_raw(frame)
            await call.until_quiet()
            await call.say_and_wait(a_line())
            await call.until(lambda: len(server.turns) == 2, within_s=6)
        await server.settle()
    assert server.turns[1].reply_heard == "It is noon."
    dropped = [r.getMessage() for r in caplog.records if "dropped a frame" in r.getMessage()]
    assert len(dropped) == len(garbage), dropped


async def test_a_bad_signature_is_refused(side, monkeypatch, caplog):
    caplog.set_level(logging.WARNING)
    async with serving(monkeypatch, instant()) as server:
        with pytest.raises(Refused) as refused:
            await side.open(server.base_url, MAIN, CALLER, signed=False)
        assert refused.value.status in (401, 403)
        assert server.app.state.calls == {}
        async with phone(side, server) as call:  # signed: accepted
            await call.until_quiet()
        await server.settle()
    assert "rejected" in caplog.text
    for value in side.server_env().values():
        assert value not in caplog.text  # keys are never logged
    assert server.turns[0].reply_heard == "Hi."


async def test_the_call_and_its_turns_are_stored_with_the_carriers_name(side, monkeypatch, tmp_path):
    path = tmp_path / "calls.db"
    async with serving(monkeypatch, instant(), store_url=str(path)) as server:
        async with phone(side, server) as call:
            await call.until_quiet()
            await call.say_and_wait(a_line())
            await call.until(lambda: len(server.turns) == 2, within_s=6)
        await server.settle()
    store = CallStore(str(path))
    await store.open()
    try:
        [row] = await store.recent_calls()
        stored = await store.get_call(row["id"])
    finally:
        await store.close()
    assert row["carrier"] == side.name
    assert (row["from_number"], row["to_number"]) == (CALLER, MAIN)
    assert [t["kind"] for t in stored["turns"]] == ["greeting", "reply"]


def test_open_routes_are_said_in_one_warning_naming_each_variable(monkeypatch, caplog):
    """An operator who set nothing hears once which routes anyone may call and which variable guards
    each; one who set them all hears nothing of it."""
    from switchboard.config import parse_config
    from switchboard.server import create_app

    guards = ["EXOTEL_BASIC_AUTH", "TELNYX_PUBLIC_KEY", "TELNYX_STREAM_TOKEN", "PLIVO_AUTH_TOKEN",
              "VONAGE_SIGNATURE_SECRET"]
    config = parse_config("pipelines: {default: {stt: {provider: pocketsphinx}, llm: {provider: scripted}, "
                          "tts: {provider: espeak}}}")
    for name in guards:
        monkeypatch.delenv(name, raising=False)
    with caplog.at_level(logging.WARNING, logger="switchboard.telephony"):
        create_app(config)
    said = [r.getMessage() for r in caplog.records if "!!! OPEN" in r.getMessage()]
    assert len(said) == 1
    for name in guards:
        assert name in said[0]
    assert "/exotel" in said[0] and "/plivo/answer" in said[0] and "/telnyx/media-stream" in said[0]

    caplog.clear()
    monkeypatch.setenv("EXOTEL_BASIC_AUTH", "key:token")
    monkeypatch.setenv("TELNYX_PUBLIC_KEY", "MCowBQYDK2VwAyEA" + "A" * 43 + "=")
    monkeypatch.setenv("TELNYX_STREAM_TOKEN", "stream-token")
    monkeypatch.setenv("PLIVO_AUTH_TOKEN", "plivo-token")
    monkeypatch.setenv("VONAGE_SIGNATURE_SECRET", "vonage-secret")
    with caplog.at_level(logging.WARNING, logger="switchboard.telephony"):
        create_app(config)
    assert not [r for r in caplog.records if "!!! OPEN" in r.getMessage()]
