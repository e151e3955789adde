"""CallSession over a real WebSocket with instant providers: the call logic, independent of recognition.

Each test places a simulated Twilio call (switchboard/caller/) against the real server on 127.0.0.1.
"""

import asyncio

import numpy as np
import pytest

from switchboard.caller import CallerLine
from switchboard.config import parse_config
from switchboard.pipeline.call import Providers
from switchboard.server import create_app, running
from tests import calls
from tests.fakes.instant import InstantLLM, InstantSTT, InstantTTS
from tests.speech import quiet, speech_like

pytestmark = pytest.mark.timescale()  # in-process calls on instant providers: tests/timescale.py

CONFIG = """
pipelines:
  default:
    greeting: "Hi there."
    apology: "Sorry, trouble."
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
"""


async def place_call(providers: Providers, lines: list[CallerLine], answered: bool = True, **kwargs):
    """The call; with `answered` the caller waits for the bot's answer to its last line and hangs up after
    1 s of quiet, else (a last line that gets no answer) after 3 s of quiet."""
    # calls.place_call returns once the server has no call left: the call is over there too
    if answered:
        kwargs.update(script=calls.answered_then_quiet, hangup_timeout_s=1)
    return await calls.place_call(parse_config(CONFIG), lines, providers, **{"hangup_timeout_s": 3, **kwargs})


async def test_reply_is_streamed_at_the_right_rate_and_the_call_hangs_up(speech_wav):
    tts = InstantTTS(sample_rate=24000, ms_per_char=60)
    stt = InstantSTT("what time is it")
    providers = Providers(stt, InstantLLM("It is noon. Anything else?"), tts)
    result, turns = await place_call(providers, [CallerLine(wav=speech_wav), CallerLine(wav=speech_wav)])

    # Line 1 is answered; line 2's transcript contains no "goodbye" so we end it via the STT text.
    greeting, reply = turns[0], turns[1]
    assert greeting.kind == "greeting" and greeting.reply_heard == "Hi there."
    assert reply.transcript == "what time is it"
    assert reply.reply_heard == "It is noon. Anything else?"
    assert reply.voice_to_voice_ms is not None and reply.voice_to_voice_ms > 0
    # The STT got 16 kHz audio of about the caller's line (pre-roll + 1.2 s + a short tail).
    assert 1.2 <= len(stt.heard[0]) / 16000 <= 1.8
    # Everything the TTS rendered at 24 kHz reached the caller at 8 kHz: same duration. A wrong
    # rate anywhere on the path would play 2-3x too long or short. Padding: < 20 ms per chunk.
    rendered_s = sum(len(tts.render(text)) for text in tts.spoken) / 24000
    assert result.bot_audio_received_s == pytest.approx(rendered_s, abs=0.02 * len(tts.spoken) + 0.01)
    assert result.malformed_count == 0


async def test_goodbye_speaks_the_farewell_then_hangs_up(speech_wav):
    providers = Providers(InstantSTT("goodbye"), InstantLLM(), InstantTTS())
    result, turns = await place_call(providers, [CallerLine(wav=speech_wav)])
    assert result.hangup and not result.stop_sent
    last = turns[-1]
    assert last.ended_call and last.reply_heard == "Goodbye!" and not last.interrupted
    assert result.marks_echoed == result.marks_received  # the farewell was heard before the hang-up


async def test_barge_in_clears_cancels_and_keeps_only_what_was_heard(speech_wav):
    long_reply = "Yes. No. " * 12  # many short sentences, ~5 s of audio
    tts = InstantTTS(ms_per_char=60)
    providers = Providers(InstantSTT("tell me everything"), InstantLLM(long_reply.strip()), tts)
    lines = [CallerLine(wav=speech_wav), CallerLine(wav=speech_wav, barge_in=True)]
    result, turns = await place_call(providers, lines)

    assert result.clears_received >= 1
    assert result.lines[1].clear_received
    interrupted = [t for t in turns if t.interrupted]
    assert len(interrupted) == 1
    cut = interrupted[0]
    # The caller heard some sentences, not all; the history keeps exactly the heard ones.
    assert cut.reply_heard and len(cut.reply_heard) < len(cut.reply_text)
    assert long_reply.strip().startswith(cut.reply_heard)
    later_request = providers.llm.requests[-1]
    assistant_lines = [m.content for m in later_request if m.role == "assistant"]
    assert cut.reply_heard in assistant_lines
    assert long_reply.strip() not in assistant_lines
    # The barge-in line itself was answered afterwards.
    assert turns[-1].transcript == "tell me everything" and not turns[-1].interrupted


async def test_stt_failure_is_spoken_around_and_recorded(speech_wav):
    providers = Providers(InstantSTT(fail=True), InstantLLM(), InstantTTS())
    result, turns = await place_call(providers, [CallerLine(wav=speech_wav)])
    failed = turns[1]
    assert failed.error and "injected STT failure" in failed.error
    assert failed.reply_heard == "Sorry, trouble."
    assert result.lines[0].response_delay_ms is not None  # the caller was not left in silence


async def test_llm_stream_cut_midway_still_answers(speech_wav):
    providers = Providers(
        InstantSTT("hello"), InstantLLM("Well. Let me think about that.", fail_after_words=2), InstantTTS()
    )
    _, turns = await place_call(providers, [CallerLine(wav=speech_wav)])
    failed = turns[1]
    assert "injected stream cut" in failed.error
    assert failed.reply_heard.endswith("Sorry, trouble.")


