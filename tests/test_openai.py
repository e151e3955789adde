"""The OpenAI adapters (providers/openai.py) through the real SDK against a fake of OpenAI's HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass

import numpy as np
import pytest

from switchboard.audio.wav import write_wav
from switchboard.caller import CallerLine, run_call
from switchboard.config import parse_config
from switchboard.core.errors import MissingCredential, ProviderError
from switchboard.core.messages import Message, TextDelta, Tool, ToolCall, Usage
from switchboard.core.metrics import TurnMetrics
from switchboard.core.settings import Timeouts
from switchboard.core.tools import END_CALL_TOOL
from switchboard.pipeline.call import Providers
from switchboard.providers.openai import OpenAILLMConfig, OpenAISTTConfig, OpenAITTSConfig
from switchboard.providers.openai.adapter import OpenAILLM, OpenAISTT, OpenAITTS
from switchboard.server import create_app, running
from tests.fakes.common import Faults
from tests.fakes.openai_fake import OpenAIScript, make_app
from tests.speech import quiet, speech_like

pytestmark = pytest.mark.timescale()  # in-process calls on instant/fake providers: tests/timescale.py

KEY = "sk-test-0123456789abcdef"


@dataclass
class Fake:
    faults: Faults
    script: OpenAIScript
    base_url: str


@pytest.fixture(autouse=True)
def openai_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


@pytest.fixture
async def fake():
    faults, script = Faults(), OpenAIScript()
    async with running(make_app(faults, script)) as port:
        yield Fake(faults, script, f"http://127.0.0.1:{port}/v1")


def llm(fake: Fake, **options) -> OpenAILLM:
    return OpenAILLM(OpenAILLMConfig(provider="openai", base_url=fake.base_url, **options))


def stt(fake: Fake, **options) -> OpenAISTT:
    return OpenAISTT(OpenAISTTConfig(provider="openai", base_url=fake.base_url, **options))


def tts(fake: Fake, **options) -> OpenAITTS:
    return OpenAITTS(OpenAITTSConfig(provider="openai", base_url=fake.base_url, **options))


async def collect(provider: OpenAILLM, messages=None, tools=()) -> list:
    messages = messages or [Message("system", "Be brief."), Message("user", "hello")]
    async with asyncio.timeout(10):
        return [event async for event in provider.stream(messages, list(tools))]


async def raised(awaitable) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        async with asyncio.timeout(10):
            await awaitable
    return info.value


async def until(condition, within_s: float = 2.0) -> None:
    """Poll `condition` (a server-side count) for a short while; fail if it never holds."""
    for _ in range(round(within_s / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    assert condition()


# --- LLM ---------------------------------------------------------------------------------------------


async def test_text_streams_in_order_then_usage(fake):
    fake.script.reply = "Sure. The office opens at nine and closes at five."
    events = await collect(llm(fake))
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(deltas) == 10 and "".join(deltas) == fake.script.reply
    usage = fake.script.chunks_sent[0][-1]["usage"]
    assert events[-1] == Usage(usage["prompt_tokens"], usage["completion_tokens"])
    assert [type(e) for e in events].count(Usage) == 1


async def test_request_body_is_openai_chat_format(fake):
    history = [
        Message("system", "You are on the phone."),
        Message("user", "What's the weather in Paris?"),
        Message("assistant", "", tool_calls=[ToolCall("call_1", "weather", {"city": "Paris"})]),
        Message("tool", '{"sky": "clear"}', tool_call_id="call_1"),
        Message("assistant", "It is clear."),
        Message("user", "Thanks."),
    ]
    city = {"type": "object", "properties": {"city": {"type": "string"}}}
    weather = Tool("weather", "Today's weather.", city)
    await collect(llm(fake, model="gpt-4.1-mini", temperature=0.3, max_tokens=120), history,
                  [weather, END_CALL_TOOL])
    body = fake.faults.requests[0]
    assert fake.faults.paths == ["/v1/chat/completions"]
    assert fake.faults.headers[0]["authorization"] == f"Bearer {KEY}"
    assert body["model"] == "gpt-4.1-mini" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["temperature"] == 0.3
    assert body["max_tokens"] == 120 and "max_completion_tokens" not in body  # base_url: a compatible server
    assert body["messages"] == [
        {"role": "system", "content": "You are on the phone."},
        {"role": "user", "content": "What's the weather in Paris?"},
        {"role": "assistant", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "clear"}'},
        {"role": "assistant", "content": "It is clear."},
        {"role": "user", "content": "Thanks."},
    ]
    assert body["tools"] == [
        {"type": "function", "function": {"name": "weather", "description": "Today's weather.",
                                          "parameters": weather.parameters}},
        {"type": "function", "function": {"name": "end_call", "description": END_CALL_TOOL.description,
                                          "parameters": END_CALL_TOOL.parameters}},
    ]
    # The adapter skips chat.completions.create's walk of the body against its typed parameters (~0.3 ms
    # of CPU a message): what that walk would send is exactly this body.
    from openai._utils._transform import async_maybe_transform
    from openai.types.chat.completion_create_params import CompletionCreateParamsStreaming

    assert await async_maybe_transform(body, CompletionCreateParamsStreaming) == body


async def test_no_tools_and_no_temperature_are_omitted(fake):
    await collect(llm(fake))
    body = fake.faults.requests[0]
    assert "tools" not in body and "temperature" not in body and body["max_tokens"] == 300


async def test_openai_itself_gets_max_completion_tokens(fake, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)  # the SDK's own default; base_url unset in config
    await collect(OpenAILLM(OpenAILLMConfig(provider="openai", max_tokens=80)))
    body = fake.faults.requests[0]
    assert body["max_completion_tokens"] == 80 and "max_tokens" not in body


async def test_streamed_tool_calls_are_assembled_from_fragments(fake):
    fake.script.reply = ""
    fake.script.tool_calls = [("weather", {"city": "São Paulo", "days": 2}),
                              ("end_call", {"farewell": "Goodbye, and thanks for calling!"})]
    events = await collect(llm(fake), tools=[END_CALL_TOOL])
    sent = fake.script.chunks_sent[0]
    fragments = [c for c in sent if c["choices"] and "tool_calls" in c["choices"][0]["delta"]]
    assert len(fragments) > 8  # each call's arguments really came in several pieces
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert calls == [
        ToolCall("call_fake0", "weather", {"city": "São Paulo", "days": 2}),
        ToolCall("call_fake1", "end_call", {"farewell": "Goodbye, and thanks for calling!"}),
    ]
    assert not [e for e in events if isinstance(e, TextDelta)] and isinstance(events[-1], Usage)


async def test_tool_call_with_bad_json_is_a_bad_request(fake):
    fake.script.tool_calls = [("end_call", '{"farewell": "Bye')]
    error = await raised(collect(llm(fake), tools=[END_CALL_TOOL]))
    assert (error.vendor, error.kind, error.retryable) == ("openai", "bad_request", False)


@pytest.mark.parametrize(("status", "kind", "retryable"), [
    (429, "rate_limit", True), (500, "server", True), (503, "server", True),
    (401, "auth", False), (403, "auth", False), (400, "bad_request", False), (404, "bad_request", False),
])
async def test_http_errors_map_to_provider_errors(fake, status, kind, retryable):
    fake.faults.status = status
    error = await raised(collect(llm(fake)))
    assert (error.vendor, error.kind, error.retryable) == ("openai", kind, retryable)
    assert str(status) in str(error) and KEY not in str(error)
    assert len(fake.faults.requests) == 1  # the SDK does not retry: the resilience wrapper does


async def test_wrong_key_is_auth_and_the_key_is_not_in_the_message(fake):
    fake.script.api_key = "sk-the-right-one"
    error = await raised(collect(llm(fake)))
    assert error.kind == "auth" and not error.retryable and KEY not in str(error)


async def test_fail_times_then_service_resumes(fake):
    fake.faults.status, fake.faults.fail_times = 429, 1
    assert (await raised(collect(llm(fake)))).kind == "rate_limit"
    events = await collect(llm(fake))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == fake.script.reply


async def test_stream_cut_midway_is_a_retryable_connection_error(fake):
    fake.faults.cut_after_events = 3
    provider, got = llm(fake), []

    async def consume():
        async for event in provider.stream([Message("user", "hi")], []):
            got.append(event)

    error = await raised(consume())
    assert (error.kind, error.retryable) == ("connection", True)
    assert "".join(e.text for e in got) == "Hello there."  # what came before the cut was delivered


async def test_stream_closed_cleanly_before_its_end_is_a_connection_error(fake):
    fake.script.end_early_after = 4
    error = await raised(collect(llm(fake)))
    assert (error.kind, error.retryable) == ("connection", True)


async def test_unreachable_server_is_a_connection_error():
    provider = OpenAILLM(OpenAILLMConfig(provider="openai", base_url="http://127.0.0.1:9/v1"))
    error = await raised(collect(provider))
    assert (error.kind, error.retryable) == ("connection", True)


async def test_sdk_timeout_is_a_timeout_error(fake):
    fake.faults.first_byte_delay_s = 1.0
    timeouts = Timeouts(connect_s=1, total_s=0.2)
    error = await raised(collect(llm(fake, timeouts=timeouts)))
    assert (error.kind, error.retryable) == ("timeout", True)


@pytest.mark.parametrize("busy", [False, True], ids=["waiting-for-the-stream", "consumer-busy"])
async def test_cancelling_the_turn_mid_stream_closes_the_connection(fake, busy):
    """Barge-in cancels the turn either while it waits for the next chunk or while it is busy elsewhere
    (speaking a sentence) with the stream suspended; the call then closes the stream (aclosing)."""
    fake.script.reply = " ".join(["word"] * 200)
    fake.faults.event_delay_s = 0.02
    provider, first = llm(fake), asyncio.Event()

    async def turn():
        async with contextlib.aclosing(provider.stream([Message("user", "talk")], [])) as events:
            async for event in events:
                if isinstance(event, TextDelta):
                    first.set()
                    if busy:
                        await asyncio.sleep(30)

    task = asyncio.create_task(turn())
    async with asyncio.timeout(5):
        await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: fake.faults.disconnects == 1)
    assert fake.faults.completed == 0


# --- STT ---------------------------------------------------------------------------------------------


async def test_stt_uploads_a_16khz_mono_wav_and_returns_the_text(fake):
    provider = stt(fake, model="whisper-1", language="en", prompt="Switchboard, Twilio")
    assert (provider.vendor, provider.model, provider.sample_rate) == ("openai", "whisper-1", 16000)
    async with asyncio.timeout(10):
        transcript = await provider.transcribe(speech_like(1.25, rate=16000))
    assert transcript.text == "what time is it"
    assert fake.faults.paths == ["/v1/audio/transcriptions"]
    form = fake.faults.requests[0]
    assert {k: form[k] for k in ("model", "language", "prompt", "response_format")} == {
        "model": "whisper-1", "language": "en", "prompt": "Switchboard, Twilio", "response_format": "json"}
    assert form["file"]["filename"].endswith(".wav")
    upload = fake.script.uploads[0]
    assert (upload["sample_rate"], upload["channels"], upload["sample_width"]) == (16000, 1, 2)
    assert upload["duration_s"] == pytest.approx(1.25)


async def test_stt_sends_no_language_or_prompt_when_unset(fake):
    await stt(fake).transcribe(speech_like(0.5, rate=16000))
    form = fake.faults.requests[0]
    assert "language" not in form and "prompt" not in form and form["model"] == "gpt-4o-mini-transcribe"


async def test_stt_never_sends_under_a_tenth_of_a_second(fake):
    transcript = await stt(fake).transcribe(speech_like(0.09, rate=16000))
    assert transcript.text == "" and fake.faults.requests == []


async def test_stt_errors_map_too(fake):
    fake.faults.status = 500
    error = await raised(stt(fake).transcribe(speech_like(0.5, rate=16000)))
    assert (error.kind, error.retryable) == ("server", True)


# --- TTS ---------------------------------------------------------------------------------------------


async def test_tts_streams_24khz_int16_exactly_as_sent(fake):
    provider = tts(fake, voice="coral", speed=1.25, instructions="Warm and calm.")
    assert (provider.vendor, provider.model, provider.sample_rate) == ("openai", "gpt-4o-mini-tts", 24000)
    text = "Your table for two is booked for eight o'clock tonight."
    async with asyncio.timeout(10):
        chunks = [chunk async for chunk in provider.stream(text)]
    assert len(chunks) > 1 and all(c.dtype == np.int16 for c in chunks)
    sent = fake.script.speech_sent[0]
    assert len(sent) == round(len(text) * 0.05 / 1.25 * 24000)
    np.testing.assert_array_equal(np.concatenate(chunks), sent)  # odd-sized chunks joined back exactly
    assert fake.faults.requests[0] == {"model": "gpt-4o-mini-tts", "voice": "coral", "input": text,
                                       "response_format": "pcm", "speed": 1.25,
                                       "instructions": "Warm and calm."}


async def test_tts_omits_unset_instructions_and_skips_empty_text(fake):
    provider = tts(fake, model="tts-1")
    assert [c async for c in provider.stream("  ")] == [] and fake.faults.requests == []
    [c async for c in provider.stream("Hi.")]
    assert "instructions" not in fake.faults.requests[0] and fake.faults.requests[0]["model"] == "tts-1"


async def test_tts_errors_and_cuts(fake):
    fake.faults.status, fake.faults.fail_times = 429, 1
    error = await raised(anext(tts(fake).stream("Hello.")))
    assert (error.kind, error.retryable) == ("rate_limit", True)
    fake.faults.cut_after_events = 1

    async def consume():
        return [c async for c in tts(fake).stream("A sentence long enough for several chunks of audio.")]

    error = await raised(consume())
    assert (error.kind, error.retryable) == ("connection", True)


async def test_cancelling_tts_mid_stream_closes_the_connection(fake):
    fake.faults.event_delay_s = 0.02
    provider, first = tts(fake), asyncio.Event()

    async def turn():
        async for _ in provider.stream("A long sentence that takes many chunks to send. " * 4):
            first.set()

    task = asyncio.create_task(turn())
    async with asyncio.timeout(5):
        await first.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await until(lambda: fake.faults.disconnects == 1)
    assert fake.script.speech_sent == []


# --- credentials -------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [llm, stt, tts])
def test_missing_key_is_a_startup_error(monkeypatch, make):
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(MissingCredential, match=r"^openai: set OPENAI_API_KEY$"):
        make(Fake(Faults(), OpenAIScript(), None))  # api.openai.com


async def test_api_key_env_override(fake, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(MissingCredential, match=r"^openai: set GROQ_API_KEY$"):
        llm(fake, api_key_env="GROQ_API_KEY")
    monkeypatch.setenv("GROQ_API_KEY", "gsk-other")
    await collect(llm(fake, api_key_env="GROQ_API_KEY"))
    assert fake.faults.headers[0]["authorization"] == "Bearer gsk-other"


# --- a whole call --------------------------------------------------------------------------------------

CALL = """
pipelines:
  default:
    greeting: "Hi there."
    apology: "Sorry, trouble."
    stt: {{provider: openai, model: whisper-1, language: en, base_url: "{url}"}}
    llm: {{provider: openai, model: gpt-4o-mini, base_url: "{url}"}}
    tts: {{provider: openai, voice: alloy, base_url: "{url}"}}
