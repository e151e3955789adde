"""eSpeak NG through ctypes: plausible durations, stream == synthesize, voices, global-state safety."""

from __future__ import annotations

import asyncio
import re

import numpy as np
import pytest

from switchboard.core.protocols import TTS
from switchboard.providers.espeak import SAMPLE_RATE, EspeakTTS, EspeakTTSConfig, synthesize

SENTENCE = "Hello, thanks for calling. How can I help you today?"  # 10 words


def seconds(pcm: np.ndarray) -> float:
    return len(pcm) / SAMPLE_RATE


def same_speech(a: np.ndarray, b: np.ndarray) -> bool:
    """Two renderings of one text with one voice: eSpeak's pitch flutter carries over between texts, so
    they differ by a few samples, but not in length (< 0.1%) or loudness envelope (r > 0.99). Another
    voice or pitch gives r ≈ 0.85-0.97; another rate a different length."""
    if abs(len(a) - len(b)) > 0.001 * len(b):
        return False
    n = min(len(a), len(b)) // 441 * 441  # 20 ms frames

    def envelope(pcm: np.ndarray) -> np.ndarray:
        return np.sqrt(np.square(pcm[:n].astype(np.float64)).reshape(-1, 441).mean(axis=1))

    return float(np.corrcoef(envelope(a), envelope(b))[0, 1]) > 0.99


def tts(voice: str = "en-us+klatt4", rate: int = 175, pitch: int = 50) -> EspeakTTS:
    return EspeakTTS(EspeakTTSConfig(provider="espeak", voice=voice, rate=rate, pitch=pitch))


async def streamed(engine: TTS, text: str) -> list[np.ndarray]:
    return [chunk async for chunk in engine.stream(text)]


def test_a_ten_word_sentence_lasts_as_long_as_spoken_speech() -> None:
    pcm = synthesize(SENTENCE)
    assert pcm.dtype == np.int16 and pcm.ndim == 1
    assert 1.5 < seconds(pcm) < 6.0
    assert np.abs(pcm).max() > 3000  # speech, not silence


def test_a_faster_rate_is_shorter() -> None:
    normal, fast = seconds(synthesize(SENTENCE, rate=175)), seconds(synthesize(SENTENCE, rate=300))
    assert fast < 0.75 * normal


def test_voice_and_pitch_change_the_audio() -> None:
    assert same_speech(synthesize(SENTENCE, voice="en-us+f3"), synthesize(SENTENCE, voice="en-us+f3"))
    assert not same_speech(synthesize(SENTENCE, voice="en-us+f3"), synthesize(SENTENCE, voice="en-us+klatt4"))
    assert not same_speech(synthesize(SENTENCE, pitch=20), synthesize(SENTENCE, pitch=80))


async def test_stream_gives_what_synthesize_gives() -> None:
    engine = tts(voice="en-us+f3", rate=200, pitch=60)
    chunks = await streamed(engine, SENTENCE)
    assert chunks and all(chunk.dtype == np.int16 for chunk in chunks)
    assert same_speech(np.concatenate(chunks), synthesize(SENTENCE, voice="en-us+f3", rate=200, pitch=60))


async def test_settings_do_not_leak_between_concurrent_syntheses() -> None:
    """libespeak-ng is global: each synthesis must use its own voice, rate and pitch."""
    engines = [tts("en-us+f3", 175, 50), tts("en-us+klatt4", 300, 20), tts("en-us+m3", 120, 80)]
    results = await asyncio.gather(*(streamed(engine, SENTENCE) for engine in engines * 2))
    for engine, chunks in zip(engines * 2, results, strict=True):
        expected = synthesize(SENTENCE, voice=engine.voice, rate=engine.rate, pitch=engine.pitch)
        assert same_speech(np.concatenate(chunks), expected)


async def test_blank_text_streams_nothing() -> None:
    assert await streamed(tts(), "  ") == []


def test_interface_attributes() -> None:
    engine = tts("en-us+f3")
    assert (engine.vendor, engine.model, engine.sample_rate) == ("espeak", "en-us+f3", 22050)


@pytest.mark.parametrize("voice", ["no-such-voice", "en-us+no-such-variant"])
def test_an_unknown_voice_is_refused_at_construction(voice: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(voice))):
        tts(voice)
    with pytest.raises(ValueError, match=re.escape(repr(voice))):
        synthesize("hello", voice=voice)
