"""The embedded neural engines: Moonshine and Whisper hear real people on a phone line, Piper speaks.

The models load once per test session (each engine caches its loaded model per process, as the server
does). Real recordings come from ../shared/speech/ and are skipped, saying so, where it is absent.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest

from switchboard.audio.g711 import ulaw_decode, ulaw_encode
from switchboard.audio.resample import resample
from switchboard.audio.wav import read_wav
from switchboard.config import parse_config
from switchboard.core.errors import MissingEngine
from switchboard.pipeline.build import build_providers
from switchboard.providers import moonshine, registry
from switchboard.providers.espeak import EspeakTTS
from switchboard.providers.moonshine import MoonshineSTT, MoonshineSTTConfig
from switchboard.providers.piper import PiperTTS, PiperTTSConfig
from switchboard.providers.whisper import WhisperSTT, WhisperSTTConfig

SPEECH = Path(__file__).resolve().parent.parent.parent / "shared" / "speech"

# recordings of real people, and words each recogniser must hear in them (numbers as words or digits)
CLIPS = {
    "librispeech_251_testing_routine_question.wav": ["testing", "routine"],
    "arctic_axb_a0006_indian_female.wav": ["bless", "forever"],  # Indian English
    "command_go_forward_ten_meters.wav": ["forward", "(ten|10)"],  # quiet
    "librivox_austen_0870_long_sentence.wav": ["dashwood", "leisure"],  # pauses
}


def phone_line(path: Path) -> np.ndarray:
    """A recording as a recogniser gets it on a call: 8 kHz μ-law, back to 16 kHz."""
    pcm, rate = read_wav(path)
    return resample(ulaw_decode(ulaw_encode(resample(pcm, rate, 8000))), 8000, 16000)


@pytest.fixture(scope="module")
def recognisers():
    return {"moonshine": MoonshineSTT(MoonshineSTTConfig(provider="moonshine")),
            "whisper": WhisperSTT(WhisperSTTConfig(provider="whisper"))}


@pytest.mark.parametrize("clip", sorted(CLIPS))
@pytest.mark.parametrize("engine", ["moonshine", "whisper"])
async def test_real_people_are_heard_through_the_phone_line(recognisers, engine, clip):
    if not (SPEECH / clip).is_file():
        pytest.skip(f"the real recordings are not here ({SPEECH})")
    text = (await recognisers[engine].transcribe(phone_line(SPEECH / clip))).text.lower()
    for word in CLIPS[clip]:
        assert re.search(rf"\b{word}\b", text), f"{engine} heard {text!r} in {clip}, missing {word!r}"


async def test_silence_gives_no_words(recognisers):
    for stt in recognisers.values():
        assert (await stt.transcribe(np.zeros(16000, np.int16))).text == ""


async def test_an_utterance_longer_than_the_window_is_split_not_refused(recognisers, caplog):
    long = np.zeros(int(16000 * (moonshine.WINDOW_S + 5)), np.int16)
    with caplog.at_level(logging.WARNING):
        transcript = await recognisers["moonshine"].transcribe(long)
    assert transcript.text == ""
    assert "longer than the 30 s window: recognised in 2 pieces" in caplog.text


def test_a_missing_model_is_a_start_up_error_naming_the_package(monkeypatch):
    import moonshine_voice

    monkeypatch.setattr(moonshine_voice, "get_model_path", lambda model: Path("/nonexistent") / model)
    with pytest.raises(MissingEngine, match=r"install it with: pip install 'moonshine-voice==0.0.73'"):
        moonshine._Engine("tiny-en")


def test_every_call_shares_one_loaded_model():
    first = registry.build("stt", MoonshineSTTConfig(provider="moonshine"))
    assert registry.build("stt", MoonshineSTTConfig(provider="moonshine")) is first
    other_settings = MoonshineSTT(MoonshineSTTConfig(provider="moonshine", workers=2))
    assert other_settings._engine is first._engine  # other settings, still the one model in memory


async def test_piper_speaks_a_sentence_with_headroom():
    tts = PiperTTS(PiperTTSConfig(provider="piper"))
    chunks = [chunk async for chunk in tts.stream("We are open from noon until ten at night.")]
    pcm = np.concatenate(chunks)
    seconds = len(pcm) / tts.sample_rate
    assert tts.sample_rate == 22050 and 1.5 < seconds < 5
    assert np.abs(pcm.astype(np.int32)).max() <= 0.9 * 32767 + 1  # volume 0.9: resampling won't clip
    assert np.abs(resample(pcm, tts.sample_rate, 8000).astype(np.int32)).max() < 32767


async def test_piper_is_heard_by_the_recogniser(recognisers):
    tts = PiperTTS(PiperTTSConfig(provider="piper"))
    pcm = np.concatenate([chunk async for chunk in tts.stream("I would like to book a table for two.")])
    line = resample(ulaw_decode(ulaw_encode(resample(pcm, tts.sample_rate, 8000))), 8000, 16000)
    text = (await recognisers["moonshine"].transcribe(line)).text.lower()
    assert "book a table" in text


PIPELINE = """
pipelines:
  default:
    stt: {provider: moonshine}
    llm: {provider: scripted}
    tts: TTS
"""


def test_espeak_is_always_the_last_voice_to_try():
    built = build_providers(parse_config(PIPELINE.replace("TTS", "{provider: piper}")).pipeline())
    assert isinstance(built.tts[0].provider, PiperTTS)
    assert [type(tts) for tts in built.fallback_tts] == [EspeakTTS]
    only_espeak = build_providers(parse_config(PIPELINE.replace("TTS", "{provider: espeak}")).pipeline())
    assert only_espeak.fallback_tts == []  # eSpeak is the voice already: nothing to add
