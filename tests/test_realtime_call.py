"""Whole `kind: realtime` calls: a simulated Twilio caller → the server → the OpenAI SDK → the fake
Realtime server, all over real WebSockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import numpy as np
import pytest
import websockets

from switchboard.audio.wav import write_wav
from switchboard.caller import CallerLine
from switchboard.config import parse_config
from switchboard.server import create_app, running
from tests import calls
from tests.fakes.openai_realtime_fake import RealtimeScript, make_app
from tests.speech import quiet, speech_like

pytestmark = pytest.mark.timescale()  # in-process calls on instant/fake providers: tests/timescale.py

KEY = "sk-test-realtime-call"
MS_PER_CHAR = 20  # the fake's speech: short, so the calls are quick; whole 20 ms frames
GREETING_MS = len("Hi there.") * MS_PER_CHAR
ANSWER_MS = len("It is noon.") * MS_PER_CHAR


@pytest.fixture
def speech_wav(tmp_path) -> str:
    """A short caller line (0.5 s of speech-like sound): the fake's VAD and ours both hear it."""
    path = tmp_path / "short.wav"
    write_wav(path, np.concatenate([quiet(0.05), speech_like(0.5), quiet(0.05, seed=1)]), 8000)
    return str(path)


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[RealtimeScript, int]]:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    script = RealtimeScript(api_key=KEY, ms_per_char=MS_PER_CHAR)
    async with running(make_app(script)) as port:
        yield script, port


def config(port: int, first_token_s: float = 2, **pipeline: str):
    extra = "".join(f"    {key}: {value}\n" for key, value in pipeline.items())
    return parse_config(f"""
pipelines:
  default:
    kind: realtime
    greeting: "Hi there."
    apology: "Sorry, trouble."
    end_call_watchdog_s: 3
{extra}    realtime:
      provider: openai
      base_url: http://127.0.0.1:{port}/v1
      timeouts: {{first_token_s: {first_token_s}}}
      turn_detection: {{type: server_vad, silence_duration_ms: 250}}
""")


async def place_call(port: int, lines: list[CallerLine], **options):
    pipeline = options.pop("pipeline", {})
    options.setdefault("hangup_timeout_s", 0.6)
    first_token_s = options.pop("first_token_s", 2)
    return await calls.place_call(config(port, first_token_s, **pipeline), lines, on_event=lambda e: None,
                                  **options)


async def test_a_call_greets_answers_and_records_both_sides(fake, speech_wav) -> None:
    script, port = fake
    script.transcripts, script.replies = ["what time is it"], ["It is noon."]
    result, turns = await place_call(port, [CallerLine(wav=speech_wav)])

    assert [turn.kind for turn in turns] == ["greeting", "reply"]
    greeting, reply = turns
    assert greeting.reply_heard == "Hi there." and greeting.vendors == {"llm": "openai/gpt-realtime"}
    assert reply.transcript == "what time is it"  # the vendor's transcription of the caller
    assert reply.reply_text == "It is noon." and reply.reply_heard == "It is noon."
    # one clock with the cascade: the caller's speech end by our own VAD, the vendor's endpoint after it
    assert reply.speech_end is not None and reply.endpoint is not None and reply.endpoint > reply.speech_end
    assert reply.tts_first_byte is not None and reply.voice_to_voice_ms is not None
    assert reply.voice_to_voice_ms > 250  # the fake's server VAD waits 250 ms of silence
    assert reply.audio_tokens_out and reply.tokens_in == 120 and reply.audio_tokens_in
    assert not reply.interrupted and reply.error is None
    # the caller heard exactly the vendor's audio: μ-law straight through, no resampling
    assert result.bot_audio_played_s * 1000 == pytest.approx(GREETING_MS + ANSWER_MS, abs=1)
    assert script.spoken == ["Hi there.", "It is noon."]
    greet = script.of_type("response.create")[0]["response"]["instructions"]
    assert greet == 'Greet the caller by saying exactly: "Hi there."'
    assert result.stop_sent and result.malformed_count == 0


