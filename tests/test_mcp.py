"""Tools from MCP servers (pipeline/mcp.py): real servers written with the `mcp` SDK
(tests/fakes/mcp_server.py) over streamable HTTP and stdio; a whole call in which the LLM (the OpenAI
fake, through the real adapter) calls one and the caller hears the answer; a server that dies mid-call;
a list that changes; clashes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

from switchboard.caller import CallerLine
from switchboard.config import ConfigError, parse_config
from switchboard.core.errors import StartupError
from switchboard.core.messages import ToolCall
from switchboard.pipeline.build import build_tools, mcp_clients
from switchboard.pipeline.call import Providers
from switchboard.pipeline.tools import ToolBox
from switchboard.providers.openai import OpenAILLMConfig
from switchboard.providers.openai.adapter import OpenAILLM
from switchboard.providers.scripted import ScriptedLLM
from switchboard.server import create_app, running
from tests import calls
from tests.fakes import openai_fake
from tests.fakes.common import Faults
from tests.fakes.instant import InstantSTT, InstantTTS
from tests.fakes.mcp_server import McpFake

pytestmark = pytest.mark.timescale()  # in-process calls on instant/fake providers: tests/timescale.py

SECRET = "mcp-secret-token-0123456789"
ANSWER = "We are open from noon to ten on Friday."


@pytest.fixture(autouse=True)
def token(monkeypatch):
    monkeypatch.setenv("TOOLS_TOKEN", SECRET)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key-0123")


@pytest.fixture
async def fake() -> AsyncIterator[McpFake]:
    server = McpFake()
    async with running(server.app()) as port:
        server.url = f"http://127.0.0.1:{port}/mcp"
        yield server


def pipeline_yaml(tools: str, llm: str = "{provider: scripted}") -> str:
    return f"""
pipelines:
  default:
    greeting: "Hi."
    stt: {{provider: pocketsphinx}}
    llm: {llm}
    tts: {{provider: espeak}}
    tool_use: {{filler_after_s: 5}}
    tools:
{tools}
"""


def mcp_entry(url: str, extra: str = "") -> str:
    return f'      - mcp: {{url: "{url}", headers: {{Authorization: "Bearer ${{TOOLS_TOKEN}}"}}{extra}}}'


@contextlib.asynccontextmanager
async def toolbox(tools: str) -> AsyncIterator[ToolBox]:
    """The pipeline's ToolBox with its MCP sessions started, as the host builds it."""
    config = parse_config(pipeline_yaml(tools))
    clients = mcp_clients(config.pipelines.values())
    assert clients is not None
    box = build_tools(config.pipelines["default"], clients)
    try:
        await clients.start()
        yield box
    finally:
        await clients.aclose()


