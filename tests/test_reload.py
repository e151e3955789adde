"""Changing pipeline.yaml without a restart (ops/reload.py): a reload under a live call, an invalid one,
SIGHUP and --watch, the providers kept, and each stored call's configuration version."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
from pathlib import Path

import httpx
import numpy as np
import pytest

from switchboard.audio.wav import write_wav
from switchboard.caller import CallerLine, run_call
from switchboard.config.loading import load_config, pipeline_version, short_hash
from switchboard.report import main_report
from switchboard.server import create_app, running
from switchboard.store import CallStore

TOKEN = "reload-test-token-0123"

PIPELINE = """
pipelines:
  default:
    greeting: "{greeting}"
    idle: {{reminder_after_s: 1, reminder: "{reminder}"}}
    vad: {{end_silence_ms: {end_silence_ms}}}
    stt: {{provider: pocketsphinx}}
    llm: {{provider: scripted}}
    tts: {{provider: espeak}}
"""


def write(path: Path, greeting: str, reminder: str, end_silence_ms: int = 600) -> str:
    text = PIPELINE.format(greeting=greeting, reminder=reminder, end_silence_ms=end_silence_ms)
    path.write_text(text, encoding="utf-8")
    return text


@pytest.fixture
def silence_wav(tmp_path) -> str:
    path = tmp_path / "silence.wav"
    write_wav(path, np.zeros(4000, dtype=np.int16), 8000)
    return str(path)


async def call(port: int, wav: str) -> None:
    await run_call(f"ws://127.0.0.1:{port}/media-stream", [CallerLine(wav=wav)], hangup_timeout_s=2.5)


async def settle(app) -> None:
    await asyncio.wait_for(app.state.host.wait_idle(), 10)


async def test_a_reload_under_a_live_call(tmp_path, silence_wav, monkeypatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_API_TOKEN", TOKEN)
    path = tmp_path / "pipeline.yaml"
    old_text = write(path, "Hello, this is the old line.", "Old reminder.")
    turns = []
    app = create_app(load_config(path), on_turn=turns.append, config_path=path,
                     store_url=str(tmp_path / "calls.db"))
    host = app.state.host
    old_stt = host.pipelines["default"].stt[0].provider
    async with running(app) as port:
        first = asyncio.create_task(call(port, silence_wav))
        await asyncio.wait_for(_until(lambda: host.calls), 30)  # the first call is live
        new_text = write(path, "Hello, this is the new line.", "New reminder.")
        async with httpx.AsyncClient() as client:
            answer = await client.post(f"http://127.0.0.1:{port}/api/config/reload",
                                       headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 200 and answer.json()["changed"] == ["default"]
        await first
        await settle(app)
        await call(port, silence_wav)
        await settle(app)
    first_id, second_id = dict.fromkeys(t.call_id for t in turns)
    by_call = {each: [(t.kind, t.reply_heard) for t in turns if t.call_id == each]
               for each in (first_id, second_id)}
    # the live call finished on the configuration it started with; the next one heard the new file
    assert by_call[first_id][:2] == [("greeting", "Hello, this is the old line."),
                                     ("reminder", "Old reminder.")]
    assert by_call[second_id][0] == ("greeting", "Hello, this is the new line.")
    # the recogniser's settings did not change: the running one (its decoders) is kept
    assert host.pipelines["default"].stt[0].provider is old_stt
    store = CallStore(str(tmp_path / "calls.db"))
    await store.open()
    try:
        rows = {row["id"]: row for row in await store.recent_calls()}
    finally:
        await store.close()
    old, new = load_config_text(old_text), load_config_text(new_text)
    assert (rows[first_id]["config_version"], rows[first_id]["config_file"]) == (old, short_hash(old_text))
    assert (rows[second_id]["config_version"], rows[second_id]["config_file"]) == (new, short_hash(new_text))
    assert old != new
    out = io.StringIO()
    assert await asyncio.to_thread(main_report, ["--db", str(tmp_path / "calls.db"), "--config-version",
                                                 "--json"], {}, out) == 0
    split = json.loads(out.getvalue())
    assert [(each["config_version"], each["config_files"]) for each in split] == [
        (old, [short_hash(old_text)]), (new, [short_hash(new_text)])]


def load_config_text(text: str) -> str:
    from switchboard.config import parse_config

    return pipeline_version(parse_config(text).pipelines["default"])


async def _until(check) -> None:
    for _ in range(100_000):  # bounded by the caller's wait_for
        if check():
            return
        await asyncio.sleep(0.02)


async def test_an_invalid_reload_changes_nothing_and_names_the_key(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setenv("SWITCHBOARD_API_TOKEN", TOKEN)
    path = tmp_path / "pipeline.yaml"
    write(path, "Hello.", "Still there?")
    app = create_app(load_config(path), config_path=path)
    before = app.state.host.config
    async with running(app) as port:
        write(path, "Changed.", "Still there?", end_silence_ms=50)
        async with httpx.AsyncClient() as client:
            url = f"http://127.0.0.1:{port}/api/config/reload"
            refused = await client.post(url)
            answer = await client.post(url, headers={"Authorization": f"Bearer {TOKEN}"})
    assert refused.status_code == 401
    assert answer.status_code == 422 and answer.json()["reloaded"] is False
    error = answer.json()["error"]
    assert "pipelines.default.vad.end_silence_ms" in error and "100" in error  # the key, and the range
    assert app.state.host.config is before and app.state.host.config.pipelines["default"].greeting == "Hello."
    assert "config reload of" in caplog.text and "the running configuration stays" in caplog.text


async def test_sighup_and_a_watched_file_reload(tmp_path) -> None:
    path = tmp_path / "pipeline.yaml"
    write(path, "One.", "Still there?")
    app = create_app(load_config(path), config_path=path, watch=True, reload_on_sighup=True)
    host = app.state.host
    async with running(app):
        write(path, "Two.", "Still there?")
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.wait_for(_until(lambda: host.config.pipelines["default"].greeting == "Two."), 30)
        await asyncio.sleep(1.5)  # the watcher has seen this version of the file
        write(path, "Three, a longer line.", "Still there?")
        await asyncio.wait_for(_until(lambda: host.config.pipelines["default"].greeting.startswith("Three")),
                               30)


async def test_a_reload_that_drops_a_routed_pipeline_is_refused(tmp_path) -> None:
    path = tmp_path / "pipeline.yaml"
    write(path, "Hello.", "Still there?")
    app = create_app(load_config(path), config_path=path)
    path.write_text(PIPELINE.format(greeting="Hi.", reminder="R.", end_silence_ms=600)
                    .replace("  default:", "  other:") + "default_pipeline: other\n", encoding="utf-8")
    from switchboard.ops.reload import Reloader

    result = await Reloader(app.state.host, path).reload()
    assert result.error is not None and "default_pipeline routes calls to 'default'" in result.error
    assert list(app.state.host.pipelines) == ["default"]


async def test_every_worker_reloads_on_the_supervisors_sighup(tmp_path) -> None:
    import httpx2

    from tests.test_ops_drain import free_port, wait_up
    from tests.test_ops_workers import serve

    path = tmp_path / "pipeline.yaml"
    first = PIPELINE.format(greeting="One.", reminder="R.", end_silence_ms=600)
    path.write_text('database_url: ""\n' + first)
    port = free_port()
    server = serve(path, port, workers=2)  # no store: N workers need none to reload
    seen: list[str] = []

    def read_until_reloaded() -> None:
        assert server.stdout is not None
        for line in server.stdout:
            seen.append(line)
            if sum("config reloaded from" in each for each in seen) == 2:
                return

    try:
        async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            await wait_up(http, server, timeout_s=120)
            pids = set()
            async with asyncio.timeout(120):
                while len(pids) < 2:  # the kernel hands each connection to either worker
                    async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}") as fresh:
                        pids.add((await fresh.get("/readyz")).json()["pid"])
        path.write_text('database_url: ""\n' + PIPELINE.format(greeting="Two.", reminder="R.",
                                                               end_silence_ms=600))
        server.send_signal(signal.SIGHUP)
        await asyncio.wait_for(asyncio.to_thread(read_until_reloaded), 120)
        assert sum("config reloaded from" in line for line in seen) == 2  # one per worker
        assert any("SIGHUP: every worker reloads the configuration" in line for line in seen)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
        server.communicate()