"""


async def test_a_phone_call_through_all_three_openai_stages(fake, tmp_path):
    fake.script.reply = "It is noon. Anything else?"
    fake.script.ms_per_char = 40
    line = tmp_path / "line.wav"
    write_wav(line, np.concatenate([quiet(0.1), speech_like(1.2), quiet(0.1, seed=1)]), 8000)
    config = parse_config(CALL.format(url=fake.base_url))
    pipeline = config.pipelines["default"]
    providers = Providers(OpenAISTT(pipeline.stt), OpenAILLM(pipeline.llm), OpenAITTS(pipeline.tts))
    turns: list[TurnMetrics] = []
    app = create_app(config, on_turn=turns.append, providers={"default": providers})
    async with running(app) as port:
        result = await run_call(f"ws://127.0.0.1:{port}/media-stream", [CallerLine(wav=str(line))],
                                hangup_timeout_s=3, on_event=lambda event: None)
        await until(lambda: app.state.calls == {})

    greeting, reply = turns[0], turns[1]
    assert greeting.reply_heard == "Hi there."
    assert reply.transcript == "what time is it" and not reply.error
    assert reply.reply_heard == "It is noon. Anything else?"
    assert (reply.tokens_in, reply.tokens_out) == (
        fake.script.chunks_sent[0][-1]["usage"]["prompt_tokens"], 5)
    assert 1.2 <= fake.script.uploads[0]["duration_s"] <= 1.8  # 16 kHz WAV of about the caller's line
    chat = fake.faults.requests[fake.faults.paths.index("/v1/chat/completions")]
    assert chat["messages"][-1] == {"role": "user", "content": "what time is it"}
    assert [t["function"]["name"] for t in chat["tools"]] == ["end_call"]
    # Every sample of 24 kHz PCM the fake sent reached the caller at 8 kHz: same duration.
    spoken = [r["input"] for r in fake.faults.requests if "input" in r]
    assert spoken == ["Hi there.", "It is noon.", "Anything else?"]
    sent_s = sum(len(pcm) for pcm in fake.script.speech_sent) / 24000
    assert result.bot_audio_received_s == pytest.approx(sent_s, abs=0.02 * len(spoken) + 0.01)
    assert result.malformed_count == 0
    assert json.dumps(fake.faults.requests).count(KEY) == 0


def test_a_local_openai_compatible_server_needs_no_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    OpenAILLM(OpenAILLMConfig(provider="openai", base_url="http://localhost:11434/v1", model="llama3.1"))
    with pytest.raises(MissingCredential, match="openai: set OPENAI_API_KEY"):
        OpenAILLM(OpenAILLMConfig(provider="openai", base_url="https://api.openai.com/v1"))
