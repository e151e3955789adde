"""The Gemini LLM against a fake Gemini API speaking the real streamGenerateContent SSE wire format."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from switchboard.caller import CallerLine
from switchboard.config import parse_config
from switchboard.core.errors import MissingCredential, ProviderError
from switchboard.core.messages import LLMEvent, Message, TextDelta, ToolCall, Usage
from switchboard.core.tools import END_CALL_TOOL
from switchboard.pipeline.call import Providers
from switchboard.providers.gemini import GeminiLLMConfig
from switchboard.providers.gemini.adapter import GeminiLLM
from switchboard.server import running
from tests import calls
from tests.fakes import gemini_fake
from tests.fakes.common import Faults
from tests.fakes.instant import InstantSTT, InstantTTS

pytestmark = pytest.mark.timescale()  # in-process calls on instant/fake providers: tests/timescale.py

KEY = "test-gemini-key-0123456789"
REPLY = "Hello there. How can I help you today?"


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_GENAI_USE_VERTEXAI", raising=False)
    monkeypatch.delenv("GOOGLE_GENAI_API_VERSION", raising=False)


@contextlib.asynccontextmanager
async def fake(faults: Faults, **kwargs) -> AsyncIterator[str]:
    async with running(gemini_fake.create_app(faults, **kwargs)) as port:
        yield f"http://127.0.0.1:{port}"


_made: list[GeminiLLM] = []


@pytest.fixture(autouse=True)
async def close_pools():
    yield
    while _made:
        await _made.pop().aclose()


def llm(base_url: str, **kwargs) -> GeminiLLM:
    model = GeminiLLM(GeminiLLMConfig(provider="gemini", base_url=base_url, **kwargs))
    _made.append(model)
    return model


async def collect(model: GeminiLLM, messages: list[Message] | None = None) -> list[LLMEvent]:
    return [event async for event in model.stream(messages or [Message("user", "hi")], [END_CALL_TOOL])]


async def eventually(condition, within_s: float = 5.0) -> bool:
    """Whether `condition()` came true within `within_s` (a bound on a hang, not a latency figure)."""
    for _ in range(int(within_s / 0.01)):
        if condition():
            return True
        await asyncio.sleep(0.01)
    return condition()


async def test_text_streams_in_order_and_usage_is_read():
    faults = Faults()
    async with fake(faults, reply=REPLY, usage=(21, 9)) as url:
        events = await collect(llm(url))
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 1 and "".join(deltas) == REPLY
    assert events[-1] == Usage(input_tokens=21, output_tokens=9)
    assert faults.completed == 1 and faults.disconnects == 0


async def test_request_is_converted_to_gemini_contents():
    faults = Faults()
    history = [
        Message("system", "You are a phone bot."),
        Message("user", "Hi, what time is it?"),
        Message("assistant", "It is noon."),
        Message("user", "Thanks."),
        Message("assistant", "", tool_calls=[ToolCall("call-7", "end_call", {"farewell": "Bye."})]),
        Message("tool", '{"ok": true}', tool_call_id="call-7"),
        Message("user", "Wait, one more thing."),
    ]
    async with fake(faults) as url:
        await collect(llm(url, temperature=0.4, max_tokens=120), history)
    body = faults.requests[0]
    assert faults.paths == ["/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"]
    assert faults.headers[0]["x-goog-api-key"] == KEY and KEY not in faults.paths[0]
    assert body["systemInstruction"]["parts"] == [{"text": "You are a phone bot."}]
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user", "model", "user"]
    assert body["contents"][0]["parts"] == [{"text": "Hi, what time is it?"}]
    assert body["contents"][3]["parts"] == [
        {"functionCall": {"id": "call-7", "name": "end_call", "args": {"farewell": "Bye."}}}
    ]
    # The tool result and the next user line are one user turn; the response names its function.
    assert body["contents"][4]["parts"] == [
        {"functionResponse": {"id": "call-7", "name": "end_call", "response": {"ok": True}}},
        {"text": "Wait, one more thing."},
    ]
    (declaration,) = body["tools"][0]["functionDeclarations"]
    assert declaration["name"] == "end_call" and declaration["description"] == END_CALL_TOOL.description
    assert declaration["parameters_json_schema"] == END_CALL_TOOL.parameters
    assert body["generationConfig"] == {"temperature": 0.4, "maxOutputTokens": 120}


async def test_function_call_becomes_a_tool_call():
    faults = Faults()
    call = {"name": "end_call", "args": {"farewell": "Goodbye, take care."}}
    async with fake(faults, reply="", function_call=call) as url:
        events = await collect(llm(url))
    (tool_call,) = [e for e in events if isinstance(e, ToolCall)]
    assert tool_call.name == "end_call" and tool_call.arguments == {"farewell": "Goodbye, take care."}
    assert tool_call.id  # Gemini sent none: one is made up
    assert not [e for e in events if isinstance(e, TextDelta)]
    assert isinstance(events[-1], Usage)


@pytest.mark.parametrize(("status", "kind", "retryable"), [
    (429, "rate_limit", True), (500, "server", True), (503, "server", True),
    (401, "auth", False), (403, "auth", False), (400, "bad_request", False),
])
async def test_http_errors_map_to_kinds(status, kind, retryable):
    faults = Faults(status=status)
    async with fake(faults) as url:
        with pytest.raises(ProviderError) as caught:
            await collect(llm(url))
    error = caught.value
    assert (error.vendor, error.kind, error.retryable) == ("gemini", kind, retryable)
    assert str(status) in str(error) and KEY not in str(error)
    assert len(faults.requests) == 1  # the SDK's own retries are off


async def test_an_invalid_key_is_auth_although_google_says_400():
    async with fake(Faults(status=400), error_details=gemini_fake.INVALID_KEY) as url:
        with pytest.raises(ProviderError) as caught:
            await collect(llm(url))
    assert caught.value.kind == "auth" and not caught.value.retryable


async def test_a_stream_cut_midway_is_a_retryable_connection_error():
    faults = Faults(cut_after_events=2)
    heard: list[str] = []
    async with fake(faults, reply=REPLY) as url:
        with pytest.raises(ProviderError) as caught:
            async for event in llm(url).stream([Message("user", "hi")], []):
                if isinstance(event, TextDelta):
                    heard.append(event.text)
    assert caught.value.kind == "connection" and caught.value.retryable
    assert heard and REPLY.startswith("".join(heard)) and "".join(heard) != REPLY


async def test_a_stream_that_ends_without_finishing_is_a_connection_error():
    async with fake(Faults(), finish=False) as url:
        with pytest.raises(ProviderError) as caught:
            await collect(llm(url))
    assert caught.value.kind == "connection" and caught.value.retryable


async def test_no_first_chunk_in_time_is_a_timeout():
    faults = Faults(first_byte_delay_s=1.5)
    async with fake(faults) as url, asyncio.timeout(4):
        with pytest.raises(ProviderError) as caught:
            await collect(llm(url, timeouts={"first_token_s": 0.2}))
    assert caught.value.kind == "timeout" and caught.value.retryable


async def test_cancelling_the_turn_mid_stream_closes_the_connection():
    faults = Faults(event_delay_s=0.3)
    first = asyncio.Event()

    async def turn(model: GeminiLLM) -> None:
        async for _ in model.stream([Message("user", "hi")], []):
            first.set()

    async with fake(faults, reply=" ".join(["word"] * 40)) as url:
        task = asyncio.create_task(turn(llm(url)))
        async with asyncio.timeout(5):
            await first.wait()
        task.cancel()  # while it waits for the next chunk: the barge-in case
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await eventually(lambda: faults.disconnects == 1)
    assert faults.completed == 0


async def test_closing_the_stream_while_the_consumer_is_elsewhere_closes_the_connection():
    faults = Faults(event_delay_s=0.3)
    first = asyncio.Event()

    async def turn(model: GeminiLLM) -> None:
        async with contextlib.aclosing(model.stream([Message("user", "hi")], [])) as events:
            async for _ in events:
                first.set()
                await asyncio.sleep(30)  # e.g. speaking the first sentence

    async with fake(faults, reply=" ".join(["word"] * 40)) as url:
        task = asyncio.create_task(turn(llm(url)))
        async with asyncio.timeout(5):
            await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await eventually(lambda: faults.disconnects == 1)
    assert faults.completed == 0


def test_missing_key_names_the_variables(monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY")
    with pytest.raises(MissingCredential, match=r"^gemini: set GEMINI_API_KEY or GOOGLE_API_KEY$"):
        GeminiLLM(GeminiLLMConfig(provider="gemini"))
    with pytest.raises(MissingCredential, match=r"^gemini: set MY_GEMINI_KEY$"):
        GeminiLLM(GeminiLLMConfig(provider="gemini", api_key_env="MY_GEMINI_KEY"))
    monkeypatch.setenv("GOOGLE_API_KEY", KEY)
    assert GeminiLLM(GeminiLLMConfig(provider="gemini")).model == "gemini-2.5-flash"


# --- a whole call over the real WebSocket ------------------------------------------------------------------

CALL_CONFIG = """
pipelines:
  default:
    greeting: "Hi there."
    system_prompt: "You are a phone bot. Be brief."
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
"""


async def place_call(providers: Providers, wav: str):
    return await calls.place_call(parse_config(CALL_CONFIG), [CallerLine(wav=wav)], providers,
                                  hangup_timeout_s=1)


async def test_a_call_hears_geminis_reply(speech_wav):
    faults = Faults()
    async with fake(faults, reply="It is noon. Anything else?", usage=(30, 7)) as url:
        providers = Providers(InstantSTT("what time is it"), llm(url), InstantTTS())
        _, turns = await place_call(providers, speech_wav)
    reply = turns[1]
    assert reply.transcript == "what time is it" and not reply.error
    assert reply.reply_heard == "It is noon. Anything else?"
    assert (reply.tokens_in, reply.tokens_out) == (30, 7)
    body = faults.requests[0]
    assert body["systemInstruction"]["parts"] == [{"text": "You are a phone bot. Be brief."}]
    assert body["contents"][-1] == {"role": "user", "parts": [{"text": "what time is it"}]}


async def test_a_call_ends_when_gemini_calls_end_call(speech_wav):
    call = {"name": "end_call", "args": {"farewell": "Goodbye, take care."}}
    async with fake(Faults(), reply="", function_call=call) as url:
        providers = Providers(InstantSTT("that's all, bye"), llm(url), InstantTTS())
        result, turns = await place_call(providers, speech_wav)
    assert result.hangup
    last = turns[-1]
    assert last.ended_call and last.reply_heard == "Goodbye, take care."
