"""bench/calls.py's cheap load generators: the lean WebSocket client (bench/wsclient.py) speaks the protocol,
and a simulated call by the lean Python caller or the C caller (bench/callers.c) against the real server is
answered, hears the bot and echoes its marks."""

from __future__ import annotations

import asyncio
import shutil
import time

import numpy as np
import pytest
from websockets.asyncio.server import ServerConnection, serve

from bench import wsclient
from bench.calls import CallerAudio, _build_c_callers, _callers_main, _run_c_callers, media_frames
from switchboard.config import parse_config
from switchboard.pipeline.call import Providers
from switchboard.server import create_app, running
from switchboard.telephony.twilio.wire import MediaMessages
from tests.fakes.instant import InstantLLM, InstantSTT, InstantTTS


async def _echo(ws: ServerConnection) -> None:
    async for message in ws:
        if message == "ping me":
            await asyncio.wait_for(await ws.ping(b"are you there"), 2)  # answered by the client's pong
            await ws.send("ponged")
        elif message == "hang up":
            await ws.close(1000, "bye")
        else:
            await ws.send(message)


async def test_lean_client_sends_and_receives_messages_of_every_length_answers_pings_and_sees_a_close():
    received: list[bytes] = []
    arrived = asyncio.Event()

    def on_text(payload: bytes, now: float) -> None:
        assert now <= time.monotonic()
        received.append(payload)
        arrived.set()

    async def next_message() -> bytes:
        await asyncio.wait_for(arrived.wait(), 2)
        arrived.clear()
        return received.pop(0)

    async with serve(_echo, "127.0.0.1", 0, max_size=2**20) as server:
        port = server.sockets[0].getsockname()[1]
        client = await wsclient.connect(f"ws://127.0.0.1:{port}/media-stream", on_text)
        for size in (5, 125, 126, 3000, 70_000):  # the 7-bit, 16-bit and 64-bit length forms
            text = ("μ" * size)[:size]
            client.send_text(text.encode())
            assert (await next_message()).decode() == text
        client.send_text(b"ping me")
        assert await next_message() == b"ponged"
        client.send_text(b"hang up")
        await asyncio.wait_for(asyncio.shield(client.closed), 2)
        assert client.close_received


async def test_lean_client_refuses_a_server_that_does_not_upgrade():
    async def not_websocket(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(not_websocket, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(wsclient.HandshakeError, match="404 Not Found"):
            await wsclient.connect(f"ws://127.0.0.1:{port}/media-stream", lambda payload, now: None)


CONFIG = """
pipelines:
  default:
    greeting: "Hi."
    apology: "Sorry, trouble."
    vad: {end_silence_ms: 300}
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
"""


CLIENTS = [("lean", 2.0), ("lean", 0.0),
           pytest.param("c", 2.0, marks=pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")),
                                                           reason="no C compiler"))]


@pytest.mark.parametrize(("client", "poll_ms"), CLIENTS)
async def test_a_bench_call_is_answered_hears_the_bot_and_echoes_its_marks(client: str, poll_ms: float):
    turns = []
    providers = Providers(InstantSTT("what are your opening hours"), InstantLLM("Nine to five."),
                          InstantTTS(sample_rate=24000, ms_per_char=20))
    app = create_app(parse_config(CONFIG), on_turn=turns.append, providers={"default": providers},
                     insecure_dev=True)
    opts = {"url": "", "calls": [(0, 0.0)], "duration_s": 30.0, "turns": 1, "line_s": 0.6, "pause_s": 0.1,
            "lead_ms": 160, "reply_timeout_s": 5.0, "greeting": True, "client": client, "poll_ms": poll_ms}
    audio = CallerAudio.build(0.6)
    binary = _build_c_callers() if client == "c" else None
    async with running(app) as port:
        opts["url"] = f"ws://127.0.0.1:{port}/media-stream"
        if binary is not None:  # a separate process: the server keeps this loop
            result = await asyncio.to_thread(_run_c_callers, binary, opts, audio, time.monotonic())
        else:
            result = await _callers_main(opts, audio, time.monotonic())
        await asyncio.wait_for(app.state.host.wait_idle(), 5)

    [call] = result["calls"]
    assert call["error"] is None and not call["hung_up"]
    assert call["lines"] == call["answered"] == 1 and call["unanswered"] == 0
    assert call["marks_echoed"] >= 2  # the greeting's and the reply's
    assert [t.kind for t in turns] == ["greeting", "reply"]
    assert turns[1].transcript == "what are your opening hours"
    assert turns[1].reply_heard == "Nine to five."
    # every frame after a reply's first was timed against its pacing deadline
    assert result["bot_late"]["n"] == call["bot_frames"] - 2


def test_compare_prints_this_tree_against_the_other_commit_as_ratios() -> None:
    from bench.calls import compare_table

    def fig(code: str, calls: int, cpu: float, lag: float, peak: float, reply: float) -> dict:
        return {"code": code, "calls": calls, "server_cpu_pct_total": cpu,
                "server_cpu_pct_per_call": cpu / calls, "lag_p50_ms": 0.5, "lag_p99_ms": lag,
                "server_rss_start_mb": 100.0, "server_rss_peak_mb": peak,
                "caller_response_p50_ms": reply, "answered": calls * 2, "lines": calls * 2,
                "other_load_pct": 10.0, "steal_pct": 0.0}

    table = compare_table([fig("this", 5, 4, 2, 101, 1000), fig("old", 5, 5, 2, 101, 1000),
                           fig("this", 100, 60, 10, 141, 1050), fig("old", 100, 75, 20, 151, 1200)],
                          ["this", "old"])
    assert "vs old at 100 calls: CPU 0.80x, lag p99 0.50x, MiB/call 0.80x, reply p50 0.88x" in table
    assert "1.05x" in table  # this tree's reply delay at 100 calls over its 5-call figure


def test_the_openai_vendors_pipeline_is_a_valid_config() -> None:
    import yaml

    from bench.calls import _pipeline_config

    urls = {stage: f"http://127.0.0.1:9/v1/{stage}" for stage in ("stt", "llm", "tts")}
    opts = {"greeting": "Hi.", "end_silence_ms": 600, "speculate_after_ms": 120, "lead_ms": 160,
            "vendor_urls": urls}
    config = parse_config(yaml.safe_dump({"pipelines": {"default": _pipeline_config(opts)}}))
    assert config.pipelines["default"].tts.provider == "openai"


def test_the_openai_fakes_answer_every_request_at_their_fixed_latency() -> None:
    from bench.calls import FAKE_STT_S, FAKE_TTS_FIRST_S, _fake_faults

    faults = _fake_faults()
    for stage, latency in (("stt", FAKE_STT_S), ("tts", FAKE_TTS_FIRST_S)):
        for _ in range(3):
            faults[stage].requests.append({"model": "m"})  # as the fake records each request
            assert faults[stage].delay_s() == latency and not faults[stage].should_fail()
        assert len(faults[stage].requests) == 3  # counted, though nothing is kept


def test_the_callers_count_each_20_ms_frame_of_a_media_message_that_carries_several() -> None:
    media = MediaMessages("MZ1")
    for frames in (1, 2, 3, 5):
        assert media_frames(media(np.zeros(160 * frames, dtype=np.int16)).encode()) == frames
