"""Keypad digits become a user message for the LLM; the caller hanging up cancels the turn in flight.

A raw WebSocket client plays Twilio (connected, start, dtmf, stop) against the real server, with the
instant providers; InstantLLM records what it was asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable

import pytest
import websockets

from switchboard.config import parse_config
from switchboard.core.metrics import TurnMetrics
from switchboard.pipeline.call import Providers
from switchboard.server import create_app, running
from tests.fakes.instant import InstantLLM, InstantSTT, InstantTTS

pytestmark = pytest.mark.timescale()  # in-process calls on instant/fake providers: tests/timescale.py

CONFIG = """
pipelines:
  default:
    greeting: ""
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
    dtmf: {inter_digit_timeout_ms: 10000}  # in these tests only `#` ends an entry in time
  timed:
    greeting: ""
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
    dtmf: {inter_digit_timeout_ms: 1500}
  keys:
    greeting: ""
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
    dtmf: {end_on_hash: false, inter_digit_timeout_ms: 300, format: "Keys: {digits}"}
  deaf:
    greeting: ""
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
    dtmf: {enabled: false, inter_digit_timeout_ms: 100}
"""


class Line:
    """One call, as Twilio: the server's app, the socket, what the LLM was asked, the turns recorded."""

    def __init__(self, app, ws, llm: InstantLLM, turns: list[TurnMetrics]) -> None:
        self.app, self.ws, self.llm, self.turns = app, ws, llm, turns

    async def press(self, digits: str) -> None:
        for digit in digits:
            await self.ws.send(json.dumps({"event": "dtmf", "streamSid": "MZ1", "sequenceNumber": "5",
                                           "dtmf": {"track": "inbound_track", "digit": digit}}))

    async def asked(self) -> str:
        """The last user message of the LLM's first request, once it comes."""
        await eventually(lambda: self.llm.requests)
        return self.llm.requests[0][-1].content


async def eventually(condition: Callable[[], object], within_s: float = 3.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the condition never came true")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def call(pipeline: str = "default", reply: str = "Got it.") -> AsyncIterator[Line]:
    """A call on `pipeline` that has started (no greeting); the LLM answers `reply`."""
    llm = InstantLLM(reply)
    turns: list[TurnMetrics] = []
    names = ("default", "timed", "keys", "deaf")
    providers = {name: Providers(InstantSTT(), llm, InstantTTS()) for name in names}
    app = create_app(parse_config(CONFIG), on_turn=turns.append, providers=providers)
    async with running(app) as port, websockets.connect(f"ws://127.0.0.1:{port}/media-stream") as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(json.dumps({
            "event": "start", "sequenceNumber": "1", "streamSid": "MZ1",
            "start": {"streamSid": "MZ1", "accountSid": "AC1", "callSid": "CA1", "tracks": ["inbound"],
                      "customParameters": {"pipeline": pipeline},
                      "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}},
        }))
        yield Line(app, ws, llm, turns)


async def test_hash_hands_the_digits_over_at_once():
    async with call() as line:
        await line.press("12#")
        # asked within `asked`'s 3 s: only `#` could have ended the entry (the timeout here is 10 s)
        assert await line.asked() == "The caller pressed 12 on the keypad."
        async with asyncio.timeout(3):
            while (message := json.loads(await line.ws.recv()))["event"] != "mark":
                pass  # the reply's audio, then its one mark
        await line.ws.send(json.dumps(message))  # as Twilio does once the audio before it has played
        await eventually(lambda: line.turns)
    turn = line.turns[0]
    assert turn.kind == "keypad" and turn.transcript == "The caller pressed 12 on the keypad."
    assert turn.reply_heard == "Got it."


async def test_digits_end_after_the_inter_digit_timeout():
    async with call("timed") as line:
        await line.press("4")
        await asyncio.sleep(0.2)
        await line.press("2")  # well within the 1.5 s timeout: the same entry
        assert await line.asked() == "The caller pressed 42 on the keypad."  # handed over by the timeout
        history = line.llm.requests[0]
        assert [m.role for m in history] == ["system", "user"]


async def test_format_and_hash_as_a_digit():
    async with call("keys") as line:
        await line.press("9#")
        assert await line.asked() == "Keys: 9#"  # end_on_hash is off: # is a key, the timeout ends the entry


async def test_disabled_dtmf_is_ignored():
    async with call("deaf") as line:
        await line.press("123#")
        await asyncio.sleep(0.4)
        assert line.llm.requests == []


@pytest.mark.parametrize("how", ["stop", "close"])
async def test_caller_hang_up_cancels_the_turn_and_ends_the_call(how):
    long_reply = "This is a long answer. " * 10
    async with call(reply=long_reply.strip()) as line:
        await line.press("1#")
        await line.asked()
        async with asyncio.timeout(3):
            while json.loads(await line.ws.recv())["event"] != "media":
                pass  # the reply is playing, its marks unanswered: the turn is in flight
        assert line.app.state.calls and not line.turns
        if how == "stop":
            await line.ws.send(json.dumps({"event": "stop", "sequenceNumber": "9", "streamSid": "MZ1",
                                           "stop": {"accountSid": "AC1", "callSid": "CA1"}}))
        else:
            await line.ws.close()
        await eventually(lambda: not line.app.state.calls and line.turns)
    [turn] = line.turns
    assert turn.interrupted and turn.reply_heard == ""  # cancelled, recorded, nothing heard
    assert turn.turn_done is not None
