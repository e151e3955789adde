"""CohereLLM against a fake v2 chat API speaking the real SSE format (tests/fakes/cohere_fake.py)."""

import asyncio
import contextlib

import pytest

from switchboard.caller import CallerLine
from switchboard.config import parse_config
from switchboard.core.errors import MissingCredential, ProviderError
from switchboard.core.messages import Message, TextDelta, Tool, ToolCall, Usage
from switchboard.core.tools import END_CALL_TOOL
from switchboard.pipeline.call import Providers
from switchboard.providers.cohere import CohereLLMConfig
from switchboard.providers.cohere.adapter import CohereLLM
from switchboard.server import running
from tests import calls
from tests.fakes import cohere_fake
from tests.fakes.cohere_fake import cohere_app
from tests.fakes.common import Faults
from tests.fakes.instant import InstantSTT, InstantTTS

pytestmark = pytest.mark.timescale()  # in-process calls on instant/fake providers: tests/timescale.py

KEY = "co-test-0123456789"
REPLY = "Hello from Command. How can I help?"
HISTORY = [Message("system", "You are on the phone."), Message("user", "Hi!")]
BILLED = Usage(cohere_fake.BILLED_INPUT_TOKENS, cohere_fake.BILLED_OUTPUT_TOKENS)


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.setenv("CO_API_KEY", KEY)


@contextlib.asynccontextmanager
async def fake(faults: Faults, **config):
    """CohereLLM pointed at a running fake."""
    async with running(cohere_app(faults, **config.pop("fake", {}))) as port:
        yield CohereLLM(CohereLLMConfig(provider="cohere", base_url=f"http://127.0.0.1:{port}", **config))


async def collect(llm, messages=HISTORY, tools=(END_CALL_TOOL,)):
    return [event async for event in llm.stream(list(messages), list(tools))]


async def test_text_streams_in_order_with_billed_usage():
    faults = Faults()
    async with fake(faults) as llm:
        events = await collect(llm)
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 1 and "".join(d.text for d in deltas) == REPLY
    assert events[-1] == BILLED
    assert faults.paths == ["/v2/chat"] and faults.completed == 1


async def test_request_is_converted_to_the_v2_format():
    weather = Tool(
        "get_weather", "Weather for a city.", {"type": "object", "properties": {"city": {"type": "string"}}}
    )
    history = [
        Message("system", "You are on the phone."),
        Message("assistant", "Hi there."),
        Message("user", "What's the weather?"),
        Message(
            "assistant", "Let me check.", tool_calls=[ToolCall("call_1", "get_weather", {"city": "Paris"})]
        ),
        Message("tool", "Sunny, 21 C", tool_call_id="call_1"),
        Message("user", "And tomorrow?"),
    ]
    faults = Faults()
    async with fake(faults, model="command-r-plus-08-2024", temperature=0.4, max_tokens=120) as llm:
        await collect(llm, history, [END_CALL_TOOL, weather])
    body = faults.requests[0]
    assert body["model"] == "command-r-plus-08-2024" and body["stream"] is True
    assert body["max_tokens"] == 120 and body["temperature"] == 0.4
    assert body["messages"] == [
        {"role": "system", "content": "You are on the phone."},
        {"role": "assistant", "content": "Hi there."},
        {"role": "user", "content": "What's the weather?"},
        {
            "role": "assistant",
            "tool_plan": "Let me check.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "Sunny, 21 C"}]},
        {"role": "user", "content": "And tomorrow?"},
    ]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "end_call",
                "description": END_CALL_TOOL.description,
                "parameters": END_CALL_TOOL.parameters,
            },
        },
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city.",
                "parameters": weather.parameters,
            },
        },
    ]
    assert faults.headers[0]["authorization"] == f"Bearer {KEY}"


async def test_defaults_send_no_temperature():
    faults = Faults()
    async with fake(faults) as llm:
        await collect(llm)
    assert "temperature" not in faults.requests[0] and faults.requests[0]["max_tokens"] == 300


