"""Gemini Live through google-genai's live client, against a fake speaking BidiGenerateContent over TLS;
and a whole call on it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from switchboard.audio.wav import write_wav
from switchboard.caller import CallerLine
from switchboard.config import parse_config
from switchboard.core.realtime import BotAudio, BotText, CallerTranscript, ResponseDone, ToolRequest
from switchboard.core.tools import END_CALL_TOOL
from switchboard.providers.gemini import GeminiLiveConfig
from tests import calls
from tests.fakes.gemini_live_fake import LiveScript, serving
from tests.speech import quiet, speech_like

pytestmark = pytest.mark.timescale()  # in-process calls on instant/fake providers: tests/timescale.py

KEY = "gemini-test-key"


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[LiveScript, str]]:
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    script = LiveScript(api_key=KEY)
    async with serving(script) as (port, cert):
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the SDK's WebSocket trusts the fake's certificate
        yield script, f"https://127.0.0.1:{port}"


def model(base_url: str, **settings: object):
    from switchboard.providers.gemini.live import GeminiLive

    return GeminiLive(GeminiLiveConfig(provider="gemini", base_url=base_url, **settings))


async def until_done(connection, limit_s: float = 3.0) -> list:
    got: list = []
    async with asyncio.timeout(limit_s):
        async for event in connection.events():
            got.append(event)
            if isinstance(event, ResponseDone):
                return got
    return got


async def test_setup_audio_rates_and_a_reply(fake) -> None:
    script, base_url = fake
    connection = await model(base_url, voice="Kore", silence_duration_ms=300).connect("Be brief.",
                                                                                      [END_CALL_TOOL])
    try:
        line = np.concatenate([quiet(0.1), speech_like(0.6), quiet(0.5, seed=3)])
        for start in range(0, len(line), 160):
            await connection.send_audio(line[start : start + 160])
        events = await until_done(connection)
    finally:
        await connection.close()
    setup = script.setups[0]
    assert setup["model"] == "models/gemini-2.5-flash-native-audio-preview-09-2025"
    assert setup["generationConfig"]["responseModalities"] == ["AUDIO"]
    voice = setup["generationConfig"]["speechConfig"]["voiceConfig"]["prebuiltVoiceConfig"]["voiceName"]
    assert voice == "Kore"
    assert setup["realtimeInputConfig"]["automaticActivityDetection"]["silenceDurationMs"] == 300
    assert setup["tools"][0]["functionDeclarations"][0]["name"] == "end_call"
    assert script.audio_rates == {"audio/pcm;rate=16000"}  # 8 kHz line audio went up at 16 kHz
    assert 1100 <= script.audio_in_ms <= 1200
    assert CallerTranscript("what time is it") in events
    audio = np.concatenate([e.pcm for e in events if isinstance(e, BotAudio)])
    assert abs(len(audio) - len("It is noon.") * 60 * 8) <= 80  # 24 kHz back at 8 kHz, same length
    assert "".join(e.text for e in events if isinstance(e, BotText)) == "It is noon."
    assert events[-1].usage.audio_out > 0 and events[-1].usage.text_in == 100


async def test_a_tool_call_and_its_result(fake) -> None:
    script, base_url = fake
    script.replies = [("end_call", {"farewell": "Bye."})]
    connection = await model(base_url).connect("", [END_CALL_TOOL])
    try:
        await connection.respond("hang up please")
        events = await until_done(connection)
        request = next(e for e in events if isinstance(e, ToolRequest))
        await connection.tool_result(request.call_id, '{"ok": true}')
        await asyncio.sleep(0.05)
    finally:
        await connection.close()
    assert (request.name, request.arguments) == ("end_call", {"farewell": "Bye."})
    response = script.received[-1]["toolResponse"]["functionResponses"][0]
    assert (response["name"], response["response"]) == ("end_call", {"output": '{"ok": true}'})


async def one_line_call(base_url: str, tmp_path, hangup_timeout_s: float):
    """A whole call on Gemini Live (greeting "Hi there.") where the caller says one short line."""
    path = tmp_path / "line.wav"
    write_wav(path, np.concatenate([quiet(0.05), speech_like(0.5), quiet(0.05, seed=1)]), 8000)
    config = parse_config(f"""
pipelines:
  default:
    kind: realtime
    greeting: "Hi there."
    realtime: {{provider: gemini, base_url: "{base_url}", silence_duration_ms: 250}}
""")
    return await calls.place_call(config, [CallerLine(wav=str(path))], hangup_timeout_s=hangup_timeout_s,
                                  on_event=lambda e: None)


async def test_a_whole_call_on_gemini_live(fake, tmp_path) -> None:
    _, base_url = fake
    result, turns = await one_line_call(base_url, tmp_path, hangup_timeout_s=0.8)
    assert [turn.kind for turn in turns] == ["greeting", "reply"]
    greeting, reply = turns
    assert greeting.reply_heard == "Hi there."
    assert reply.transcript == "what time is it" and reply.reply_heard == "It is noon."
    assert reply.vendors == {"llm": "gemini/gemini-2.5-flash-native-audio-preview-09-2025"}
    assert reply.voice_to_voice_ms is not None and reply.audio_tokens_out
    played_ms = result.bot_audio_played_s * 1000
    assert played_ms == pytest.approx((len("Hi there.") + len("It is noon.")) * 60, abs=45)


async def test_a_dropped_live_socket_is_reopened_and_the_reply_asked_again(fake, tmp_path) -> None:
    script, base_url = fake
    script.replies = ["A long answer that the dropped socket cuts in the middle of its audio.", "Here it is."]
    script.drop_after_chunks = 9  # the greeting takes 6 chunks; the reply drops after 3
    # the caller waits out the reopening (a TLS socket opened, the history sent: on a loaded machine more
    # than a second of quiet, and in a CI run at -n 3 on two cores more than three)
    _, turns = await one_line_call(base_url, tmp_path, hangup_timeout_s=6)
    assert script.sessions == 2
    assert turns[1].error is not None and "1011" in turns[1].error
    assert turns[-1].reply_heard == "Here it is."
    replayed = [part["text"] for message in script.received if "clientContent" in message
                for turn in message["clientContent"].get("turns") or [] for part in turn["parts"]]
    assert "what time is it" in replayed and "Hi there." in replayed


async def test_a_go_away_while_the_caller_talks_does_not_lose_the_reply_on_its_way(fake, tmp_path) -> None:
    """The renewal waits for the reply the caller's words are owed (the model takes 0.8 s to start it):
    reopening the session as the caller stops would drop it, and leave them in silence."""
    script, base_url = fake
    script.go_away_when_caller_speaks, script.reply_delay_s = True, 0.8
    _, turns = await one_line_call(base_url, tmp_path, hangup_timeout_s=1.5)
    assert [(turn.reply_heard, turn.error) for turn in turns] == [("Hi there.", None), ("It is noon.", None)]
    assert script.sessions == 2  # renewed once the reply was heard


async def test_go_away_renews_the_session_at_the_next_pause(fake, tmp_path) -> None:
    script, base_url = fake
    script.go_away_after_turns = 1  # after the greeting
    _, turns = await one_line_call(base_url, tmp_path, hangup_timeout_s=0.8)
    assert script.sessions == 2  # renewed, not failed
    assert [(turn.reply_heard, turn.error) for turn in turns] == [("Hi there.", None), ("It is noon.", None)]