async def test_stream_without_silence_frames_is_still_endpointed(speech_wav):
    """Some calls carry no frames while the caller is silent: the wall-clock endpointer answers them."""
    providers = Providers(InstantSTT("hello"), InstantLLM("Hi."), InstantTTS())
    result, turns = await place_call(providers, [CallerLine(wav=speech_wav)], silence_frames=False)
    assert [t.transcript for t in turns if t.kind == "reply"] == ["hello"]
    assert result.lines[0].response_delay_ms is not None


async def test_garbage_frames_are_dropped_and_the_call_keeps_answering(caplog):
    """Bad frames of every kind are logged and dropped; the same call still gets its reply."""
    import base64
    import json

    import websockets

    from switchboard.audio.g711 import ulaw_encode

    providers = Providers(InstantSTT("hello"), InstantLLM("Hi."), InstantTTS())
    app = create_app(parse_config(CONFIG), providers={"default": providers})
    start = {
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": "MZ1",
        "start": {
            "streamSid": "MZ1",
            "callSid": "CA1",
            "accountSid": "AC1",
            "customParameters": {},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
    }
    garbage = [
        "{not json",
        b"\x00\x01binary",
        "[]",
        '{"event": "dance"}',
        '{"event": "media", "media": {}}',
        '{"event": "media", "media": {"payload": "***"}}',
        '{"event": "mark", "mark": {"name": 7}}',
        json.dumps(start),  # a second start
    ]
    audio = np.concatenate([quiet(0.3), speech_like(1.0), quiet(1.0, seed=3)])
    async with running(app) as port, websockets.connect(f"ws://127.0.0.1:{port}/media-stream") as ws:
        await ws.send('{"event": "stop", "stop": {}}')  # stop before start
        await ws.send(json.dumps({"event": "media", "media": {"payload": "AAAA"}}))  # media before start
        await ws.send('{"event": "connected", "protocol": "Call", "version": "1.0.0"}')
        await ws.send(json.dumps(start))
        for n, offset in enumerate(range(0, len(audio) - 159, 160)):
            if n < len(garbage):
                await ws.send(garbage[n])
            payload = base64.b64encode(ulaw_encode(audio[offset : offset + 160])).decode()
            await ws.send(json.dumps({"event": "media", "streamSid": "MZ1", "media": {"payload": payload}}))
            await asyncio.sleep(0.02)
        events = []
        async with asyncio.timeout(10):
            while "Hi." not in providers.tts.spoken or events.count("mark") < 2:
                events.append(json.loads(await ws.recv())["event"])
        assert app.state.calls and "media" in events  # the call is alive and answered
    dropped = [r.getMessage() for r in caplog.records if "dropped a frame" in r.getMessage()]
    assert len(dropped) == len(garbage) + 2
    for reason in (
        "not JSON",
        "binary frame",
        "unknown event 'dance'",
        "invalid base64",
        "second start",
        "stop before start",
        "media before start",
    ):
        assert any(reason in line for line in dropped), reason


def test_webhook_returns_twiml_and_health_counts_calls(monkeypatch):
    from starlette.testclient import TestClient

    providers = Providers(InstantSTT(), InstantLLM(), InstantTTS())
    client = TestClient(create_app(parse_config(CONFIG), providers={"default": providers}))
    monkeypatch.delenv("PUBLIC_URL", raising=False)
    response = client.post(
        "/incoming-call",
        data={"From": "+15550001111", "To": "+15550002222", "CallSid": "CA1"},
        headers={"X-Forwarded-Host": "bot.example.com", "X-Forwarded-Proto": "https"},
    )
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/xml")
    assert '<Stream url="wss://bot.example.com/media-stream">' in response.text
    assert '<Parameter name="pipeline" value="default" />' in response.text
    assert '<Parameter name="from" value="+15550001111" />' in response.text
    assert response.text.endswith("</Connect><Hangup /></Response>")
    monkeypatch.setenv("PUBLIC_URL", "https://abc.ngrok.app")
    assert 'url="wss://abc.ngrok.app/media-stream"' in client.post("/incoming-call", data={}).text
    assert client.get("/healthz").json() == {"status": "ok", "active_calls": 0}


async def test_speech_with_no_words_is_answered_but_a_cough_is_not(tmp_path):
    """An utterance the recogniser made nothing of gets the pipeline's `unheard` reply, when it had enough
    voiced audio (600 ms by default); a short sound gets no answer at all."""
    from switchboard.audio.wav import write_wav

    def line(seconds: float, name: str) -> CallerLine:
        path = tmp_path / name
        write_wav(path, np.concatenate([quiet(0.1), speech_like(seconds), quiet(0.1, seed=1)]), 8000)
        return CallerLine(wav=str(path))

    llm = InstantLLM("An answer.")
    result, turns = await place_call(Providers(InstantSTT(""), llm, InstantTTS(ms_per_char=20)),
                                     [line(1.2, "mumble.wav"), line(0.35, "cough.wav")], answered=False)
    replies = [turn for turn in turns if turn.kind == "reply"]
    unheard = "Sorry, I didn't catch that. Could you say it again?"
    assert [turn.reply_text for turn in replies] == [unheard, ""]
    assert replies[0].reply_heard == unheard
    assert all(turn.transcript == "" for turn in replies)
    assert result.lines[0].response_delay_ms is not None and result.lines[1].response_delay_ms is None