@pytest.mark.timescale(1)  # truncation within -40..+20 ms of what was heard: a real-time margin
async def test_barge_in_truncates_the_reply_to_what_the_caller_heard(fake, speech_wav) -> None:
    script, port = fake
    script.ms_per_char = 40  # the reply is still playing when the caller talks over it, 1 s in
    long_reply = "Our opening hours are from noon until late in the evening, every day but Monday."
    script.replies = [long_reply, "Sure."]
    script.transcripts = ["when are you open", "actually stop"]
    lines = [CallerLine(wav=speech_wav), CallerLine(wav=speech_wav, barge_in=True)]
    result, turns = await place_call(port, lines)

    cut = turns[1]
    assert cut.interrupted and cut.reply_text == long_reply
    assert 0 < len(cut.reply_heard) < len(long_reply)
    assert len(script.truncations) == 1
    truncation = script.truncations[0]
    assert truncation["content_index"] == 0
    # the caller's playback of the cut reply: everything it played minus the greeting and the answer to
    # the barge-in line (which came after the truncation)
    answered_ms = len("Sure.") * 40 if turns[-1].reply_heard == "Sure." else 0
    heard_ms = result.bot_audio_played_s * 1000 - len("Hi there.") * 40 - answered_ms
    # within one 20 ms frame, plus the clear's way to the caller: here the caller, the server and the fake
    # share one event loop and a clear sent takes ~20 ms to be handled (measured), during which the caller
    # hears on; no server can see that time, so the truncation is short by it (on a real line it cancels
    # against the delay the reply's first frame had, see RealtimeSession._heard_ms)
    assert -40 <= truncation["audio_end_ms"] - heard_ms <= 20
    assert truncation["audio_end_ms"] < script.items_audio_ms[truncation["item_id"]]
    assert any(line.clear_received for line in result.lines)


async def test_end_call_speaks_the_farewell_then_hangs_up(fake, speech_wav) -> None:
    script, port = fake
    script.replies = [("end_call", {"farewell": "Goodbye now."})]
    result, turns = await place_call(port, [CallerLine(wav=speech_wav)])

    last = turns[-1]
    assert last.ended_call and last.reply_heard == "Goodbye now."
    assert result.hangup and not result.stop_sent
    outputs = [event["item"] for event in script.of_type("conversation.item.create")]
    assert outputs[-1]["type"] == "function_call_output"
    assert script.of_type("response.create")[-1]["response"]["instructions"].endswith('"Goodbye now."')


async def test_keypad_digits_become_a_user_message(fake) -> None:
    """Twilio's wire spoken by hand (the simulated caller presses no keys): start, three keys, marks
    echoed as a carrier does, stop."""
    script, port = fake
    script.replies = ["Got your order number."]
    turns: list = []
    app = create_app(config(port), on_turn=turns.append)
    start = {"streamSid": "MZ1", "accountSid": "AC1", "callSid": "CA1", "tracks": ["inbound"],
             "customParameters": {}, "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                                     "channels": 1}}
    async with running(app) as server, websockets.connect(f"ws://127.0.0.1:{server}/media-stream") as ws:
        await ws.send(json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": "MZ1",
                                  "start": start}))
        for n, digit in enumerate("42#"):
            await ws.send(json.dumps({"event": "dtmf", "streamSid": "MZ1", "sequenceNumber": str(n + 2),
                                      "dtmf": {"track": "inbound_track", "digit": digit}}))
        async with asyncio.timeout(5):
            while not any(turn.kind == "keypad" for turn in turns):
                try:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 0.1))
                except TimeoutError:
                    continue
                if message["event"] == "mark":  # played at once: this carrier has no ears
                    await ws.send(json.dumps({"event": "mark", "streamSid": "MZ1", "sequenceNumber": "8",
                                              "mark": message["mark"]}))
        await ws.send(json.dumps({"event": "stop", "streamSid": "MZ1", "sequenceNumber": "9",
                                  "stop": {"accountSid": "AC1", "callSid": "CA1"}}))
        await asyncio.wait_for(app.state.host.wait_idle(), 5)
    texts = [event["item"]["content"][0]["text"] for event in script.of_type("conversation.item.create")]
    assert texts == ["The caller pressed 42 on the keypad."]
    keypad = next(turn for turn in turns if turn.kind == "keypad")
    assert keypad.transcript == "The caller pressed 42 on the keypad."
    assert keypad.reply_text == "Got your order number."


