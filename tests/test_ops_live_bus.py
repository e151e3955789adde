"""The dashboard's live view across instances through PostgreSQL LISTEN/NOTIFY: two (then three) servers on
one PostgreSQL store; a call on one shows on the others' live view with its turns, a late instance learns
of it, and it leaves every view when it ends. Also: a turn too big for a NOTIFY is cut to fit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid

import httpx2
import pytest

from switchboard.caller import run_call
from switchboard.config import parse_config
from switchboard.ops.live_bus import MAX_PAYLOAD, fit
from switchboard.pipeline.call import Providers
from switchboard.server import create_app, running
from tests.fakes.instant import InstantLLM, InstantSTT, InstantTTS
from tests.test_ops_workers import POSTGRES_URL, needs_postgres, on_server

CONFIG = """
pipelines:
  default:
    greeting: "Hi there."
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
"""


def app_on(database: str):
    providers = Providers(InstantSTT("hello"), InstantLLM("Hi."), InstantTTS(ms_per_char=10))
    return create_app(parse_config(CONFIG), providers={"default": providers}, store_url=database)


async def until(condition, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 (another server's state, polled from the test)
            await asyncio.sleep(0.02)


async def first_event(http: httpx2.AsyncClient) -> dict:
    """The snapshot /api/live sends first."""
    async with http.stream("GET", "/api/live") as response:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                return json.loads(line.removeprefix("data: "))
    raise AssertionError("no event")


@pytest.fixture
async def database():
    assert POSTGRES_URL, "SWITCHBOARD_REQUIRE_POSTGRES=1 but SWITCHBOARD_TEST_POSTGRES_URL is not set"
    name = f"switchboard_live_{uuid.uuid4().hex[:8]}"
    await on_server(POSTGRES_URL, f'CREATE DATABASE "{name}"')
    yield POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    await on_server(POSTGRES_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@needs_postgres
async def test_every_instance_shows_every_call(database: str) -> None:
    one, two, late = app_on(database), app_on(database), app_on(database)
    async with contextlib.AsyncExitStack() as stack:
        port_one = await stack.enter_async_context(running(one))
        port_two = await stack.enter_async_context(running(two))
        for app in (one, two):
            await asyncio.wait_for(app.state.ops.live_bus.connected.wait(), 5)
        # a caller who hears the greeting (its mark echoed: the turn is done), then stays silent 3 s
        caller = asyncio.create_task(run_call(f"ws://127.0.0.1:{port_one}/media-stream", [],
                                              hangup_timeout_s=3, on_event=lambda event: None))
        await until(lambda: len(one.state.host.calls) == 1)
        call_id = next(iter(one.state.host.calls))

        hub_two = two.state.live_hub
        await until(lambda: call_id in hub_two.calls)  # through PostgreSQL, not in-process
        assert one.state.live_hub is not hub_two and call_id not in two.state.host.calls
        await until(lambda: len(hub_two.calls[call_id]["turns"]) == 1)  # the greeting, once heard
        assert hub_two.calls[call_id]["turns"][0]["kind"] == "greeting"
        assert hub_two.calls[call_id]["carrier"] == "twilio"
        async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port_two}") as http:
            snapshot = await first_event(http)
        assert [call["id"] for call in snapshot["calls"]] == [call_id]

        await stack.enter_async_context(running(late))  # joins while the call is on: told about it
        await until(lambda: call_id in late.state.live_hub.calls)
        assert [t["kind"] for t in late.state.live_hub.calls[call_id]["turns"]] == ["greeting"]

        assert (await caller).stop_sent
        await until(lambda: call_id not in hub_two.calls and call_id not in late.state.live_hub.calls)


def test_a_turn_too_big_for_a_notify_is_cut_to_fit() -> None:
    turn = {"kind": "reply", "transcript": "words " * 2000, "reply_text": "more " * 2000, "failures": []}
    payload = fit({"origin": "abc", "event": {"type": "turn", "call_id": "CA1", "turn": turn}})
    assert payload is not None and len(payload.encode()) <= MAX_PAYLOAD
    sent = json.loads(payload)["event"]["turn"]
    assert sent["transcript"].startswith("words words") and sent["transcript"].endswith("…")
    small = {"origin": "abc", "event": {"type": "call_ended", "call_id": "CA1", "summary": {}}}
    assert json.loads(fit(small)) == small




AMD_CONFIG = """
pipelines:
  default:
    greeting: "Hi, a reminder from Luigi's."
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
    voicemail: {action: leave_message, message: "Your table is booked for seven."}
"""


@needs_postgres
async def test_a_machine_verdict_posted_to_another_instance_reaches_the_held_call(database, caplog) -> None:
    """`serve --workers N` or a load balancer: the carrier's machine detection webhook lands on one process,
    the call's socket on another. The held start learns the verdict through PostgreSQL and the machine
    gets the voicemail message, not the greeting."""
    caplog.set_level(logging.INFO, logger="switchboard.verdicts")
    spoken: dict[str, list[str]] = {}

    def app(name: str):
        tts = InstantTTS(ms_per_char=10)
        spoken[name] = tts.spoken
        return create_app(parse_config(AMD_CONFIG), providers={"default": Providers(
            InstantSTT("hello"), InstantLLM("Hi."), tts)}, store_url=database)

    holding, posted = app("holding"), app("posted")
    async with contextlib.AsyncExitStack() as stack:
        port = await stack.enter_async_context(running(holding))
        await stack.enter_async_context(running(posted))
        for each in (holding, posted):
            await asyncio.wait_for(each.state.ops.live_bus.connected.wait(), 5)
        caller = asyncio.create_task(run_call(
            f"ws://127.0.0.1:{port}/media-stream", [], hangup_timeout_s=3,
            custom_parameters={"verdict_wait_s": "8"}, on_event=lambda event: None))
        await until(lambda: any("holding the start" in r.getMessage() for r in caplog.records))
        call_sid = next(r for r in caplog.records if "holding the start" in r.getMessage()).args[0]
        await asyncio.sleep(0.3)  # the carrier listens: nothing is said meanwhile
        assert spoken["holding"] == []
        posted.state.host.verdicts.record(call_sid, "machine_end_beep")  # what its AMD webhook does
        result = await asyncio.wait_for(caller, 10)
    assert spoken["holding"] == ["Your table is booked for seven."] and spoken["posted"] == []
    assert result.hangup  # the message, then the bot hung up
