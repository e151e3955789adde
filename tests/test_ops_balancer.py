"""Two Switchboard processes on one PostgreSQL behind a real load balancer (HAProxy, from Debian), as in
production: calls through the balancer land on both, both show on one instance's live view and in the
one store; SIGTERM to one mid-call lets that call finish its reply and records it, and new calls go to
the other."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx2
import pytest

from switchboard.caller import CallerLine, run_call
from switchboard.store import CallStore
from tests.test_ops_drain import free_port, wait_up
from tests.test_ops_metrics import samples, value
from tests.test_ops_workers import POSTGRES_URL, needs_postgres, on_server

HAPROXY = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
needs_haproxy = pytest.mark.skipif(
    HAPROXY is None and os.environ.get("SWITCHBOARD_REQUIRE_HAPROXY") != "1",
    reason="HAProxy is not installed (apt-get install haproxy)")

CONFIG = """\
database_url: {database}
drain_timeout_s: 8
pipelines:
  default:
    greeting: "Hello."
    stt: {{provider: pocketsphinx}}
    llm:
      provider: scripted
      fallback: "I can tell you our opening hours."
      rules:
        - {{match: "opening hours", reply: "We open at noon.", phrases: ["what are your opening hours"]}}
    tts: {{provider: espeak}}
"""

HAPROXY_CONFIG = """\
global
    maxconn 256
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
frontend calls
    bind 127.0.0.1:{port}
    default_backend switchboard
backend switchboard
    balance roundrobin
    option httpchk GET /readyz
    default-server inter 300ms fall 1 rise 2
    server one 127.0.0.1:{one} check
    server two 127.0.0.1:{two} check
"""


def started(found_text: str) -> float:
    return value(samples(found_text), "switchboard_calls_started_total", carrier="twilio",
                 pipeline="default") or 0


@needs_haproxy
@needs_postgres
async def test_two_processes_behind_haproxy_share_calls_and_drain(tmp_path: Path) -> None:
    assert POSTGRES_URL, "SWITCHBOARD_REQUIRE_POSTGRES=1 but SWITCHBOARD_TEST_POSTGRES_URL is not set"
    assert HAPROXY, "SWITCHBOARD_REQUIRE_HAPROXY=1 but haproxy is not installed"
    name = f"switchboard_lb_{uuid.uuid4().hex[:8]}"
    await on_server(POSTGRES_URL, f'CREATE DATABASE "{name}"')
    database = POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    config = tmp_path / "pipeline.yaml"
    config.write_text(CONFIG.format(database=database))
    ports = {"one": free_port(), "two": free_port()}
    balancer_port = free_port()
    (tmp_path / "haproxy.cfg").write_text(HAPROXY_CONFIG.format(port=balancer_port, **ports))
    env = {**os.environ, "HOST": "127.0.0.1"}
    servers = {label: subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, "-m", "switchboard", "serve", "--config", str(config), "--port", str(port),
         "--insecure-dev"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True) for label, port in ports.items()}
    balancer = subprocess.Popen([HAPROXY, "-db", "-f", str(tmp_path / "haproxy.cfg")],  # noqa: ASYNC220
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"ws://127.0.0.1:{balancer_port}/media-stream"
    quiet = {"on_event": lambda event: None}
    line = [CallerLine(text="what are your opening hours")]
    try:
        async with contextlib.AsyncExitStack() as stack:
            direct = {label: await stack.enter_async_context(httpx2.AsyncClient(
                base_url=f"http://127.0.0.1:{port}")) for label, port in ports.items()}
            for label, http in direct.items():
                await wait_up(http, servers[label])
            async with asyncio.timeout(10):  # HAProxy's checks have seen both ready
                while True:
                    async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{balancer_port}") as via:
                        answers = [await via.get("/readyz") for _ in range(4)]  # 503 until a check passed
                    answers = {a.json()["pid"] for a in answers if a.status_code == 200}
                    if answers == {servers["one"].pid, servers["two"].pid}:
                        break
                    await asyncio.sleep(0.2)

            # two calls at once through the balancer: one on each process, both on one live view
            holding = [asyncio.create_task(run_call(url, line, hangup_timeout_s=1, **quiet))
                       for _ in range(2)]
            async with asyncio.timeout(10):
                while True:
                    counts = {label: started((await http.get("/metrics")).text)
                              for label, http in direct.items()}
                    if sum(counts.values()) == 2:
                        break
                    await asyncio.sleep(0.05)
            assert counts == {"one": 1, "two": 1}
            async with asyncio.timeout(5):
                while True:
                    async with direct["one"].stream("GET", "/api/live") as response:
                        async for text in response.aiter_lines():
                            if text.startswith("data: "):
                                snapshot = json.loads(text.removeprefix("data: "))
                                break
                    if len(snapshot["calls"]) == 2:
                        break
                    await asyncio.sleep(0.05)

            # SIGTERM to one process mid-call: its call goes on to its reply; new calls go to the other
            servers["one"].send_signal(signal.SIGTERM)
            await asyncio.sleep(1.0)  # HAProxy's next check sees one answer 503
            later = await asyncio.gather(*(run_call(url, line, hangup_timeout_s=1, **quiet)
                                           for _ in range(2)))
            assert started((await direct["two"].get("/metrics")).text) == 3
            first = await asyncio.gather(*holding)
        assert all(r.lines[0].response_delay_ms is not None for r in [*first, *later])  # all got replies
        assert all(r.stop_sent and not r.hangup for r in first)  # ended by the callers, not the drain
        output, _ = servers["one"].communicate(timeout=20)
        assert servers["one"].returncode == 0, output
        assert "active calls have 8 s to finish" in output and "every call ended on its own" in output

        store = CallStore(database)
        await store.open()
        try:
            recorded = [await store.get_call(r.call_sid) for r in [*first, *later]]
        finally:
            await store.close()
        assert all(call is not None and call["ended_at"] is not None for call in recorded)
        for call in recorded:  # every reply was heard to its end, the drained call's too
            replies = [t for t in call["turns"] if t["kind"] == "reply"]
            assert len(replies) == 1 and replies[0]["reply_heard"] == replies[0]["reply_text"] != ""
            assert replies[0]["reply_heard"] in ("We open at noon.", "I can tell you our opening hours.")
        assert all([t["kind"] for t in call["turns"]] == ["greeting", "reply"] for call in recorded)
    finally:
        for process in [*servers.values(), balancer]:
            if process.poll() is None:
                process.kill()
                process.communicate()
        await on_server(POSTGRES_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