async def test_a_dropped_vendor_socket_is_reopened_and_the_call_goes_on(fake, speech_wav, caplog) -> None:
    script, port = fake
    script.replies = ["A long answer that the dropped socket cuts in the middle of its audio.", "Here it is."]
    script.drop_after_deltas = 5  # the greeting takes 2 deltas; the reply drops after 3
    with caplog.at_level(logging.INFO, "switchboard.realtime"):
        # the caller waits out the reopening (on a loaded machine more than the usual 0.6 s of quiet)
        _, turns = await place_call(port, [CallerLine(wav=speech_wav)], hangup_timeout_s=3)

    assert script.sessions == 2
    cut = turns[1]
    assert cut.error is not None and "1011" in cut.error
    assert turns[-1].reply_heard == "Here it is."  # asked again on the new session
    replayed = [event["item"]["content"][0]["text"] for event in script.of_type("conversation.item.create")]
    assert "what time is it" in replayed and "Hi there." in replayed
    assert "reopening the realtime session" in caplog.text
    assert "realtime vendor openai/gpt-realtime failed" in caplog.text
    assert KEY not in caplog.text


async def test_a_reply_cut_by_a_drop_after_part_of_it_was_heard_is_asked_again(fake, speech_wav) -> None:
    """The reply's first words were heard before the socket dropped: they end the replayed history, yet
    the caller's question is still owed its answer, and the new session is asked for it."""
    script, port = fake
    script.replies = ["A long answer that the dropped socket cuts in the middle of its audio.", "Here it is."]
    script.drop_after_deltas = 5  # the greeting takes 2 deltas; the reply drops after 3...
    script.delta_delay_s = 0.25  # ...of 100 ms each, 250 ms apart: its first one has been played by then
    _, turns = await place_call(port, [CallerLine(wav=speech_wav)], hangup_timeout_s=3)

    assert script.sessions == 2
    cut = turns[1]
    assert cut.error is not None and "1011" in cut.error and cut.reply_heard  # some of it was heard
    replayed = [event["item"]["content"][0]["text"] for event in script.of_type("conversation.item.create")]
    assert replayed[-1] == cut.reply_heard  # what was heard ends the history the new session gets
    assert turns[-1].reply_heard == "Here it is."  # and the question was still answered


async def test_a_vendor_that_fails_twice_gets_the_apology_and_a_hang_up(fake, speech_wav) -> None:
    script, port = fake
    script.silent = True  # the socket opens and nothing ever answers
    result, turns = await place_call(port, [CallerLine(wav=speech_wav)], first_token_s=0.5)

    assert script.sessions == 2  # reopened once
    apology = turns[-1]
    assert apology.kind == "apology" and apology.reply_heard == "Sorry, trouble."
    assert "no reply within 0.5 s" in apology.error
    assert result.hangup and result.bot_audio_played_s > 0.5  # eSpeak's apology, never silence


async def test_a_rate_limited_reply_is_apologised_for_and_recorded(fake, speech_wav) -> None:
    script, port = fake
    script.error_on_response = {1}  # the greeting's response.create
    _, turns = await place_call(port, [CallerLine(wav=speech_wav)])

    first = turns[0]
    assert first.reply_heard == "Sorry, trouble."
    assert "rate_limit_exceeded" in first.error and "Rate limit reached" in first.error
    assert turns[-1].reply_heard == "It is noon."  # the call went on