async def until(check, timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not within the time")


# --- config --------------------------------------------------------------------------------------------


def test_an_mcp_entry_is_checked_with_the_fix() -> None:
    def problems(entry: str) -> list[str]:
        with pytest.raises(ConfigError) as caught:
            parse_config(pipeline_yaml(entry))
        return caught.value.problems

    (both,) = problems('      - mcp: {url: "http://x/mcp", command: [python]}')
    assert both.startswith("pipelines.default.tools[0].mcp: give either url:")
    (clear,) = problems('      - mcp: {url: "http://x/mcp", headers: {Authorization: "Bearer abcdefghij"}}')
    assert "header 'Authorization' holds a secret written in clear" in clear
    (unset,) = problems('      - mcp: {command: [python], env: {DB_URL: "${NOT_SET_ANYWHERE}"}}')
    assert unset.startswith("pipelines.default.tools[0].mcp.env.DB_URL: environment variable "
                            "NOT_SET_ANYWHERE is not set")
    config = parse_config(pipeline_yaml(mcp_entry("http://x/mcp")))
    assert SECRET not in config.model_dump_json()  # read when connecting, never held


# --- one call of a tool -----------------------------------------------------------------------------------


async def test_text_structured_content_errors_and_invalid_arguments(fake) -> None:
    async with toolbox(mcp_entry(fake.url, ", deny: [die]")) as box:
        assert [tool.name for tool in box.offered] == ["opening_hours", "book_table", "broken", "slow"]
        text = await box.run(ToolCall("c1", "opening_hours", {"day": "friday"}))
        assert (text.status, text.content) == ("ok", "Open 12:00-22:00 on friday.")
        booked = await box.run(ToolCall("c2", "book_table", {"party_size": 4, "time": "19:00"}))
        assert booked.status == "ok"
        assert json.loads(booked.content) == {"reference": "MCP-1", "party_size": 4, "time": "19:00"}
        broken = await box.run(ToolCall("c3", "broken", {}))
        assert broken.status == "error" and broken.content.startswith("Error: the broken tool failed")
        invalid = await box.run(ToolCall("c4", "book_table", {"party_size": "four"}))
        assert invalid.status == "invalid" and "'four' is not of type 'integer'" in invalid.content
        denied = await box.run(ToolCall("c5", "die", {}))
        assert denied.status == "unknown"
    assert fake.authorization and set(fake.authorization) == {f"Bearer {SECRET}"}


async def test_allow_filters_and_a_slow_tool_times_out(fake) -> None:
    async with toolbox(mcp_entry(fake.url, ", allow: [slow], timeout_s: 0.3")) as box:
        assert [tool.name for tool in box.offered] == ["slow"]
        outcome = await box.run(ToolCall("c1", "slow", {"seconds": 3}))
        assert outcome.status == "timeout" and "timed out after 0.3 s" in outcome.content


async def test_a_list_that_changes_is_offered_as_it_changes(fake) -> None:
    async with toolbox(mcp_entry(fake.url)) as box:
        assert "weather" not in [tool.name for tool in box.offered]
        await fake.add_tool("weather", "Sunny all day.")
        await until(lambda: "weather" in [tool.name for tool in box.offered])
        outcome = await box.run(ToolCall("c1", "weather", {}))
        assert (outcome.status, outcome.content) == ("ok", "Sunny all day.")


# --- start-up ----------------------------------------------------------------------------------------------


def instant() -> Providers:
    return Providers(InstantSTT("hello"), ScriptedLLM(parse_config(pipeline_yaml("      []")).pipelines[
        "default"].llm), InstantTTS())


HTTP_TOOL = """      - name: opening_hours
        description: Our own.
        http: {url: "http://127.0.0.1:9/hours"}
"""


async def test_a_name_clash_is_a_start_up_error_naming_both(fake) -> None:
    config = parse_config(pipeline_yaml(HTTP_TOOL + mcp_entry(fake.url)))
    app = create_app(config, providers={"default": instant()})
    with pytest.raises(StartupError) as caught:
        await app.state.host.start_tools()
    assert (f"MCP server {fake.url}'s tool 'opening_hours' clashes with the HTTP tool 'opening_hours' in "
            "tools:; leave one out with deny: [opening_hours]") in str(caught.value)
    # denied there, it starts
    config = parse_config(pipeline_yaml(HTTP_TOOL + mcp_entry(fake.url, ", deny: [opening_hours]")))
    app = create_app(config, providers={"default": instant()})
    await app.state.host.start_tools()
    await app.state.host.mcp.aclose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_an_unreachable_server_stops_start_up_unless_optional(caplog) -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    config = parse_config(pipeline_yaml(mcp_entry(url)))
    app = create_app(config, providers={"default": instant()})
    with pytest.raises(StartupError, match=f"MCP server {url}: cannot list its tools: "):
        await app.state.host.start_tools()
    config = parse_config(pipeline_yaml(mcp_entry(url, ", optional: true")))
    app = create_app(config, providers={"default": instant()})
    await app.state.host.start_tools()
    assert app.state.host.pipelines["default"].tools.offered == []
    assert f"MCP server {url}: cannot list its tools" in caplog.text and "(optional" in caplog.text
    await app.state.host.mcp.aclose()
    assert SECRET not in caplog.text


# --- a whole call ------------------------------------------------------------------------------------------


async def test_a_caller_hears_the_answer_an_mcp_tool_gave(fake, speech_wav, caplog) -> None:
    faults = Faults()
    script = openai_fake.OpenAIScript(tool_calls=[("opening_hours", {"day": "friday"})], reply="",
                                      after_tool_result=ANSWER)
    async with running(openai_fake.make_app(faults, script)) as port:
        config = parse_config(pipeline_yaml(mcp_entry(fake.url)))
        llm = OpenAILLM(OpenAILLMConfig(provider="openai", model="gpt-4o-mini",
                                        base_url=f"http://127.0.0.1:{port}/v1"))
        config.pipelines["default"].turn.speculate_after_ms = 0
        providers = Providers(InstantSTT("When are you open on Friday?"), llm, InstantTTS(ms_per_char=10))
        with caplog.at_level("DEBUG"):
            _, turns = await calls.place_call(config, [CallerLine(wav=speech_wav)], providers,
                                              script=calls.answered_then_quiet, hangup_timeout_s=0.5)
    first, second = faults.requests[-2:]
    assert [tool["function"]["name"] for tool in first["tools"]][:2] == ["end_call", "opening_hours"]
    result = second["messages"][-1]
    assert result["role"] == "tool" and result["content"] == "Open 12:00-22:00 on friday."
    assert turns[1].reply_heard == ANSWER
    assert turns[1].tools_used == ["opening_hours:ok"] and turns[1].tool_errors == 0
    assert SECRET not in caplog.text


# --- a server that dies ------------------------------------------------------------------------------------


@pytest.mark.timescale(1)  # its MCP server is a subprocess: real time
async def test_a_stdio_server_that_dies_mid_call_is_an_error_then_restarted(monkeypatch) -> None:
    monkeypatch.setenv("FAKE_GREETING", "Hello. ")
    entry = (f'      - mcp: {{command: ["{sys.executable}", "-m", "tests.fakes.mcp_server"], '
             'env: {MCP_FAKE_GREETING: "${FAKE_GREETING}"}, timeout_s: 60}')
    async with toolbox(entry) as box:
        first = await box.run(ToolCall("c1", "opening_hours", {"day": "monday"}))
        assert (first.status, first.content) == ("ok", "Hello. Open 12:00-22:00 on monday.")
        died = await asyncio.wait_for(box.run(ToolCall("c2", "die", {})), 10)  # an error, not a hang
        assert died.status == "error" and "dropped during the call" in died.content
        again = await box.run(ToolCall("c3", "opening_hours", {"day": "tuesday"}))  # a new process
        assert (again.status, again.content) == ("ok", "Hello. Open 12:00-22:00 on tuesday.")


def http_server(port: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.fakes.mcp_server", "--http", str(port)])


@pytest.mark.timescale(1)  # its MCP server is a subprocess: real time
async def test_an_http_server_that_dies_mid_call_is_an_error_not_a_hang() -> None:
    port = free_port()
    process = http_server(port)  # a process of its own, so that it can die (the stdio test reconnects)
    try:
        entry = f'      - mcp: {{url: "http://127.0.0.1:{port}/mcp", timeout_s: 60, optional: true}}'
        async with toolbox(entry) as box:
            await until(lambda: box.offered, timeout_s=60)  # the process takes a while to start
            slow = asyncio.create_task(box.run(ToolCall("c1", "slow", {"seconds": 30})))
            await asyncio.sleep(0.5)
            process.kill()
            outcome = await asyncio.wait_for(slow, 10)  # at once, not after the 60 s timeout
            assert outcome.status == "error" and "dropped during the call" in outcome.content
            after = await asyncio.wait_for(box.run(ToolCall("c2", "opening_hours", {"day": "sunday"})), 10)
            assert after.status == "error" and "not reachable" in after.content
    finally:
        process.kill()
        process.wait()


async def test_a_realtime_model_is_offered_and_runs_mcp_tools(fake, speech_wav, monkeypatch) -> None:
    from tests.fakes import openai_realtime_fake

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-realtime-mcp")
    script = openai_realtime_fake.RealtimeScript(api_key="sk-test-realtime-mcp", ms_per_char=20)
    script.replies = [("book_table", {"party_size": 4, "time": "19:00"}), "Booked: {output}"]
    async with running(openai_realtime_fake.make_app(script)) as port:
        yaml = f"""
pipelines:
  default:
    kind: realtime
    greeting: "Hi there."
    realtime: {{provider: openai, base_url: "http://127.0.0.1:{port}/v1", timeouts: {{first_token_s: 15}},
               turn_detection: {{type: server_vad, silence_duration_ms: 250}}}}
    tools:
{mcp_entry(fake.url)}
"""
        _, turns = await calls.place_call(parse_config(yaml), [CallerLine(wav=speech_wav)],
                                          on_event=lambda event: None, hangup_timeout_s=2)
    offered = {tool["name"] for tool in script.of_type("session.update")[0]["session"]["tools"]}
    assert {"end_call", "opening_hours", "book_table", "broken", "slow", "die"} == offered
    (output,) = script.tool_outputs
    assert json.loads(output["output"]) == {"reference": "MCP-1", "party_size": 4, "time": "19:00"}
    assert turns[-1].tools_used == ["book_table:ok"]
    assert turns[-1].reply_heard == f"Booked: {output['output']}"


async def test_a_reload_lists_a_new_mcp_server_before_the_switch(fake, tmp_path) -> None:
    from switchboard.config import load_config
    from switchboard.ops.reload import Reloader

    path = tmp_path / "pipeline.yaml"
    path.write_text(pipeline_yaml("      []"), encoding="utf-8")
    app = create_app(load_config(path), providers={"default": instant()}, config_path=path)
    host = app.state.host
    reloader = Reloader(host, path)
    try:
        dead = f"http://127.0.0.1:{free_port()}/mcp"
        path.write_text(pipeline_yaml(mcp_entry(dead)), encoding="utf-8")
        refused = await reloader.reload()
        assert refused.error is not None and f"MCP server {dead}: cannot list its tools" in refused.error
        assert host.pipelines["default"].tools.offered == []  # nothing changed
        path.write_text(pipeline_yaml(mcp_entry(fake.url, ", allow: [opening_hours]")), encoding="utf-8")
        reloaded = await reloader.reload()
        assert reloaded.error is None and reloaded.changed == ["default"]
        assert [tool.name for tool in host.pipelines["default"].tools.offered] == ["opening_hours"]
    finally:
        if host.mcp is not None:
            await host.mcp.aclose()