async def test_tool_call_streamed_in_fragments_becomes_one_tool_call():
    faults = Faults()
    tool = {"name": "end_call", "arguments": {"farewell": "Goodbye, take care!"}}
    async with fake(faults, fake={"tool_call": tool}) as llm:
        events = await collect(llm)
    # The tool plan ("I will end the call.") is not spoken.
    assert events == [ToolCall("end_call_fake01", "end_call", {"farewell": "Goodbye, take care!"}), BILLED]


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (429, "rate_limit", True),
        (500, "server", True),
        (503, "server", True),
        (401, "auth", False),
        (498, "auth", False),
        (400, "bad_request", False),
    ],
)
async def test_http_errors_map_to_kinds(status, kind, retryable):
    faults = Faults(status=status)
    async with fake(faults) as llm:
        with pytest.raises(ProviderError) as caught:
            await collect(llm)
    error = caught.value
    assert (error.vendor, error.kind, error.retryable) == ("cohere", kind, retryable)
    assert KEY not in str(error)
    assert len(faults.requests) == 1  # the SDK does not retry: failover decides


async def test_stream_cut_midway_is_a_retryable_connection_error():
    async with fake(Faults(cut_after_events=4)) as llm:
        events = []
        with pytest.raises(ProviderError) as caught:
            async for event in llm.stream(HISTORY, [END_CALL_TOOL]):
                events.append(event)
    assert events and all(isinstance(e, TextDelta) for e in events)
    assert (caught.value.kind, caught.value.retryable) == ("connection", True)


async def test_slow_first_byte_is_a_retryable_timeout():
    async with fake(Faults(first_byte_delay_s=1.0), timeouts={"total_s": 0.2}) as llm:
        with pytest.raises(ProviderError) as caught:
            await collect(llm)
    assert (caught.value.kind, caught.value.retryable) == ("timeout", True)


async def test_nothing_listening_is_a_retryable_connection_error():
    async with running(cohere_app(Faults())) as port:
        pass  # the port is free again
    llm = CohereLLM(CohereLLMConfig(provider="cohere", base_url=f"http://127.0.0.1:{port}"))
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
    monkeypatch.delenv("CO_API_KEY")
    with pytest.raises(MissingCredential, match=r"^cohere: set CO_API_KEY$"):
        CohereLLM(CohereLLMConfig(provider="cohere"))
    with pytest.raises(MissingCredential, match=r"^cohere: set COHERE_KEY$"):
        CohereLLM(CohereLLMConfig(provider="cohere", api_key_env="COHERE_KEY"))


def test_module_name_does_not_shadow_the_sdk():
    import cohere

    import switchboard.providers.cohere.adapter as adapter

    assert cohere.__name__ == "cohere" and hasattr(cohere, "AsyncClientV2")
    assert adapter.cohere is cohere


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


async def test_call_hears_commands_reply(speech_wav):
    faults = Faults()
    async with fake(faults) as llm:
        result, turns = await place_call(llm, speech_wav)
    reply = turns[1]
    assert reply.transcript == "what can you do" and not reply.error
    assert reply.reply_heard == REPLY
    assert (reply.tokens_in, reply.tokens_out) == (BILLED.input_tokens, BILLED.output_tokens)
    roles = [m["role"] for m in faults.requests[0]["messages"]]
    assert roles == ["system", "assistant", "user"]  # the greeting is in the history
    assert result.malformed_count == 0


async def test_call_end_call_tool_speaks_the_farewell_and_hangs_up(speech_wav):
    tool = {"name": "end_call", "arguments": {"farewell": "Goodbye, take care!"}}
    async with fake(Faults(), fake={"tool_call": tool}) as llm:
        result, turns = await place_call(llm, speech_wav)
    assert result.hangup
    last = turns[-1]
    assert last.ended_call and last.reply_heard == "Goodbye, take care!"