async def test_the_call_is_recorded_in_stereo(fake, speech_wav, tmp_path) -> None:
    import soundfile

    _, port = fake
    await place_call(port, [CallerLine(wav=speech_wav)],
                     pipeline={"record": "true", "recordings_dir": str(tmp_path / "rec")})
    (path,) = (tmp_path / "rec").glob("*.wav")
    audio, rate = soundfile.read(str(path), dtype="int16", always_2d=True)
    assert rate == 8000 and audio.shape[1] == 2
    frames = len(audio) // 160
    loud = np.abs(audio[: frames * 160].astype(float)).reshape(frames, 160, 2).mean(axis=1) > 100
    bot_ms, caller_ms = loud[:, 1].sum() * 20, loud[:, 0].sum() * 20
    assert bot_ms == pytest.approx(GREETING_MS + ANSWER_MS, abs=40)  # right: what was played
    assert caller_ms == pytest.approx(500, abs=60)  # left: the caller's 0.5 s line


async def test_a_caller_hanging_up_mid_reply_ends_the_call_with_it_recorded(fake) -> None:
    script, port = fake
    script.ms_per_char = 200  # a greeting of 1.8 s
    turns: list = []
    app = create_app(config(port), on_turn=turns.append)
    start = {"streamSid": "MZ2", "accountSid": "AC1", "callSid": "CA2", "tracks": ["inbound"],
             "customParameters": {}, "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                                     "channels": 1}}
    async with running(app) as server, websockets.connect(f"ws://127.0.0.1:{server}/media-stream") as ws:
        await ws.send(json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": "MZ2",
                                  "start": start}))
        async with asyncio.timeout(5):
            while json.loads(await ws.recv())["event"] != "media":
                pass
        await ws.close()  # mid-greeting, without a stop
        await asyncio.wait_for(app.state.host.wait_idle(), 5)
    assert [(turn.kind, turn.interrupted) for turn in turns] == [("greeting", True)]
    assert script.sessions == 1


async def test_the_session_is_renewed_between_replies_with_the_conversation(fake, speech_wav) -> None:
    script, port = fake
    turns: list = []
    app = create_app(config(port), on_turn=turns.append)
    app.state.host.pipelines["default"].model.session_limit_s = 0.4  # renewed when idle after 0.2 s
    async with running(app) as server:
        from switchboard.caller import run_call

        result = await run_call(f"ws://127.0.0.1:{server}/media-stream", [CallerLine(wav=speech_wav)],
                                hangup_timeout_s=0.8, on_event=lambda e: None)
        await asyncio.wait_for(app.state.host.wait_idle(), 5)
    assert script.sessions >= 2
    assert [turn.reply_heard for turn in turns] == ["Hi there.", "It is noon."]
    assert all(turn.error is None for turn in turns)
    assert result.bot_audio_played_s * 1000 == pytest.approx(GREETING_MS + ANSWER_MS, abs=1)
    replayed = [event["item"]["content"][0]["text"] for event in script.of_type("conversation.item.create")]
    assert "Hi there." in replayed  # the new session knows what was said


@pytest.mark.timescale(1)  # the echo is told by its alignment with what was played: scaled, 1 in 4 failed
async def test_the_bots_echo_is_not_sent_to_the_vendor_as_the_caller(fake, speech_wav) -> None:
    from switchboard.caller import Echo

    script, port = fake
    script.ms_per_char = 150  # a greeting of 1.35 s, coming back on the line 120 ms later
    result, turns = await place_call(port, [CallerLine(wav=speech_wav)], echo=Echo(delay_ms=120, gain_db=-6))

    greeting = turns[0]
    assert not greeting.interrupted and greeting.reply_heard == "Hi there."
    assert script.truncations == [] and result.clears_received == 0
    assert turns[-1].transcript == "what time is it"  # the caller's own line still reached the model


async def test_the_time_limit_says_goodbye_and_hangs_up(fake) -> None:
    script, port = fake
    limit = {"max_call_duration_s": "1.5", "time_limit_goodbye": '"Time is up."'}
    result, turns = await place_call(port, [], hangup_timeout_s=5, pipeline=limit)  # the caller is silent
    assert [(turn.kind, turn.ended_call, turn.reply_heard) for turn in turns] == [
        ("greeting", False, "Hi there."), ("time_limit", True, "Time is up.")]
    assert result.hangup and not result.stop_sent
    assert script.of_type("response.create")[-1]["response"]["instructions"].endswith('"Time is up."')
