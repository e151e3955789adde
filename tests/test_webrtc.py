"""The WebRTC carrier (telephony/webrtc): audio conversions, pacing, clear, the wire, the offer's guard
and its config, and whole calls with an aiortc peer as the browser."""

from __future__ import annotations

import asyncio
import fractions

import httpx
import numpy as np
import pytest
from aiortc.codecs import get_decoder, get_encoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from av import AudioFrame

from switchboard.config import ConfigError, parse_config
from switchboard.core.carrier import BadFrame, Dtmf, Mark, Media, Start, Stop
from switchboard.pipeline.call import Providers
from switchboard.server import create_app, running
from switchboard.telephony.webrtc import wire
from switchboard.telephony.webrtc.media import FRAME_SAMPLES, BotTrack, Inbound
from tests.fakes.instant import InstantLLM, InstantSTT, InstantTTS
from tests.speech import quiet, speech_like
from tests.test_store import store_row
from tests.webrtc_client import BrowserCaller

OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2)


def tone(freq: float, seconds: float, rate: int, amplitude: float = 8000) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * amplitude).astype(np.int16)


def peak_hz(pcm: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / rate)[np.argmax(spectrum)])


# --- audio conversions -------------------------------------------------------------------------------


def test_opus_from_the_browser_becomes_the_pipelines_8khz_frames_and_their_16khz_copy():
    """48 kHz audio through aiortc's real Opus encoder and decoder, then Inbound: 20 ms frames of
    160 samples at 8 kHz, the same tone at about the same level, each with the same 20 ms at 16 kHz."""
    encoder, decoder, inbound = get_encoder(OPUS), get_decoder(OPUS), Inbound()
    sent = tone(440, 1.0, 48000)
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    for n, at in enumerate(range(0, len(sent), 960)):
        both = np.repeat(sent[at:at + 960], 2).reshape(1, -1)  # a browser's mono decodes as two equal sides
        frame = AudioFrame.from_ndarray(both, format="s16", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = 48000, n * 960, fractions.Fraction(1, 48000)
        payloads, _ = encoder.encode(frame)
        for payload in payloads:
            for decoded in decoder.decode(JitterFrame(data=payload, timestamp=n * 960)):
                assert decoded.sample_rate == 48000
                pairs.extend(inbound.frames(decoded))
    out = [narrow for narrow, _ in pairs]
    assert out and all(len(frame) == FRAME_SAMPLES and frame.dtype == np.int16 for frame in out)
    assert all(len(wide) == 2 * FRAME_SAMPLES and wide.dtype == np.int16 for _, wide in pairs)
    wide = np.concatenate([wide for _, wide in pairs])[1600:]
    assert abs(peak_hz(wide, 16000) - 440) < 10
    assert len(out) * FRAME_SAMPLES > 0.8 * 8000  # the codec's lookahead and the resampler hold a little back
    pcm = np.concatenate(out)[800:]  # past the codec's start-up
    assert abs(peak_hz(pcm, 8000) - 440) < 10
    rms = np.sqrt(np.mean(pcm.astype(np.float64) ** 2))
    assert 0.8 < rms / (8000 / np.sqrt(2)) < 1.2


async def test_the_bots_opus_is_what_a_browser_decodes_to_the_same_voice_at_its_time():
    """The track's own Opus (mono, at the bot's 8 kHz) through aiortc's sender path (`pack`: the packet as
    it is, its timestamp on the 48 kHz RTP clock) and a browser-like decoder (48 kHz stereo): the same
    tone at the same level, each packet stamped with its 20 ms slot."""
    clock, encoder, decoder = FakeClock(), get_encoder(OPUS), get_decoder(OPUS)
    track = BotTrack(lambda name: None, clock=clock, sleep=clock.sleep)
    track.push(tone(440, 1.0, 8000))
    out, stamps = [], []
    for _ in range(50):
        payloads, timestamp = encoder.pack(await track.recv())
        stamps.append(timestamp)
        for payload in payloads:
            for decoded in decoder.decode(JitterFrame(data=payload, timestamp=timestamp)):
                assert decoded.sample_rate == 48000
                out.append(decoded.to_ndarray().reshape(-1, 2)[:, 0])
    assert stamps == [960 * n for n in range(50)]
    pcm = np.concatenate(out)[4800:]  # past the codec's start-up
    assert abs(peak_hz(pcm, 48000) - 440) < 10
    rms = np.sqrt(np.mean(pcm.astype(np.float64) ** 2))
    assert 0.8 < rms / (8000 / np.sqrt(2)) < 1.2


def test_inbound_takes_stereo_and_any_rate():
    inbound, frames = Inbound(), []
    left = tone(300, 0.5, 16000)
    for at in range(0, len(left), 320):
        piece = left[at:at + 320]
        stereo = np.stack([piece, piece]).T.reshape(1, -1)  # packed s16, interleaved
        frame = AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
        frame.sample_rate = 16000
        frames += [narrow for narrow, _ in inbound.frames(frame)]
    assert all(len(f) == FRAME_SAMPLES for f in frames)
    assert len(frames) * FRAME_SAMPLES >= 0.4 * 8000
    assert abs(peak_hz(np.concatenate(frames), 8000) - 300) < 20


async def _drain(track: BotTrack, n: int) -> list[AudioFrame]:
    return [await track.frame() for _ in range(n)]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_the_bots_audio_is_paced_at_20_ms_a_frame_with_silence_between():
    clock, marks = FakeClock(), []
    track = BotTrack(marks.append, clock=clock, sleep=clock.sleep)
    track.push(tone(300, 0.05, 8000))  # 2.5 frames: the half frame waits for the mark
    track.mark("m1")
    frames = await _drain(track, 5)
    assert [f.pts for f in frames] == [0, 160, 320, 480, 640]
    assert all(f.sample_rate == 8000 and f.samples == 160 for f in frames)
    assert clock.slept == pytest.approx([0.02] * 4)  # one frame time between frames, none before the first
    levels = [np.abs(f.to_ndarray()).max() for f in frames]
    assert levels[0] > 1000 and levels[1] > 1000 and levels[2] > 1000  # the tail went out padded
    assert levels[3] == 0 and levels[4] == 0  # then silence: the stream never stalls
    assert marks == ["m1"]  # once the frame before it had its time
    assert track.audio_frames_sent == 3


async def test_a_mark_comes_back_only_after_its_audio_went_out():
    clock, marks = FakeClock(), []
    track = BotTrack(marks.append, clock=clock, sleep=clock.sleep)
    track.push(tone(300, 0.06, 8000))
    track.mark("after-3")
    await _drain(track, 3)
    assert marks == []
    await _drain(track, 1)
    assert marks == ["after-3"]


async def test_clear_stops_the_bot_at_once_and_hands_back_its_marks():
    clock, marks = FakeClock(), []
    track = BotTrack(marks.append, clock=clock, sleep=clock.sleep)
    track.push(tone(300, 1.0, 8000))
    track.mark("a")
    track.push(tone(300, 1.0, 8000))
    track.mark("b")
    first = await _drain(track, 2)
    assert all(np.abs(f.to_ndarray()).max() > 1000 for f in first)
    assert track.queued_ms == 2000 - 40
    track.clear()
    assert marks == ["a", "b"]  # cleared marks come back (as Twilio's do): nothing waits on them
    after = await _drain(track, 3)
    assert all(np.abs(f.to_ndarray()).max() == 0 for f in after)  # the very next frame is silence
    assert track.queued_ms == 0


async def test_a_stalled_sender_skips_the_time_it_lost_instead_of_bursting():
    """After a stall, the bot's next frame is stamped with the time it goes out (a gap the browser hears
    as a short silence), not where the stream left off: a browser's jitter buffer would take the stall
    for network delay and play the rest of the call that much later, barge-ins included."""
    clock, marks = FakeClock(), []
    track = BotTrack(marks.append, clock=clock, sleep=clock.sleep)
    track.push(tone(300, 1.0, 8000))
    before = await _drain(track, 2)
    clock.now += 5.0  # the loop stalled
    clock.slept.clear()
    after = await _drain(track, 3)
    assert clock.slept == pytest.approx([0.02, 0.02])  # paced again from the stall, no burst
    assert [f.pts for f in before] == [0, 160]
    assert [f.pts for f in after] == [8000 * 5 + 160 * k for k in (1, 2, 3)]  # 5.02 s: the slot of now
    assert all(np.abs(f.to_ndarray()).max() > 1000 for f in after)  # the bot's audio resumes, none lost


async def test_a_sender_a_little_late_catches_up_with_its_timestamps_running_on():
    clock, marks = FakeClock(), []
    track = BotTrack(marks.append, clock=clock, sleep=clock.sleep)
    await _drain(track, 2)
    clock.now += 0.05  # a little late (the loop was busy): within MAX_BEHIND_S, the frames go out at once
    clock.slept.clear()
    frames = await _drain(track, 3)
    assert [f.pts for f in frames] == [320, 480, 640] and clock.slept == pytest.approx([0.01])


# --- the wire -------------------------------------------------------------------------------------


def test_the_wire_reads_our_frames_and_the_pages_messages():
    start = wire.parse(wire.start_frame("RTC1", "default", "b", "browser 127.0.0.1"))
    assert isinstance(start, Start)
    assert (start.call_sid, start.custom_parameters["pipeline"], start.custom_parameters["arm"]) == (
        "RTC1", "default", "b")
    media = wire.parse(wire.audio_frame(np.arange(160, dtype=np.int16)))
    assert isinstance(media, Media) and media.pcm.tolist() == list(range(160))
    assert wire.parse(wire.mark_frame("m7")) == Mark("m7")
    assert wire.parse('{"type": "dtmf", "digit": "5"}') == Dtmf("5")
    assert isinstance(wire.parse('{"type": "hangup"}'), Stop)


@pytest.mark.parametrize("raw, why", [
    ('{"type": "start", "call_id": "x"}', "unknown data-channel message type"),  # the page can't start calls
    ('{"type": "mark", "name": "x"}', "unknown data-channel message type"),  # ...nor fake what was heard
    ('{"type": "dtmf", "digit": "X"}', "keypad key"),
    ("not json", "not JSON"),
    ("[1]", "expected an object"),
    ("x" * 5000, "at most"),
    (b"a\x00", "odd-length"),
    (b"zzz", "unknown frame tag"),
])
def test_malformed_frames_raise_badframe_saying_why(raw, why):
    with pytest.raises(BadFrame, match=why):
        wire.parse(raw)


# --- config ---------------------------------------------------------------------------------------

PIPELINE = """
pipelines:
  default:
    greeting: "Hi there."
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
"""


def test_ice_servers_are_read_from_pipeline_yaml():
    config = parse_config("webrtc:\n  ice_servers:\n    - {urls: stun:stun.example.com:3478}\n"
                          "    - {urls: [turn:turn.example.com:3478], username: sb, "
                          "credential_env: SB_TURN}\n" + PIPELINE)
    assert [s.urls for s in config.webrtc.ice_servers] == [["stun:stun.example.com:3478"],
                                                           ["turn:turn.example.com:3478"]]


@pytest.mark.parametrize("server, says", [
    ("{urls: http://example.com}", "is not a STUN or TURN URL: write stun:host:port"),
    ("{urls: turn:t.example.com}", "a TURN server needs username and credential_env"),
    ("{urls: turn:t.example.com, username: u, credential: hunter2}", "set credential_env to the name"),
    ("{urls: stun:s.example.com, username: u}", "a STUN server takes only urls"),
])
def test_a_bad_ice_server_names_the_key_and_the_fix(server, says):
    with pytest.raises(ConfigError) as raised:
        parse_config(f"webrtc:\n  ice_servers:\n    - {server}\n" + PIPELINE)
    assert "webrtc.ice_servers" in str(raised.value) and says in str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_a_turn_credential_missing_from_the_environment_fails_at_start_up(monkeypatch):
    from switchboard.core.errors import MissingCredential

    monkeypatch.delenv("SB_TURN", raising=False)
    config = parse_config("webrtc:\n  ice_servers:\n    - {urls: turn:t.example.com, username: u, "
                          "credential_env: SB_TURN}\n" + PIPELINE)
    with pytest.raises(MissingCredential, match="set SB_TURN"):
        create_app(config, providers={"default": instant()})


# --- whole calls ----------------------------------------------------------------------------------

LONG_REPLY = "Sure thing, let me tell you all about our opening hours and the specials we have tonight."


def instant(stt: InstantSTT | None = None, reply: str = LONG_REPLY) -> Providers:
    return Providers(stt or InstantSTT("what time is it"), InstantLLM(reply), InstantTTS(ms_per_char=50))


def line(seconds: float = 1.0) -> np.ndarray:
    return np.concatenate([speech_like(seconds), quiet(0.05)])


async def test_a_browser_call_greets_answers_takes_barge_in_keys_and_hang_up(tmp_path, monkeypatch):
    """A whole call from an aiortc peer: the greeting and the reply arrive as audio, a barge-in stops the
    bot's audio, keypad keys make a turn, the caller hangs up, and the store has it all."""
    monkeypatch.setenv("SWITCHBOARD_API_TOKEN", "tok")
    recorded = f'greeting: "Hi there."\n    record: true\n    recordings_dir: {tmp_path}'
    config = parse_config(PIPELINE.replace('greeting: "Hi there."', recorded))
    stt = InstantSTT("what time is it")
    app = create_app(config, providers={"default": instant(stt)}, store_url=str(tmp_path / "calls.db"))
    async with running(app) as port:
        caller = BrowserCaller(f"http://127.0.0.1:{port}", token="tok")
        call_id = await caller.call("default")
        try:
            greeting = await caller.bot_spoke(after=0)
            await caller.bot_quiet(0.4)
            ended = await caller.mic.say(line(), 8000)  # "what time is it"
            reply = await caller.bot_spoke(after=ended)
            assert reply > ended > greeting
            await asyncio.sleep(1.0)  # the long reply (~4.5 s) is playing
            stt.text = "wait a moment"
            interrupt_at = asyncio.get_running_loop().time()
            interrupt = caller.mic.say(line(1.2), 8000)
            await caller.bot_quiet(0.4)
            heard = caller.heard.audible_s(reply, asyncio.get_running_loop().time() + 1)
            assert heard < 3.0, f"the bot went on for {heard:.1f} s of its ~4.5 s reply after a barge-in"
            assert interrupt_at  # the interrupting line was said while the reply played
            await interrupt
            await caller.bot_spoke(after=await interrupt)  # the interruption is answered
            await caller.bot_quiet(0.3, timeout_s=20)
            for key in "42#":
                caller.key(key)
            await caller.bot_spoke(after=asyncio.get_running_loop().time())  # the keypad entry is answered
        finally:
            await caller.hang_up()
        await asyncio.wait_for(app.state.host.wait_idle(), 10)
    stored = await store_row(tmp_path / "calls.db", call_id)
    assert stored is not None and stored["carrier"] == "webrtc" and stored["pipeline"] == "default"
    turns = stored["turns"]
    kinds = [t["kind"] for t in turns]
    assert kinds[0] == "greeting" and "keypad" in kinds
    spoken = [t for t in turns if t["transcript"]]
    assert spoken[0]["transcript"] == "what time is it" and spoken[0]["interrupted"]
    assert any(t["transcript"] == "wait a moment" for t in spoken)
    assert spoken[0]["voice_to_voice_ms"] and spoken[0]["voice_to_voice_ms"] > 0
    assert any("42" in (t["transcript"] or "") or t["kind"] == "keypad" for t in turns)
    assert stored["summary"].get("recording") or stored.get("recording")


async def test_the_bot_hangs_up_and_the_page_is_told(monkeypatch):
    monkeypatch.delenv("SWITCHBOARD_API_TOKEN", raising=False)
    config = parse_config(PIPELINE)
    app = create_app(config, providers={"default": instant(InstantSTT("goodbye"), reply="Bye.")})
    async with running(app) as port:
        caller = BrowserCaller(f"http://127.0.0.1:{port}")
        await caller.call("default")
        try:
            await caller.bot_spoke(after=0)
            await caller.bot_quiet(0.4)
            await caller.mic.say(line(), 8000)
            await asyncio.wait_for(caller.hung_up.wait(), 10)  # the farewell, then the server hangs up
        finally:
            await caller.close()
        await asyncio.wait_for(app.state.host.wait_idle(), 10)


async def test_a_page_that_goes_away_without_saying_hangup_ends_the_call(tmp_path, monkeypatch):
    """The tab is closed (no `hangup` on the data channel, the peer connection just closes): the server
    ends the call at once, and the store has it ended with its greeting, as after a hang-up."""
    monkeypatch.delenv("SWITCHBOARD_API_TOKEN", raising=False)
    app = create_app(parse_config(PIPELINE), providers={"default": instant()},
                     store_url=str(tmp_path / "calls.db"))
    async with running(app) as port:
        caller = BrowserCaller(f"http://127.0.0.1:{port}")
        call_id = await caller.call("default")
        await caller.bot_spoke(after=0)
        await caller.close()  # no hangup message first
        await asyncio.wait_for(app.state.host.wait_idle(), 10)
    stored = await store_row(tmp_path / "calls.db", call_id)
    assert stored is not None and stored["ended_at"] is not None and stored["carrier"] == "webrtc"
    assert stored["turns"][0]["kind"] == "greeting"


async def test_an_offer_without_the_token_is_refused_and_a_bad_one_says_why(monkeypatch):
    monkeypatch.setenv("SWITCHBOARD_API_TOKEN", "tok")
    app = create_app(parse_config(PIPELINE), providers={"default": instant()})
    async with running(app) as port:
        base = f"http://127.0.0.1:{port}"
        caller = BrowserCaller(base)  # no token
        refused = await caller.offer("default")
        await caller.close()
        assert refused.status_code == 401
        async with httpx.AsyncClient() as client:
            auth = {"Authorization": "Bearer tok"}
            unknown = await client.post(f"{base}/webrtc/offer", headers=auth,
                                        json={"sdp": "v=0\r\n", "type": "offer", "pipeline": "nope"})
            assert unknown.status_code == 400 and "known: default" in unknown.json()["error"]
            form = await client.post(f"{base}/webrtc/offer", headers=auth, data={"sdp": "v=0"})
            assert form.status_code == 400 and "application/json" in form.json()["error"]
            garbage = await client.post(f"{base}/webrtc/offer", headers=auth,
                                        json={"sdp": "v=0\r\nnonsense", "pipeline": "default"})
            assert garbage.status_code == 400 and "could not answer the offer" in garbage.json()["error"]
            ice = await client.get(f"{base}/webrtc/ice", headers=auth)
            assert ice.json() == {"iceServers": []}
            assert (await client.get(f"{base}/webrtc/ice")).status_code == 401
        assert app.state.calls == {}


async def test_a_browser_call_can_pick_an_arm_of_a_split(tmp_path, monkeypatch):
    """"Talk to it" per arm: the offer names the arm; the call is recorded under the split with that arm
    as its variant, whatever the draw would have given."""
    monkeypatch.delenv("SWITCHBOARD_API_TOKEN", raising=False)
    config = parse_config("""
pipelines:
  default:
    kind: split
    variants:
      - {name: first, weight: 1000, pipeline: one}
      - {name: second, weight: 1, pipeline: two}
  one:
    greeting: "One here."
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
  two:
    greeting: "Two here, a longer greeting."
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
""")
    app = create_app(config, providers={"one": instant(), "two": instant()},
                     store_url=str(tmp_path / "calls.db"))
    async with running(app) as port:
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as client:
            wrong = await client.post(f"{base}/webrtc/offer", json={"sdp": "v=0\r\n", "pipeline": "default",
                                                                     "arm": "third"})
            assert wrong.status_code == 400 and "its arms: first, second" in wrong.json()["error"]
        caller = BrowserCaller(base)
        call_id = await caller.call("default", arm="second")
        try:
            await caller.bot_spoke(after=0)
        finally:
            await caller.hang_up()
        await asyncio.wait_for(app.state.host.wait_idle(), 10)
    stored = await store_row(tmp_path / "calls.db", call_id)
    assert stored["pipeline"] == "default" and stored["variant"] == "second"
    assert stored["turns"][0]["reply_text"].startswith("Two here")
