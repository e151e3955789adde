"""A browser call's 16 kHz audio reaches the recognisers that want it (pipeline/wideband.py): the slice
each utterance gets is the same stretch as its 8 kHz audio, at a pause, after the caller went on, and once
it ended; a cloud recogniser uploads it, an 8 kHz-preferring engine and a phone call don't."""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import Callable

import numpy as np
import pytest
from av import AudioFrame

from switchboard.audio.resample import resample
from switchboard.audio.segmenter import Pause, SegmenterEvent, Utterance
from switchboard.config import parse_config
from switchboard.pipeline.call import CallSession, Providers
from switchboard.pipeline.wideband import WideAudio
from switchboard.providers.openai import OpenAISTTConfig
from switchboard.providers.openai.adapter import OpenAISTT
from switchboard.server import create_app, running
from switchboard.telephony.webrtc import wire
from switchboard.telephony.webrtc.media import Inbound
from tests.fakes.common import Faults
from tests.fakes.instant import InstantLLM, InstantSTT, InstantTTS
from tests.fakes.openai_fake import OpenAIScript, make_app
from tests.speech import quiet, speech_like

WIDE, NARROW = 16000, 8000


def high_band(pcm: np.ndarray, rate: int) -> float:
    """The share of the signal's energy above 4 kHz: what an 8 kHz line cannot carry."""
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(pcm), 1 / rate)
    return float(spectrum[freqs > 4200].sum() / spectrum.sum())


def voice(seconds: float) -> np.ndarray:
    """Speech-like audio at 16 kHz with a sibilant-like 6 kHz band (as an "s" has), which 8 kHz loses."""
    t = np.arange(round(seconds * WIDE)) / WIDE
    hiss = np.sin(2 * np.pi * 6000 * t) * 2500 * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t))
    return (speech_like(seconds, rate=WIDE).astype(np.float64) + hiss).astype(np.int16)


