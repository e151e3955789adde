"""A browser caller on a speech-to-speech pipeline is heard at 16 kHz (core/realtime.py `input_rates`,
pipeline/wideband.py `WideFrames`): a call fed 8 kHz frames and their 16 kHz copy delivers the copy's
6 kHz band to OpenAI Realtime (as 24 kHz PCM) and Gemini Live (16 kHz as is), against their fakes, in a
renewed session too and end to end from an aiortc browser; a phone call's upload to OpenAI is what it
always was (μ-law of its frames), to Gemini its frames through the half-band filter (none held back,
nothing above 4 kHz); the bot's echo is sent as silence on the wide path exactly as on the 8 kHz one; a
frame without its copy keeps the stream's timing."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from switchboard.audio.g711 import ulaw_decode, ulaw_encode
from switchboard.audio.resample import HalfbandResampler
from switchboard.config import parse_config
from switchboard.pipeline.build import build_realtime
from switchboard.pipeline.realtime import RealtimeSession
from switchboard.pipeline.wideband import WideFrames
from switchboard.server import create_app, running
from tests.fakes.gemini_live_fake import LiveScript, serving
from tests.fakes.openai_realtime_fake import RealtimeScript, make_app
from tests.speech import quiet
from tests.test_wideband import NARROW, WIDE, Link, caller, high_band, voice

PIPELINE = """
pipelines:
  default:
    kind: realtime
    greeting: ""
    realtime: %s
