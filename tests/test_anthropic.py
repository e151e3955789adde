"""AnthropicLLM against a fake Messages API speaking the real SSE format (tests/fakes/anthropic_fake.py)."""

import asyncio
import contextlib

import pytest

from switchboard.caller import CallerLine
from switchboard.config import parse_config
from switchboard.core.errors import MissingCredential, ProviderError
from switchboard.core.messages import Message, TextDelta, Tool, ToolCall, Usage
from switchboard.core.tools import END_CALL_TOOL
from switchboard.pipeline.call import Providers
from switchboard.providers.anthropic import AnthropicLLMConfig
from switchboard.providers.anthropic.adapter import LEADING_USER_TURN, AnthropicLLM
from switchboard.server import running
from tests import calls
from tests.fakes import anthropic_fake
from tests.fakes.anthropic_fake import anthropic_app
from tests.fakes.common import Faults
from tests.fakes.instant import InstantSTT, InstantTTS

pytestmark = pytest.mark.timescale()  # in-process calls on instant/fake providers: tests/timescale.py

KEY = "sk-ant-test-0123456789"
REPLY = "Hello from Claude. How can I help?"
HISTORY = [Message("system", "You are on the phone."), Message("user", "Hi!")]


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)


@contextlib.asynccontextmanager
async def fake(faults: Faults, **config):
    """AnthropicLLM pointed at a running fake."""
    async with running(anthropic_app(faults, **config.pop("fake", {}))) as port:
        yield AnthropicLLM(
            AnthropicLLMConfig(provider="anthropic", base_url=f"http://127.0.0.1:{port}", **config)
        )


async def collect(llm, messages=HISTORY, tools=(END_CALL_TOOL,)):
    return [event async for event in llm.stream(list(messages), list(tools))]


async def test_text_streams_in_order_with_usage():
    faults = Faults()
    async with fake(faults) as llm:
        events = await collect(llm)
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 1 and "".join(d.text for d in deltas) == REPLY
    assert events[-1] == Usage(
        anthropic_fake.INPUT_TOKENS + anthropic_fake.CACHE_READ_TOKENS, anthropic_fake.OUTPUT_TOKENS
    )
    assert faults.paths == ["/v1/messages"] and faults.completed == 1


async def test_request_is_converted_to_the_messages_format():
    weather = Tool(
        "get_weather", "Weather for a city.", {"type": "object", "properties": {"city": {"type": "string"}}}
    )
    history = [
        Message("system", "You are on the phone."),
        Message("assistant", "Hi there."),  # the greeting: the API wants a user turn first
        Message("user", "What's the weather?"),
        Message(
            "assistant", "Let me check.", tool_calls=[ToolCall("toolu_1", "get_weather", {"city": "Paris"})]
        ),
        Message("tool", "Sunny, 21 C", tool_call_id="toolu_1"),
        Message("user", "And tomorrow?"),  # same role as the tool result's turn: merged into it
        Message("system", "Keep it short."),
    ]
    faults = Faults()
    async with fake(faults, model="claude-opus-4-8", temperature=0.4, max_tokens=120) as llm:
        await collect(llm, history, [END_CALL_TOOL, weather])
    body = faults.requests[0]
    assert body["model"] == "claude-opus-4-8" and body["max_tokens"] == 120 and body["stream"] is True
    assert body["temperature"] == 0.4
    assert body["system"] == "You are on the phone.\n\nKeep it short."
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": LEADING_USER_TURN}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Hi there."}]},
        {"role": "user", "content": [{"type": "text", "text": "What's the weather?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny, 21 C"},
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ]
    assert body["tools"] == [
        {
            "name": "end_call",
            "description": END_CALL_TOOL.description,
            "input_schema": END_CALL_TOOL.parameters,
        },
        {"name": "get_weather", "description": "Weather for a city.", "input_schema": weather.parameters},
    ]
    headers = faults.headers[0]
    assert KEY in (headers.get("x-api-key", "") + headers.get("authorization", ""))
    assert headers.get("anthropic-version")


async def test_temperature_is_capped_at_the_apis_maximum():
    faults = Faults()
    async with fake(faults, temperature=1.7) as llm:
        await collect(llm)
    assert faults.requests[0]["temperature"] == 1.0


async def test_tool_call_streamed_in_fragments_becomes_one_tool_call():
    faults = Faults()
    tool = {"name": "end_call", "input": {"farewell": "Goodbye, take care!"}}
    async with fake(faults, fake={"reply": "", "tool_call": tool}) as llm:
        events = await collect(llm)
    assert events[0] == ToolCall("toolu_fake01", "end_call", {"farewell": "Goodbye, take care!"})
    assert isinstance(events[1], Usage) and len(events) == 2


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (429, "rate_limit", True),
        (500, "server", True),
        (529, "server", True),
        (401, "auth", False),
        (400, "bad_request", False),
    ],
)
async def test_http_errors_map_to_kinds(status, kind, retryable):
    faults = Faults(status=status)
    async with fake(faults) as llm:
        with pytest.raises(ProviderError) as caught:
            await collect(llm)
    error = caught.value
    assert (error.vendor, error.kind, error.retryable) == ("anthropic", kind, retryable)
    assert KEY not in str(error)
    assert len(faults.requests) == 1  # the SDK does not retry: failover decides


