"""`switchboard serve --workers N`: refused on SQLite with the fix named; on PostgreSQL, N processes on
one port record into one store, /metrics on any of them counts every call, and SIGTERM drains them all."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx2
import pytest

from switchboard.caller import run_call
from switchboard.store import CallStore
from tests.test_ops_drain import free_port, wait_up
from tests.test_ops_metrics import samples, value

POSTGRES_URL = os.environ.get("SWITCHBOARD_TEST_POSTGRES_URL")
needs_postgres = pytest.mark.skipif(
    not POSTGRES_URL and os.environ.get("SWITCHBOARD_REQUIRE_POSTGRES") != "1",
    reason="set SWITCHBOARD_TEST_POSTGRES_URL to a postgresql:// URL")

PIPELINES = """\
pipelines:
  default:
    greeting: "Hello."
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
"""


def serve(config: Path, port: int, workers: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "switchboard", "serve", "--config", str(config), "--port", str(port),
               "--workers", str(workers), "--insecure-dev"]
    env = {**os.environ, "HOST": "127.0.0.1"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    # its own process group: if the test fails, the workers (which hold its output pipe) go with it
    return subprocess.Popen(command, env=env, cwd=config.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


async def calls_active(http: httpx2.AsyncClient) -> float:
    """Active calls over every worker (/healthz would answer for one)."""
    return value(samples((await http.get("/metrics")).text), "switchboard_calls_active") or 0


def test_two_workers_on_sqlite_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "pipeline.yaml"
    config.write_text("database_url: calls.db\n" + PIPELINES)
    done = subprocess.run([sys.executable, "-m", "switchboard", "serve", "--config", str(config), "--workers",
                           "2"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2
    assert ("--workers 2 needs a call store every process can share, but database_url is 'calls.db'"
            in done.stderr)
    assert "Set database_url: postgresql://" in done.stderr and "--workers 1" in done.stderr


async def on_server(url: str, statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@needs_postgres
async def test_workers_share_one_store_and_one_metrics_view_and_drain(tmp_path: Path) -> None:
    assert POSTGRES_URL, "SWITCHBOARD_REQUIRE_POSTGRES=1 but SWITCHBOARD_TEST_POSTGRES_URL is not set"
    name = f"switchboard_workers_{uuid.uuid4().hex[:8]}"  # a database of its own: others use the default
    await on_server(POSTGRES_URL, f'CREATE DATABASE "{name}"')
    database = POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    config = tmp_path / "pipeline.yaml"
    config.write_text(f"database_url: {database}\ndrain_timeout_s: 1\ndrain_message: \"Goodbye now.\"\n"
                      + PIPELINES)
    port = free_port()
    server = serve(config, port, workers=2)
    url = f"ws://127.0.0.1:{port}/media-stream"
    quiet = {"on_event": lambda event: None}
    try:
        async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            await wait_up(http, server)
            pids = set()
            for _ in range(60):  # the kernel hands each connection to either worker
                async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}") as fresh:
                    pids.add((await fresh.get("/readyz")).json()["pid"])
                if len(pids) == 2:
                    break
            assert len(pids) == 2, "one worker never answered"

            finished = await asyncio.gather(*(run_call(url, [], hangup_timeout_s=0.8, **quiet)
                                              for _ in range(4)))
            assert all(result.stop_sent for result in finished)
            staying = asyncio.create_task(run_call(url, [], hangup_timeout_s=20, **quiet))
            async with asyncio.timeout(10):
                while await calls_active(http) < 1:  # noqa: ASYNC110 (another process's state)
                    await asyncio.sleep(0.05)
            found = samples((await http.get("/metrics")).text)  # whichever worker answers: every call
            assert value(found, "switchboard_calls_started_total", carrier="twilio", pipeline="default") == 5
            assert value(found, "switchboard_calls_active") == 1

            server.send_signal(signal.SIGTERM)
            drained = await asyncio.wait_for(staying, 15)
        assert drained.hangup and not drained.stop_sent
        output, _ = server.communicate(timeout=20)
        assert server.returncode == 0, output
        assert output.count("exited (0)") == 2

        store = CallStore(database)
        await store.open()
        try:
            calls = [await store.get_call(result.call_sid) for result in [*finished, drained]]
        finally:
            await store.close()
        assert all(call is not None and call["ended_at"] is not None for call in calls)
        assert [t["kind"] for t in calls[-1]["turns"]] == ["greeting", "goodbye"]
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.communicate()
        await on_server(POSTGRES_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
