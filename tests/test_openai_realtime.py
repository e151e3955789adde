"""The OpenAI Realtime adapter through the official SDK's realtime client, against the fake's WebSocket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from switchboard.core.errors import ProviderError
from switchboard.core.messages import Message
from switchboard.core.realtime import (
    BotAudio,
    BotText,
    CallerSpeechStarted,
    CallerSpeechStopped,
    CallerTranscript,
    RealtimeEvent,
    ResponseDone,
    ToolRequest,
    VendorError,
)
from switchboard.core.tools import END_CALL_TOOL
from switchboard.providers.openai import OpenAIRealtimeConfig
from switchboard.server import running
from tests.fakes.openai_realtime_fake import RealtimeScript, make_app
from tests.speech import quiet, speech_like

KEY = "sk-test-realtime-key"


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[RealtimeScript, str]]:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    script = RealtimeScript(api_key=KEY)
    async with running(make_app(script)) as port:
        yield script, f"http://127.0.0.1:{port}/v1"


def model(base_url: str, **settings: object):
    from switchboard.providers.openai.realtime import OpenAIRealtime

    return OpenAIRealtime(OpenAIRealtimeConfig(provider="openai", base_url=base_url, **settings))


async def collect(events: AsyncIterator[RealtimeEvent], until: type, limit_s: float = 3.0) -> list:
    got: list = []
    async with asyncio.timeout(limit_s):
        async for event in events:
            got.append(event)
            if isinstance(event, until):
                return got
    return got


async def test_session_settings_reach_the_server_in_the_ga_shape(fake) -> None:
    script, base_url = fake
    connection = await model(base_url, voice="alloy").connect("Be brief.", [END_CALL_TOOL])
    try:
        await connection.respond('Say exactly: "Hello there."')
        events = await collect(connection.events(), ResponseDone)
    finally:
        await connection.close()
    assert script.paths == ["/v1/realtime?model=gpt-realtime"]
    assert script.headers[0]["authorization"] == f"Bearer {KEY}"
    session = script.of_type("session.update")[0]["session"]
    assert session["instructions"] == "Be brief."
    assert session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert session["audio"]["output"] == {"format": {"type": "audio/pcmu"}, "voice": "alloy"}
    assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert session["audio"]["input"]["transcription"] == {"model": "gpt-4o-mini-transcribe"}
    assert [tool["name"] for tool in session["tools"]] == ["end_call"]
    audio = np.concatenate([event.pcm for event in events if isinstance(event, BotAudio)])
    assert len(audio) == len("Hello there.") * 60 // 20 * 160  # 8 kHz PCM, no resampling
    assert "".join(e.text for e in events if isinstance(e, BotText)) == "Hello there."
    done = events[-1]
    assert done.status == "completed" and done.usage.audio_out > 0 and done.usage.text_in == 120


async def test_caller_audio_goes_through_as_ulaw_and_the_vendor_vad_answers(fake) -> None:
    script, base_url = fake
    script.transcripts = ["book a table"]
    connection = await model(base_url).connect("", [])
    try:
        line = np.concatenate([quiet(0.2), speech_like(0.8), quiet(0.8, seed=2)])
        for start in range(0, len(line), 160):
            await connection.send_audio(line[start : start + 160])
        events = await collect(connection.events(), ResponseDone)
    finally:
        await connection.close()
    kinds = [type(event) for event in events]
    assert kinds.index(CallerSpeechStarted) < kinds.index(CallerSpeechStopped) < kinds.index(BotAudio)
    assert CallerTranscript("book a table") in events
    assert script.audio_in_ms == 1800


async def test_a_tool_call_arrives_parsed(fake) -> None:
    script, base_url = fake
    script.replies = [("end_call", {"farewell": "Bye now."})]
    connection = await model(base_url).connect("", [END_CALL_TOOL])
    try:
        await connection.respond()
        events = await collect(connection.events(), ResponseDone)
        request = next(event for event in events if isinstance(event, ToolRequest))
        await connection.tool_result(request.call_id, '{"ok": true}')
    finally:
        await connection.close()
    assert (request.name, request.arguments) == ("end_call", {"farewell": "Bye now."})
    await asyncio.sleep(0.05)
    assert script.of_type("conversation.item.create")[-1]["item"]["type"] == "function_call_output"


async def test_history_is_replayed_and_a_bad_truncation_is_the_vendors_error(fake) -> None:
    script, base_url = fake
    history = [Message("user", "hi"), Message("assistant", "Hello!")]
    connection = await model(base_url).connect("", [], history)
    try:
        await connection.truncate("item_nope", 500)
        events = await collect(connection.events(), VendorError)
    finally:
        await connection.close()
    items = [event["item"] for event in script.of_type("conversation.item.create")]
    assert [(item["role"], item["content"][0]["type"]) for item in items] == [
        ("user", "input_text"), ("assistant", "output_text")]
    assert events[-1] == VendorError("Audio content of Nonems is shorter than 500ms.", "invalid_value")


async def test_a_dropped_socket_is_a_connection_error(fake) -> None:
    script, base_url = fake
    script.drop_after_deltas = 2
    connection = await model(base_url).connect("", [])
    await connection.respond()
    with pytest.raises(ProviderError) as caught:
        await collect(connection.events(), ResponseDone)
    await connection.close()
    assert caught.value.kind == "connection" and "1011" in str(caught.value)


async def test_a_wrong_key_is_refused_and_not_shown(fake, monkeypatch: pytest.MonkeyPatch) -> None:
    _, base_url = fake
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key-123")
    with pytest.raises(ProviderError) as caught:
        await model(base_url).connect("", [])
    assert "403" in str(caught.value) and "sk-wrong-key-123" not in str(caught.value)


async def test_a_refused_connection_is_a_provider_error(fake) -> None:
    script, base_url = fake
    script.refuse = 1
    with pytest.raises(ProviderError):
        await model(base_url).connect("", [])


async def test_check_ping_opens_and_closes_a_session(fake) -> None:
    from switchboard.check import ping

    script, base_url = fake
    result = await ping("realtime", OpenAIRealtimeConfig(provider="openai", base_url=base_url), [])
    assert result.endswith(" ms") and script.sessions == 1


def test_a_failed_response_and_an_error_event_reach_the_call_with_the_vendors_words() -> None:
    """Server events read as the API's JSON (not the SDK's typed models): a response that failed says why
    (its status_details.error, as documented for `response.done`), with its usage, and an `error` event
    keeps its message and code; events the call does not use are skipped."""
    from switchboard.providers.openai.realtime import _convert

    failed = _convert({
        "type": "response.done", "event_id": "event_1",
        "response": {"id": "resp_1", "object": "realtime.response", "status": "failed",
                     "status_details": {"type": "failed", "error": {
                         "type": "server_error", "code": "rate_limit_exceeded", "message": "Slow down."}},
                     "usage": {"total_tokens": 30, "input_tokens": 20, "output_tokens": 10,
                               "input_token_details": {"text_tokens": 5, "audio_tokens": 15},
                               "output_token_details": {"text_tokens": 4, "audio_tokens": 6}}}})
    assert isinstance(failed, ResponseDone) and failed.status == "failed"
    assert failed.error == "rate_limit_exceeded: Slow down."
    assert (failed.usage.text_in, failed.usage.audio_in, failed.usage.text_out, failed.usage.audio_out) == (
        5, 15, 4, 6)
    error = _convert({"type": "error", "event_id": "event_2", "error": {
        "type": "invalid_request_error", "code": "invalid_value", "message": "Invalid 'audio_end_ms'.",
        "param": None, "event_id": None}})
    assert error == VendorError("Invalid 'audio_end_ms'.", "invalid_value")
    assert _convert({"type": "rate_limits.updated", "event_id": "event_3", "rate_limits": []}) is None