async def test_error_event_mid_stream_is_a_retryable_server_error():
    async with fake(Faults(), fake={"stream_error": "overloaded_error"}) as llm:
        events = []
        with pytest.raises(ProviderError) as caught:
            async for event in llm.stream(HISTORY, [END_CALL_TOOL]):
                events.append(event)
    assert events == [TextDelta("Hello")]
    assert (caught.value.kind, caught.value.retryable) == ("server", True)
    assert "overloaded_error" in str(caught.value)


async def test_stream_cut_midway_is_a_retryable_connection_error():
    async with fake(Faults(cut_after_events=5)) as llm:
        with pytest.raises(ProviderError) as caught:
            await collect(llm)
    assert (caught.value.kind, caught.value.retryable) == ("connection", True)


async def test_slow_first_byte_is_a_retryable_timeout():
    async with fake(Faults(first_byte_delay_s=1.0), timeouts={"total_s": 0.2}) as llm:
        with pytest.raises(ProviderError) as caught:
            await collect(llm)
    assert (caught.value.kind, caught.value.retryable) == ("timeout", True)


async def test_nothing_listening_is_a_retryable_connection_error():
    async with running(anthropic_app(Faults())) as port:
        pass  # the port is free again
    llm = AnthropicLLM(AnthropicLLMConfig(provider="anthropic", base_url=f"http://127.0.0.1:{port}"))
    with pytest.raises(ProviderError) as caught:
        await collect(llm)
    assert (caught.value.kind, caught.value.retryable) == ("connection", True)


async def test_cancelling_the_consumer_mid_stream_closes_the_connection():
    faults = Faults(event_delay_s=0.3)
    got_first = asyncio.Event()

    async def consume(llm):
        async for event in llm.stream(HISTORY, [END_CALL_TOOL]):
            if isinstance(event, TextDelta):
                got_first.set()

    async with fake(faults) as llm:
        task = asyncio.create_task(consume(llm))
        async with asyncio.timeout(5):
            await got_first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(250):  # up to 5 s: generous, only so a regression fails instead of hanging
            if faults.disconnects:
                break
            await asyncio.sleep(0.02)
    assert faults.disconnects == 1 and faults.completed == 0


def test_missing_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(MissingCredential, match=r"^anthropic: set ANTHROPIC_API_KEY$"):
        AnthropicLLM(AnthropicLLMConfig(provider="anthropic"))
    with pytest.raises(MissingCredential, match=r"^anthropic: set CLAUDE_KEY$"):
        AnthropicLLM(AnthropicLLMConfig(provider="anthropic", api_key_env="CLAUDE_KEY"))


def test_module_name_does_not_shadow_the_sdk():
    import anthropic

    import switchboard.providers.anthropic.adapter as adapter

    assert anthropic.__name__ == "anthropic" and hasattr(anthropic, "AsyncAnthropic")
    assert adapter.anthropic is anthropic


# --- one real call over the WebSocket ------------------------------------------------------------------

CALL_CONFIG = """
pipelines:
  default:
    greeting: "Hi there."
    apology: "Sorry, trouble."
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
"""


async def place_call(llm, wav: str):
    providers = Providers(InstantSTT("what can you do"), llm, InstantTTS(ms_per_char=20))
    return await calls.place_call(parse_config(CALL_CONFIG), [CallerLine(wav=wav)], providers,
                                  hangup_timeout_s=3)


async def test_call_hears_claudes_reply(speech_wav):
    faults = Faults()
    async with fake(faults) as llm:
        result, turns = await place_call(llm, speech_wav)
    reply = turns[1]
    assert reply.transcript == "what can you do" and not reply.error
    assert reply.reply_heard == REPLY
    assert (reply.tokens_in, reply.tokens_out) == (
        anthropic_fake.INPUT_TOKENS + anthropic_fake.CACHE_READ_TOKENS,
        anthropic_fake.OUTPUT_TOKENS,
    )
    body = faults.requests[0]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]  # greeting in history
    assert result.malformed_count == 0


async def test_call_end_call_tool_speaks_the_farewell_and_hangs_up(speech_wav):
    tool = {"name": "end_call", "input": {"farewell": "Goodbye, take care!"}}
    async with fake(Faults(), fake={"reply": "", "tool_call": tool}) as llm:
        result, turns = await place_call(llm, speech_wav)
    assert result.hangup
    last = turns[-1]
    assert last.ended_call and last.reply_heard == "Goodbye, take care!"