"""
# the vendors' own turn detection waits longer than the test's caller talks: no reply (and no bot audio,
# which would hold the caller's audio in the echo delay line) while the upload is checked
OPENAI = ("{provider: openai, base_url: 'http://127.0.0.1:%d/v1', "
          "turn_detection: {type: server_vad, silence_duration_ms: 5000}}")
GEMINI = "{provider: gemini, base_url: 'https://127.0.0.1:%d', silence_duration_ms: 5000}"


def session(realtime: str, wideband: bool) -> RealtimeSession:
    config = parse_config(PIPELINE % realtime).pipeline(None)
    return RealtimeSession("RTCwide", config, build_realtime(config), Link(WIDE if wideband else None))


async def talk(call: RealtimeSession, wide: np.ndarray, narrow: np.ndarray, wideband: bool) -> None:
    """Start the call, wait for its vendor session, feed the caller's frames (8 kHz, and their 16 kHz copy
    on a browser call) faster than real time, and close it."""
    await call.start()
    for _ in range(500):  # the vendor's session opens (5 s at most)
        if call._conn is not None:
            break
        await asyncio.sleep(0.01)
    assert call._conn is not None, "the vendor's session did not open"
    start = time.monotonic() + 1.0  # ahead of the wall clock: the tick never sees a gap in the frames
    try:
        for n in range(len(narrow) // 160):
            await call.on_audio(narrow[n * 160:(n + 1) * 160], start + n * 0.02,
                                wide=wide[n * 320:(n + 1) * 320] if wideband else None)
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.3)  # the last appends reach the fake
    finally:
        await call.close()


# --- OpenAI Realtime -----------------------------------------------------------------------------------


@pytest.fixture
async def openai(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fake")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    script = RealtimeScript()
    async with running(make_app(script)) as port:
        yield script, port


async def test_openai_hears_a_browser_callers_6khz_band_as_24khz_pcm(openai):
    script, port = openai
    wide, narrow = caller(("quiet", 0.3), ("speech", 1.2), ("quiet", 0.3))
    await talk(session(OPENAI % port, wideband=True), wide, narrow, wideband=True)
    (update,) = script.of_type("session.update")
    assert update["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert update["session"]["audio"]["output"]["format"] == {"type": "audio/pcmu"}  # replies as before
    assert {rate for rate, _ in script.caller_audio} == {24000}
    heard = np.concatenate([pcm for _, pcm in script.caller_audio])
    # all of it, but what soxr holds back at the end (~21 ms): the vendor's clock runs with the call's
    assert 0 <= 1.5 * len(wide) - len(heard) <= 0.03 * 24000
    assert high_band(heard, 24000) > 0.05  # the caller's "s" reached the model
    assert script.audio_in_ms >= len(narrow) // 8 - 40


async def test_openai_hears_a_phone_call_exactly_as_before(openai):
    script, port = openai
    wide, narrow = caller(("quiet", 0.3), ("speech", 1.2), ("quiet", 0.3))
    await talk(session(OPENAI % port, wideband=False), wide, narrow, wideband=False)
    (update,) = script.of_type("session.update")
    assert update["session"]["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert {rate for rate, _ in script.caller_audio} == {8000}
    heard = np.concatenate([pcm for _, pcm in script.caller_audio])
    assert np.array_equal(heard, ulaw_decode(ulaw_encode(narrow)))  # the same bytes: its frames in μ-law


async def test_a_browser_call_to_a_model_without_16khz_is_sent_its_8khz_frames(openai):
    """A model that does not list 16 kHz in `input_rates` is connected and fed as on a phone line."""
    script, port = openai
    wide, narrow = caller(("quiet", 0.2), ("speech", 0.6), ("quiet", 0.2))
    config = parse_config(PIPELINE % (OPENAI % port)).pipeline(None)
    providers = build_realtime(config)
    providers.model.input_rates = (NARROW,)  # type: ignore[misc]
    await talk(RealtimeSession("RTCwide", config, providers, Link(WIDE)), wide, narrow, wideband=True)
    assert {rate for rate, _ in script.caller_audio} == {NARROW}
    heard = np.concatenate([pcm for _, pcm in script.caller_audio])
    assert np.array_equal(heard, ulaw_decode(ulaw_encode(narrow)))


async def test_a_renewed_session_of_a_browser_call_hears_16khz_too(openai):
    """The session is renewed (its limit is near): the new one is opened for 16 kHz as well, and the
    caller's words after it reach the model with their 6 kHz band."""
    script, port = openai
    config = parse_config(PIPELINE % (OPENAI % port)).pipeline(None)
    providers = build_realtime(config)
    providers.model.session_limit_s = 0.4  # renewed when idle 0.2 s after it opened
    call = RealtimeSession("RTCwide", config, providers, Link(WIDE))
    await call.start()
    try:
        first = None
        for _ in range(500):  # the first session opens, then its renewal (5 s at most)
            conn = None if call._renewing else call._conn
            first = first or conn
            if conn is not None and conn is not first:
                break
            await asyncio.sleep(0.01)
        assert script.sessions == 2, "the session was not renewed"
        since = len(script.caller_audio)
        wide, narrow = caller(("speech", 0.8))
        start = time.monotonic()
        for n in range(len(narrow) // 160):
            frame, copy = narrow[n * 160:(n + 1) * 160], wide[n * 320:(n + 1) * 320]
            await call.on_audio(frame, start + n * 0.02, wide=copy)
        await asyncio.sleep(0.3)
    finally:
        await call.close()
    formats = [update["session"]["audio"]["input"]["format"] for update in script.of_type("session.update")]
    assert formats == [{"type": "audio/pcm", "rate": 24000}] * 2
    heard = np.concatenate([pcm for _, pcm in script.caller_audio[since:]])
    assert len(heard) > 0.5 * 24000 and high_band(heard, 24000) > 0.05


async def test_a_browser_caller_reaches_openai_realtime_at_16khz_end_to_end(openai, monkeypatch):
    """An aiortc peer as the browser, on a realtime pipeline: after the greeting it says a line with a 6 kHz
    band; through Opus, the WebRTC carrier's frames and the server's dispatch, the model hears that band."""
    from tests.webrtc_client import BrowserCaller

    script, port = openai
    monkeypatch.delenv("SWITCHBOARD_API_TOKEN", raising=False)
    pipeline = (PIPELINE % (OPENAI % port)).replace('greeting: ""', 'greeting: "Hi there."')
    app = create_app(parse_config(pipeline))
    async with running(app) as server:
        browser = BrowserCaller(f"http://127.0.0.1:{server}")
        await browser.call("default")
        try:
            await browser.bot_spoke(after=0)
            await browser.bot_quiet(0.3)
            since = len(script.caller_audio)
            await browser.mic.say(np.concatenate([voice(1.2), quiet(0.3, rate=WIDE)]), WIDE)
            await asyncio.sleep(0.3)
        finally:
            await browser.hang_up()
        await asyncio.wait_for(app.state.host.wait_idle(), 10)
    assert script.spoken == ["Hi there."]
    assert script.of_type("session.update")[0]["session"]["audio"]["input"]["format"]["rate"] == 24000
    heard = np.concatenate([pcm for _, pcm in script.caller_audio[since:]])
    assert high_band(heard, 24000) > 0.05


# --- Gemini Live ---------------------------------------------------------------------------------------


@pytest.fixture
async def gemini(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "gemini-test-key")
    script = LiveScript(api_key="gemini-test-key")
    async with serving(script) as (port, cert):
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        yield script, port


@pytest.mark.parametrize("wideband", [True, False], ids=["webrtc", "twilio"])
async def test_gemini_hears_the_browser_calls_own_16khz_and_a_phone_calls_8khz_upsampled(gemini, wideband):
    script, port = gemini
    wide, narrow = caller(("quiet", 0.3), ("speech", 1.2), ("quiet", 0.3))
    await talk(session(GEMINI % port, wideband), wide, narrow, wideband)
    assert script.audio_rates == {"audio/pcm;rate=16000"}
    heard = np.concatenate(script.caller_audio)
    if wideband:  # the carrier's copy, sample for sample: no resampling at all
        assert np.array_equal(heard, wide) and high_band(heard, WIDE) > 0.05
    else:  # the 8 kHz frames brought up by the half-band filter, nothing above 4 kHz, and each frame's
        # audio sent with it: all of the caller, none held back (soxr's stream held 10-118 ms)
        up = HalfbandResampler(up=True)
        expected = np.concatenate([up.process(narrow[n:n + 160]) for n in range(0, len(narrow), 160)])
        assert len(heard) == 2 * len(narrow) and np.array_equal(heard, expected)
        assert high_band(heard, WIDE) < 0.001


# --- the echo delay line, and a frame without its copy ------------------------------------------------


class Sent:
    """The vendor connection's side of `send_audio`: what each caller frame let through, in order."""

    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []

    async def send_audio(self, pcm: np.ndarray) -> None:
        self.frames.append(pcm.copy())


class TalkingBot:
    """The player while the bot talks for `until` frames of the call: audible, and everything the caller
    says while it is sounds like its own voice coming back (the echo check's verdict, given)."""

    def __init__(self, until: int) -> None:
        self.frame, self.until = 0, until

    @property
    def audible(self) -> bool:
        return self.frame < self.until

    def echoes(self, caller_audio: np.ndarray, threshold: float) -> bool:
        return self.audible


async def echoed(wideband: bool, wide: np.ndarray, narrow: np.ndarray, bot_frames: int,
                 missing: set[int] = frozenset()) -> list[list[np.ndarray]]:
    """Feed a call (not started: its vendor connection is `Sent`) while the bot talks; return, for each
    caller frame, the frames the vendor was sent as it came."""
    call = session(OPENAI % 1, wideband)
    sent, bot = Sent(), TalkingBot(bot_frames)
    call._conn, call.player = sent, bot  # type: ignore[assignment]
    steps: list[list[np.ndarray]] = []
    for n in range(len(narrow) // 160):
        bot.frame = n
        before = len(sent.frames)
        copy = None if not wideband or n in missing else wide[n * 320:(n + 1) * 320]
        await call.on_audio(narrow[n * 160:(n + 1) * 160], 1000 + n * 0.02, wide=copy)
        steps.append(sent.frames[before:])
    return steps


@pytest.fixture(autouse=True)
def openai_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fake")


async def test_the_bots_echo_is_sent_as_silence_just_as_long_and_just_as_late_on_the_wide_path():
    """While the bot talks the caller's audio is held back; their speech (the bot's echo, by the echo
    check) is sent as silence, what was held of it too. The browser call's 16 kHz frames go through the
    same line frame for frame: each caller frame lets out the same frames as on the 8 kHz path, twice
    as long, silent where those are silent; the rest is the 16 kHz copy, and the caller's own words once
    the bot is quiet reach the vendor with their 6 kHz band."""
    wide, narrow = caller(("quiet", 0.4), ("speech", 1.0), ("quiet", 1.0), ("speech", 0.6), ("quiet", 0.4))
    bot_frames = round(1.6 / 0.02)  # the bot talks over the echo, then stops: the line is let out
    phone = await echoed(False, wide, narrow, bot_frames)
    browser = await echoed(True, wide, narrow, bot_frames)
    assert [len(step) for step in browser] == [len(step) for step in phone]  # the same timing
    assert sum(len(step) for step in phone) == len(narrow) // 160  # nothing lost, nothing added
    assert [len(step) for step in phone[:10]] == [0] * 10  # the line held the caller back
    flat = [(p, b) for step_p, step_b in zip(phone, browser, strict=True)
            for p, b in zip(step_p, step_b, strict=True)]
    assert all(len(b) == 2 * len(p) for p, b in flat)
    silent = [not p.any() for p, _ in flat]
    assert [not b.any() for _, b in flat] == silent  # muted frame for frame
    assert all(silent[n] for n in range(round(0.4 / 0.02), round(1.4 / 0.02)))  # the echo reached nobody
    assert not any(silent[:round(0.2 / 0.02)])  # what was held well before it went out as it was
    assert all(np.array_equal(flat[n][1], wide[n * 320:(n + 1) * 320]) for n in range(len(flat))
               if not silent[n])  # the rest is the caller's own 16 kHz, in order
    words = range(round(2.4 / 0.02), round(3.0 / 0.02))
    assert not any(silent[n] for n in words)
    assert high_band(np.concatenate([flat[n][1] for n in words]), WIDE) > 0.05


def test_a_frame_without_its_copy_is_its_8khz_audio_upsampled_and_just_as_long():
    frames = WideFrames(WIDE)
    wide, narrow = caller(("speech", 0.2))
    first = frames.frame(narrow[:160], wide[:320])
    assert first is wide[:320] or np.array_equal(first, wide[:320])
    stand_in = frames.frame(narrow[160:320], None)
    wrong = frames.frame(narrow[320:480], wide[640:700])  # the wrong length: not trusted either
    assert len(stand_in) == len(wrong) == 320 and stand_in.any() and frames.missing == 2
    assert high_band(np.concatenate([stand_in, wrong]), WIDE) < 0.01  # the 8 kHz band only
    assert np.array_equal(frames.frame(narrow[480:640], wide[960:1280]), wide[960:1280])  # back on the copy
