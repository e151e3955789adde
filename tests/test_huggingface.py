"""The Hugging Face LLM against a fake TGI / Inference Providers server speaking OpenAI-style chat chunks."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import httpx2
import pytest

from switchboard.caller import CallerLine
from switchboard.config import parse_config
from switchboard.core.errors import MissingCredential, ProviderError
from switchboard.core.messages import LLMEvent, Message, TextDelta, ToolCall, Usage
from switchboard.core.tools import END_CALL_TOOL
from switchboard.pipeline.call import Providers
from switchboard.providers.huggingface import HuggingFaceLLMConfig
from switchboard.providers.huggingface.adapter import HuggingFaceLLM
from switchboard.server import running
from tests import calls
from tests.fakes import huggingface_fake
from tests.fakes.common import Faults
from tests.fakes.instant import InstantSTT, InstantTTS

pytestmark = pytest.mark.timescale()  # in-process calls on instant/fake providers: tests/timescale.py

TOKEN = "hf_testtoken0123456789"
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
REPLY = "Hello there. How can I help you today?"
FAREWELL = {"name": "end_call", "arguments": {"farewell": "Goodbye, take care."}}


@pytest.fixture(autouse=True)
def token(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)


@contextlib.asynccontextmanager
async def fake(faults: Faults, **kwargs) -> AsyncIterator[str]:
    async with running(huggingface_fake.create_app(faults, **kwargs)) as port:
        yield f"http://127.0.0.1:{port}"


_made: list[HuggingFaceLLM] = []


@pytest.fixture(autouse=True)
async def close_pools():
    yield
    while _made:
        await _made.pop().aclose()


def llm(base_url: str | None, **kwargs) -> HuggingFaceLLM:
    model = HuggingFaceLLM(HuggingFaceLLMConfig(provider="huggingface", base_url=base_url, **kwargs))
    _made.append(model)
    return model


async def collect(model: HuggingFaceLLM, messages: list[Message] | None = None) -> list[LLMEvent]:
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
    async with fake(faults, reply=REPLY, usage=(17, 9)) as url:
        events = await collect(llm(url))
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 1 and "".join(deltas) == REPLY
    assert events[-1] == Usage(input_tokens=17, output_tokens=9)
    assert faults.completed == 1 and faults.disconnects == 0


async def test_request_is_converted_to_openai_messages():
    faults = Faults()
    history = [
        Message("system", "You are a phone bot."),
        Message("user", "Hi, what time is it?"),
        Message("assistant", "It is noon."),
        Message("assistant", "", tool_calls=[ToolCall("call-7", "end_call", {"farewell": "Bye."})]),
        Message("tool", "done", tool_call_id="call-7"),
        Message("user", "Wait, one more thing."),
    ]
    async with fake(faults) as url:
        await collect(llm(url, temperature=0.4, max_tokens=120), history)
    body = faults.requests[0]
    assert faults.paths == ["/v1/chat/completions"]  # the SDK's route for a base_url (TGI)
    assert faults.headers[0]["authorization"] == f"Bearer {TOKEN}"
    assert body["model"] == MODEL and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert (body["max_tokens"], body["temperature"]) == (120, 0.4)
    assert body["messages"] == [
        {"role": "system", "content": "You are a phone bot."},
        {"role": "user", "content": "Hi, what time is it?"},
        {"role": "assistant", "content": "It is noon."},
        {"role": "assistant", "tool_calls": [{"id": "call-7", "type": "function", "function": {
            "name": "end_call", "arguments": json.dumps({"farewell": "Bye."})}}]},
        {"role": "tool", "content": "done", "tool_call_id": "call-7"},
        {"role": "user", "content": "Wait, one more thing."},
    ]
    assert body["tools"] == [{"type": "function", "function": {"name": "end_call",
        "description": END_CALL_TOOL.description, "parameters": END_CALL_TOOL.parameters}}]
    assert body["tool_choice"] == "auto"


@pytest.mark.parametrize("style", ["openai", "object"])
async def test_tool_call_fragments_or_object_become_one_tool_call(style):
    async with fake(Faults(), reply="", tool_call=FAREWELL, tool_style=style) as url:
        events = await collect(llm(url))
    (call,) = [e for e in events if isinstance(e, ToolCall)]
    assert call.name == "end_call" and call.arguments == {"farewell": "Goodbye, take care."} and call.id
    assert isinstance(events[-1], Usage)


@pytest.mark.parametrize(("status", "kind", "retryable"), [
    (429, "rate_limit", True), (500, "server", True), (503, "server", True),
    (401, "auth", False), (403, "auth", False), (400, "bad_request", False), (422, "bad_request", False),
])
async def test_http_errors_map_to_kinds(status, kind, retryable):
    faults = Faults(status=status)
    async with fake(faults) as url:
        with pytest.raises(ProviderError) as caught:
            await collect(llm(url))
    error = caught.value
    assert (error.vendor, error.kind, error.retryable) == ("huggingface", kind, retryable)
    assert str(status) in str(error) and TOKEN not in str(error)
    assert len(faults.requests) == 1


async def test_an_error_event_mid_stream_is_a_server_error():
    event = {"error": "Request failed during generation: CUDA out of memory", "error_type": "generation"}
    async with fake(Faults(), error_event=event) as url:
        with pytest.raises(ProviderError) as caught:
            await collect(llm(url))
    assert caught.value.kind == "server" and caught.value.retryable


async def test_a_stream_cut_midway_is_a_retryable_connection_error():
    heard: list[str] = []
    async with fake(Faults(cut_after_events=3), reply=REPLY) as url:
        with pytest.raises(ProviderError) as caught:
            async for event in llm(url).stream([Message("user", "hi")], []):
                if isinstance(event, TextDelta):
                    heard.append(event.text)
    assert caught.value.kind == "connection" and caught.value.retryable
    assert heard and REPLY.startswith("".join(heard)) and "".join(heard) != REPLY


async def test_no_first_chunk_in_time_is_a_timeout():
    async with fake(Faults(first_byte_delay_s=1.5)) as url, asyncio.timeout(4):
        with pytest.raises(ProviderError) as caught:
            await collect(llm(url, timeouts={"first_token_s": 0.2}))
    assert caught.value.kind == "timeout" and caught.value.retryable


async def test_cancelling_the_turn_mid_stream_closes_the_connection():
    faults = Faults(event_delay_s=0.3)
    first = asyncio.Event()

    async def turn(model: HuggingFaceLLM) -> None:
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

    async def turn(model: HuggingFaceLLM) -> None:
        async with contextlib.aclosing(model.stream([Message("user", "hi")], [])) as events:
            async for _ in events:
                first.set()
                await asyncio.sleep(30)  # e.g. speaking the first sentence

    async with fake(faults, reply=" ".join(["word"] * 40)) as url:
        model = llm(url)
        task = asyncio.create_task(turn(model))
        async with asyncio.timeout(5):
            await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await eventually(lambda: faults.disconnects == 1)
        # The pooled HTTP client survives for the next turn.
        faults.event_delay_s = 0
        assert "".join(e.text for e in await collect(model) if isinstance(e, TextDelta)).startswith("word")
    assert faults.completed == 1


def test_missing_token_names_the_variable(monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(MissingCredential, match=r"^huggingface: set HF_TOKEN$"):
        HuggingFaceLLM(HuggingFaceLLMConfig(provider="huggingface"))  # Inference Providers
    with pytest.raises(MissingCredential, match=r"^huggingface: set HF_TOKEN$"):
        llm("https://abc123.us-east-1.aws.endpoints.huggingface.cloud")  # an Inference Endpoint
    with pytest.raises(MissingCredential, match=r"^huggingface: set MY_TGI_KEY$"):
        llm("http://127.0.0.1:8080", api_key_env="MY_TGI_KEY")  # named: required


async def test_a_self_hosted_tgi_needs_no_token(monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    faults = Faults()
    async with fake(faults, reply=REPLY) as url:
        events = await collect(llm(url))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == REPLY


async def test_without_base_url_the_router_gets_the_model_id(monkeypatch):
    """No network: the pooled HTTP client is swapped for one whose transport answers like the router."""
    seen: list[httpx2.Request] = []

    def router(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        body = b"".join(f"data: {json.dumps(chunk)}\n\n".encode() for chunk in huggingface_fake.chunks(
            MODEL, "Hi.", None, "openai", (3, 1)))
        body += b"data: [DONE]\n\n"
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    model = llm(None)

    async def pooled() -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=httpx2.MockTransport(router))

    monkeypatch.setattr(model, "_pooled", pooled)
    events = await collect(model)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Hi."
    assert str(seen[0].url) == "https://router.huggingface.co/v1/chat/completions"
    assert json.loads(seen[0].content)["model"] == MODEL
    assert seen[0].headers["authorization"] == f"Bearer {TOKEN}"


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


async def test_a_call_hears_the_models_reply(speech_wav):
    faults = Faults()
    async with fake(faults, reply="It is noon. Anything else?", usage=(30, 7)) as url:
        providers = Providers(InstantSTT("what time is it"), llm(url), InstantTTS())
        _, turns = await place_call(providers, speech_wav)
    reply = turns[1]
    assert reply.transcript == "what time is it" and not reply.error
    assert reply.reply_heard == "It is noon. Anything else?"
    assert (reply.tokens_in, reply.tokens_out) == (30, 7)
    messages = faults.requests[0]["messages"]
    assert messages[0] == {"role": "system", "content": "You are a phone bot. Be brief."}
    assert messages[-1] == {"role": "user", "content": "what time is it"}


async def test_a_call_ends_when_the_model_calls_end_call(speech_wav):
    async with fake(Faults(), reply="", tool_call=FAREWELL) as url:
        providers = Providers(InstantSTT("that's all, bye"), llm(url), InstantTTS())
        result, turns = await place_call(providers, speech_wav)
    assert result.hangup
    last = turns[-1]
    assert last.ended_call and last.reply_heard == "Goodbye, take care."
