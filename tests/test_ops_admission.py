"""Admission through the real app: past max_concurrent_calls a caller hears the busy line and is hung up
(Twilio's webhook in TwiML, a media stream that starts anyway in the pipeline's voice), counted; /readyz
says 503 while the process is full and 200 again once a call has ended."""

from __future__ import annotations

import asyncio
import json
import os

import httpx2
import pytest
import websockets

from switchboard.caller import make_wire, run_call
from switchboard.config import parse_config
from switchboard.pipeline.call import Providers
from switchboard.server import create_app, running
from tests.fakes.instant import InstantLLM, InstantSTT, InstantTTS

BUSY = "All lines are busy."
CONFIG = f"""
max_concurrent_calls: 1
busy_message: "{BUSY}"
pipelines:
  default:
    greeting: "Hi there."
    stt: {{provider: pocketsphinx}}
    llm: {{provider: scripted}}
    tts: {{provider: espeak}}
"""


async def until(condition, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 (the server's state, polled from the test)
            await asyncio.sleep(0.01)


@pytest.fixture
def tts() -> InstantTTS:
    return InstantTTS(sample_rate=16000, ms_per_char=40)


async def test_a_full_process_says_busy_and_hangs_up_and_is_not_ready(tts: InstantTTS) -> None:
    providers = Providers(InstantSTT("hello"), InstantLLM("Hi."), tts)
    app = create_app(parse_config(CONFIG), providers={"default": providers})
    host = app.state.host
    async with running(app) as port, httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        assert (await http.get("/readyz")).status_code == 200
        connect = await http.post("/incoming-call", data={"CallSid": "CA0", "To": "+15550002222"})
        assert "<Connect>" in connect.text and "<Say>" not in connect.text

        wire = make_wire()  # the first call takes the only line and holds it
        async with websockets.connect(f"ws://127.0.0.1:{port}/media-stream", max_queue=None) as first:
            await first.send(json.dumps(wire.connected()))
            await first.send(json.dumps(wire.start(1, {})))
            await until(lambda: len(host.calls) == 1)

            ready = await http.get("/readyz")
            assert ready.status_code == 503 and ready.json()["status"] == "full"
            assert (await http.get("/healthz")).status_code == 200  # alive all the same

            busy = await http.post("/incoming-call", data={"CallSid": "CA2", "To": "+15550002222"})
            assert busy.status_code == 200
            assert f"<Say>{BUSY}</Say><Hangup /></Response>" in busy.text and "<Connect>" not in busy.text

            # a stream that starts a call anyway hears the busy line in the pipeline's voice, then the
            # server hangs up; the same for Exotel
            line_s = len(tts.render(BUSY)) / tts.sample_rate
            for path, carrier in (("/media-stream", "twilio"), ("/exotel", "exotel")):
                result = await run_call(f"ws://127.0.0.1:{port}{path}", [], carrier=carrier,
                                        hangup_timeout_s=5, on_event=lambda event: None)
                assert result.hangup and not result.stop_sent, carrier
                assert result.bot_audio_received_s == pytest.approx(line_s, abs=0.25), carrier
                assert result.marks_echoed == 1, carrier
                assert len(host.calls) == 1  # never taken: the first call is the only one

            assert host.ops.admission.refusals == {("twilio", "webhook", "full"): 1,
                                                   ("twilio", "stream", "full"): 1,
                                                   ("exotel", "stream", "full"): 1}
            assert tts.spoken.count(BUSY) == 1  # synthesised once, then reused
        # the first caller hung up
        await asyncio.wait_for(host.wait_idle(), 5)
        assert (await http.get("/readyz")).status_code == 200
        again = await http.post("/incoming-call", data={"CallSid": "CA3", "To": "+15550002222"})
        assert "<Connect>" in again.text


async def test_no_limit_by_default() -> None:
    config = parse_config(CONFIG.replace("max_concurrent_calls: 1\n", ""))
    assert config.max_concurrent_calls is None
    providers = Providers(InstantSTT("hello"), InstantLLM("Hi."), InstantTTS())
    app = create_app(config, providers={"default": providers})
    async with running(app) as port, httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        wires = [make_wire() for _ in range(3)]
        sockets = [await websockets.connect(f"ws://127.0.0.1:{port}/media-stream") for _ in wires]
        for socket, wire in zip(sockets, wires, strict=True):
            await socket.send(json.dumps(wire.start(1, {})))
        await until(lambda: len(app.state.host.calls) == 3)
        ready = await http.get("/readyz")
        assert ready.status_code == 200 and ready.json() == {"status": "ready", "active_calls": 3,
                                                             "max_concurrent_calls": None, "pid": os.getpid()}
        for socket in sockets:
            await socket.close()
        await asyncio.wait_for(app.state.host.wait_idle(), 5)


async def test_unsigned_webhooks_get_403_not_the_busy_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "twilio-secret")
    providers = Providers(InstantSTT("hello"), InstantLLM("Hi."), InstantTTS())
    app = create_app(parse_config(CONFIG), providers={"default": providers})
    app.state.ops.admission.draining = True
    async with running(app) as port, httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        answer = await http.post("/incoming-call", data={"CallSid": "CA9"})
    assert answer.status_code == 403 and BUSY not in answer.text
    assert app.state.ops.admission.refusals == {}  # not a caller we turned away: not counted