def caller(*parts: tuple[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """The caller's audio at 16 kHz and 8 kHz (the same, aligned sample for sample): ("speech", s) and
    ("quiet", s) parts."""
    pieces = [voice(seconds) if kind == "speech" else quiet(seconds, rate=WIDE, seed=n)
              for n, (kind, seconds) in enumerate(parts)]
    wide = np.concatenate(pieces)
    wide = wide[:len(wide) - len(wide) % 320]
    return wide, resample(wide, WIDE, NARROW)


class Link:
    holds_ms = 0
    transfers = False

    def __init__(self, wideband_rate: int | None) -> None:
        self.wideband_rate = wideband_rate

    async def send_audio(self, pcm: np.ndarray) -> None:
        pass

    async def send_mark(self, name: str) -> None:
        pass

    async def send_clear(self) -> None:
        pass

    async def hang_up(self) -> None:
        pass

    async def transfer(self, target: str) -> bool:
        return False


class WidebandSTT(InstantSTT):
    wideband = True  # as a cloud recogniser declares


PIPELINE = """
pipelines:
  default:
    greeting: "%s"
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
    turn: {speculate_after_ms: %d}
    idle: {reminder_after_s: 0}
"""


async def talk(stt, wide: np.ndarray, narrow: np.ndarray, wideband: bool = True, speculate_ms: int = 120,
               greeting: str = "") -> list[Utterance | Pause]:
    """Feed a call the caller's audio frame by frame (as a WebRTC call's frames: 8 kHz and its 16 kHz
    copy, or as a phone call's: 8 kHz alone), faster than real time; return the segmenter's utterances
    and pauses."""
    config = parse_config(PIPELINE % (greeting, speculate_ms)).pipeline(None)
    session = CallSession("RTCwide", config, Providers(stt, InstantLLM("Sure."), InstantTTS()),
                          Link(WIDE if wideband else None))
    seen: list[Utterance | Pause] = []

    def spied(method: Callable[..., list[SegmenterEvent]]) -> Callable[..., list[SegmenterEvent]]:
        def run(*args: object) -> list[SegmenterEvent]:
            events = method(*args)
            seen.extend(e for e in events if isinstance(e, (Utterance, Pause)))
            return events
        return run

    session.segmenter.push = spied(session.segmenter.push)  # type: ignore[method-assign]
    session.segmenter.tick = spied(session.segmenter.tick)  # type: ignore[method-assign]
    await session.start()
    start = time.monotonic() + 1.0  # ahead of the wall clock: the tick never sees a gap in the frames
    try:
        for n in range(len(narrow) // 160):
            await session.on_audio(narrow[n * 160:(n + 1) * 160], start + n * 0.02,
                                   wide=wide[n * 320:(n + 1) * 320] if wideband else None)
            await asyncio.sleep(0.001)  # a speculation's transcription starts before the caller goes on
        await asyncio.sleep(0.1)
    finally:
        await session.close()
    return seen


def at(signal: np.ndarray, event: Utterance | Pause, ratio: int) -> np.ndarray:
    return signal[event.start * ratio:(event.start + len(event.pcm)) * ratio]


# --- the ring -----------------------------------------------------------------------------------------


def test_the_ring_gives_the_same_stretch_at_twice_the_samples_across_its_wrap():
    wide, narrow = caller(("speech", 3.0))
    ring = WideAudio(WIDE, keep_s=1.0)
    for n in range(len(narrow) // 160):
        ring.add(narrow[n * 160:(n + 1) * 160], wide[n * 320:(n + 1) * 320])
    end = len(narrow)
    assert np.array_equal(ring.slice(end - 7000, 6000), wide[2 * (end - 7000):2 * (end - 1000)])  # wraps
    assert ring.slice(end - 9000, 100) is None  # older than the ring
    assert ring.slice(end - 100, 200) is None  # not come yet


def test_a_frame_without_its_copy_sends_the_utterances_over_it_to_8khz():
    ring = WideAudio(WIDE, keep_s=2.0)
    ring.add(np.zeros(160, np.int16), np.ones(320, np.int16))
    ring.add(np.zeros(160, np.int16), None)
    ring.add(np.zeros(160, np.int16), np.ones(100, np.int16))  # the wrong length
    ring.add(np.zeros(160, np.int16), np.full(320, 7, np.int16))
    assert ring.slice(0, 320) is None and ring.slice(320, 160) is None
    assert ring.slice(480, 160).tolist() == [7] * 320


def test_the_carriers_16khz_copy_is_the_same_audio_as_its_8khz_frames_sample_for_sample():
    """Inbound (48 kHz from the decoder): 16 kHz sample 2i is 8 kHz sample i, not a few ms off."""
    rng = np.random.default_rng(1)
    band = resample(rng.normal(0, 3000, 48000 // 4).astype(np.int16), 12000, 48000)  # < 3.4 kHz wiggles
    inbound, pairs = Inbound(), []
    for n, offset in enumerate(range(0, len(band) - 960, 960)):
        frame = AudioFrame.from_ndarray(band[offset:offset + 960].reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 48000, n * 960, fractions.Fraction(1, 48000)
        pairs += inbound.frames(frame)
    narrow = np.concatenate([p for p, _ in pairs]).astype(np.float64)[400:]
    wide_at_8k = np.concatenate([w for _, w in pairs]).astype(np.float64)[800::2]
    lags = {lag: float(np.dot(narrow[20:-20], np.roll(wide_at_8k, lag)[20:-20])) for lag in range(-3, 4)}
    assert max(lags, key=lags.get) == 0, lags


def test_the_wire_carries_both_and_refuses_a_frame_that_is_not_both():
    frame = wire.parse(wire.audio_frame(np.arange(160, dtype=np.int16), np.arange(320, dtype=np.int16)))
    assert frame.pcm.tolist() == list(range(160)) and frame.wide.tolist() == list(range(320))
    assert wire.parse(wire.audio_frame(np.arange(160, dtype=np.int16))).wide is None
    with pytest.raises(ValueError, match="bytes is not 8 kHz"):
        wire.parse(b"w" + bytes(10))


def test_every_utterance_says_where_its_audio_starts_in_the_stream_across_cuts_and_chunks():
    """`start` is the index of its first sample among all pushed, whatever the chunk sizes: long speech
    cut at `max_utterance_s` (each piece goes on from the last), then a new utterance after a silence."""
    from switchboard.audio.segmenter import Segmenter

    stream = np.concatenate([quiet(0.5), speech_like(2.5), quiet(1.0), speech_like(0.8), quiet(1.0)])
    segmenter = Segmenter(max_utterance_s=1.0, speculate_after_ms=0)
    events, at, pushed = [], 0, 0
    for size in [137, 160, 333, 80] * 200:  # chunks of any length, not whole frames
        if pushed >= len(stream):
            break
        events += segmenter.push(stream[pushed:pushed + size], at := at + size / NARROW)
        pushed += size
    utterances = [e for e in events if isinstance(e, Utterance)]
    assert len(utterances) >= 3 and any(u.forced for u in utterances)
    for utterance in utterances:
        assert np.array_equal(utterance.pcm, stream[utterance.start:utterance.start + len(utterance.pcm)])


# --- a call ------------------------------------------------------------------------------------------


async def test_speculation_and_the_resumed_utterance_get_the_same_stretch_at_16khz():
    """A pause (a speculative transcription), the caller goes on (`Resumed`), then a second pause and the
    end: each transcription hands the wideband recogniser exactly its stretch of the 16 kHz audio, from
    the same first sample, and the 8 kHz audio it stands for is that stretch of the call's 8 kHz."""
    wide, narrow = caller(("quiet", 0.5), ("speech", 1.0), ("quiet", 0.2), ("speech", 0.8), ("quiet", 1.2))
    stt = WidebandSTT("what time is it")
    seen = await talk(stt, wide, narrow)
    pauses = [e for e in seen if isinstance(e, Pause)]
    ends = [e for e in seen if isinstance(e, Utterance)]
    assert len(pauses) >= 2 and len(ends) == 1, seen
    assert {e.start for e in seen} == {ends[0].start}  # one utterance, resumed after its first pause
    assert len(pauses[-1].pcm) > len(pauses[0].pcm) + 0.8 * NARROW  # the second pause holds both parts
    for event in seen:
        assert np.array_equal(event.pcm, at(narrow, event, 1))
    assert len(stt.heard) == len(pauses)  # each pause transcribed; the end committed the last one
    for heard, pause in zip(stt.heard, pauses, strict=True):
        assert len(heard) == 2 * len(pause.pcm)
        assert np.array_equal(heard, at(wide, pause, 2))
        assert high_band(heard, WIDE) > 0.05


async def test_an_utterance_without_speculation_gets_its_stretch_at_16khz():
    wide, narrow = caller(("quiet", 0.4), ("speech", 1.2), ("quiet", 1.0))
    stt = WidebandSTT("hello")
    seen = await talk(stt, wide, narrow, speculate_ms=0)
    (utterance,) = seen
    (heard,) = stt.heard
    assert np.array_equal(heard, at(wide, utterance, 2))


async def test_an_8khz_preferring_recogniser_still_gets_the_8khz_audio_upsampled():
    wide, narrow = caller(("quiet", 0.4), ("speech", 1.2), ("quiet", 1.0))
    stt = InstantSTT("hello")  # wideband = False, as Moonshine, Whisper and PocketSphinx declare
    seen = await talk(stt, wide, narrow, speculate_ms=0)
    (utterance,) = seen
    (heard,) = stt.heard
    assert np.array_equal(heard, resample(utterance.pcm, NARROW, 16000))
    assert high_band(heard, 16000) < 0.001


async def test_words_said_over_the_bot_are_judged_on_their_16khz_audio():
    """The caller says something over the greeting: the bot pauses, and what they said (at its pause, and
    once it ended) is transcribed aside to judge it: at 16 kHz, exactly its stretch, for a wideband
    recogniser."""
    wide, narrow = caller(("quiet", 1.0), ("speech", 0.5), ("quiet", 0.15), ("speech", 0.4), ("quiet", 1.0))
    stt = WidebandSTT("yeah")  # a backchannel: the bot goes on
    greeting = "Hello and welcome to the restaurant, how can I help you today with your booking?"
    seen = await talk(stt, wide, narrow, greeting=greeting)
    assert seen and len(stt.heard) >= 2  # judged at a pause and at the end, at least
    assert len(stt.heard) == len(seen), (len(stt.heard), seen)
    for heard, event in zip(stt.heard, seen, strict=True):
        assert np.array_equal(heard, at(wide, event, 2))


# --- OpenAI's recogniser, against its fake -----------------------------------------------------------


@pytest.fixture
async def openai(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fake")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    script, uploads = OpenAIScript(), []

    def transcribe(pcm: np.ndarray) -> str:
        uploads.append(pcm)
        return "what time is it"

    script.transcribe = transcribe
    async with running(make_app(Faults(), script)) as port:
        config = OpenAISTTConfig(provider="openai", base_url=f"http://127.0.0.1:{port}/v1")
        yield OpenAISTT(config), script, uploads


@pytest.mark.parametrize("wideband", [True, False], ids=["webrtc", "twilio"])
async def test_openai_gets_the_browser_calls_16khz_and_a_phone_calls_8khz_upsampled(openai, wideband):
    stt, script, uploads = openai
    wide, narrow = caller(("quiet", 0.4), ("speech", 1.2), ("quiet", 1.0))
    seen = await talk(stt, wide, narrow, wideband=wideband, speculate_ms=0)
    (utterance,) = seen
    (info,) = script.uploads
    (pcm,) = uploads
    assert (info["sample_rate"], info["channels"], info["frames"]) == (16000, 1, 2 * len(utterance.pcm))
    if wideband:  # the caller's own 16 kHz: the 6 kHz band is there
        assert np.array_equal(pcm, at(wide, utterance, 2)) and high_band(pcm, 16000) > 0.05
    else:  # as before: the 8 kHz audio upsampled, nothing above 4 kHz
        assert np.array_equal(pcm, resample(utterance.pcm, NARROW, 16000)) and high_band(pcm, 16000) < 0.001


async def test_a_browser_call_uploads_its_16khz_to_openai_end_to_end(openai, monkeypatch):
    """An aiortc peer as the browser says a line with a 6 kHz band: through Opus, the carrier's `w`
    frames and the server's dispatch, OpenAI's upload carries that band (16 kHz, not 8 kHz upsampled)."""
    from tests.test_webrtc import PIPELINE as WEBRTC_PIPELINE
    from tests.webrtc_client import BrowserCaller

    stt, script, uploads = openai
    monkeypatch.delenv("SWITCHBOARD_API_TOKEN", raising=False)
    providers = Providers(stt, InstantLLM("Sure."), InstantTTS(ms_per_char=20))
    app = create_app(parse_config(WEBRTC_PIPELINE), providers={"default": providers})
    async with running(app) as port:
        caller = BrowserCaller(f"http://127.0.0.1:{port}")
        await caller.call("default")
        try:
            await caller.bot_spoke(after=0)
            await caller.bot_quiet(0.3)
            ended = await caller.mic.say(np.concatenate([voice(1.2), quiet(0.1, rate=WIDE)]), WIDE)
            await caller.bot_spoke(after=ended)  # answered: the utterance was transcribed
        finally:
            await caller.hang_up()
        await asyncio.wait_for(app.state.host.wait_idle(), 10)
    assert uploads and script.uploads[0]["sample_rate"] == 16000
    assert high_band(uploads[0], 16000) > 0.05, [high_band(pcm, 16000) for pcm in uploads]
