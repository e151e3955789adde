"""Drain on deploy, against a real `switchboard serve` process: SIGTERM mid-call stops new calls (readyz
503, busy TwiML, a new stream hears the busy line), lets a call that ends on its own end, says goodbye to
the one still talking after drain_timeout_s, records both calls in the store and exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx2

from switchboard.caller import run_call
from switchboard.store import CallStore

CONFIG = """\
database_url: {db}
drain_timeout_s: 1.5
drain_message: "Goodbye now."
busy_message: "Busy."
pipelines:
  default:
    greeting: "Hello."
    stt: {{provider: pocketsphinx}}
    llm: {{provider: scripted}}
    tts: {{provider: espeak}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def wait_up(http: httpx2.AsyncClient, server: subprocess.Popen, timeout_s: float = 30) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            assert server.poll() is None, "switchboard serve exited at start-up"
            try:
                if (await http.get("/healthz")).status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            await asyncio.sleep(0.1)


async def active_calls(http: httpx2.AsyncClient) -> int:
    return (await http.get("/healthz")).json()["active_calls"]


async def test_sigterm_drains_calls_records_them_and_exits_0(tmp_path: Path) -> None:
    db = tmp_path / "calls.db"
    config = tmp_path / "pipeline.yaml"
    config.write_text(CONFIG.format(db=db))
    port = free_port()
    env = {**os.environ, "HOST": "127.0.0.1"}
    command = [sys.executable, "-m", "switchboard", "serve", "--config", str(config), "--port", str(port),
               "--insecure-dev"]
    server = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE,  # noqa: ASYNC220
                              stderr=subprocess.STDOUT, text=True)
    url = f"ws://127.0.0.1:{port}/media-stream"
    try:
        async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            await wait_up(http, server)
            quiet = {"on_event": lambda event: None}
            # one caller hangs up on their own shortly after the greeting, one would stay 20 s
            leaving = asyncio.create_task(run_call(url, [], hangup_timeout_s=1.0, **quiet))
            staying = asyncio.create_task(run_call(url, [], hangup_timeout_s=20, **quiet))
            async with asyncio.timeout(10):
                while await active_calls(http) < 2:  # noqa: ASYNC110 (another process's state)
                    await asyncio.sleep(0.05)

            server.send_signal(signal.SIGTERM)
            async with asyncio.timeout(5):
                while (ready := await http.get("/readyz")).status_code == 200:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            assert ready.status_code == 503 and ready.json()["status"] == "draining"
            busy = await http.post("/incoming-call", data={"CallSid": "CAnew", "To": "+15550002222"})
            assert "<Say>Busy.</Say><Hangup />" in busy.text and "<Connect>" not in busy.text
            refused = await run_call(url, [], hangup_timeout_s=5, **quiet)
            assert refused.hangup and refused.bot_audio_received_s > 0.2  # the busy line, then hung up

            left, stayed = await asyncio.wait_for(asyncio.gather(leaving, staying), 15)
        assert left.stop_sent and not left.hangup  # ended on its own during the drain
        assert stayed.hangup and not stayed.stop_sent  # the server said goodbye and hung up
        output, _ = server.communicate(timeout=15)
        assert server.returncode == 0, output
        assert "saying goodbye" in output

        store = CallStore(str(db))
        await store.open()
        try:
            gone, drained = await store.get_call(left.call_sid), await store.get_call(stayed.call_sid)
            assert await store.get_call(refused.call_sid) is None  # never taken
        finally:
            await store.close()
        assert gone is not None and drained is not None
        assert gone["ended_at"] is not None and [t["kind"] for t in gone["turns"]] == ["greeting"]
        assert drained["ended_at"] is not None
        assert [t["kind"] for t in drained["turns"]] == ["greeting", "goodbye"]
        goodbye = drained["turns"][-1]
        assert goodbye["reply_heard"] == "Goodbye now." and goodbye["ended_call"]
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
