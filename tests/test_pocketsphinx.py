"""PocketSphinx on eSpeak callers through the telephone path; its grammar, decoder pool and registry."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest

from switchboard.audio.g711 import ulaw_decode, ulaw_encode
from switchboard.audio.resample import resample
from switchboard.core.errors import ProviderError
from switchboard.providers import registry
from switchboard.providers.espeak import SAMPLE_RATE as TTS_RATE
from switchboard.providers.espeak import EspeakTTS, EspeakTTSConfig, synthesize
from switchboard.providers.pocketsphinx import (
    DecoderPool,
    PocketsphinxSTT,
    PocketsphinxSTTConfig,
    build_jsgf,
    normalize_phrases,
)
from switchboard.providers.scripted import ScriptedLLM, ScriptedLLMConfig, ScriptedRule
from tests.speech import quiet

CALLER_VOICE = "en-us+klatt4"  # recognised best of the voices measured (bench/stt_accuracy.py)
PHRASES = [
    "what are your opening hours",
    "i would like to book a table",
    "for four people at seven",
    "where are you located",
    "do you have vegetarian options",
    "can i speak to a human",
    "thank you goodbye",
    "hello",
]
SPOKEN = ["what are your opening hours", "for four people at seven", "do you have vegetarian options",
          "thank you goodbye", "hello"]


def telephone(text: str, voice: str = CALLER_VOICE) -> np.ndarray:
    """`text` as the STT gets it on a call: 8 kHz μ-law, with the segmenter's 300 ms pre-roll and short
    tail of line noise, then 16 kHz."""
    line = ulaw_decode(ulaw_encode(resample(synthesize(text, voice=voice), TTS_RATE, 8000)))
    utterance = np.concatenate([quiet(0.3, seed=1), line, quiet(0.2, seed=2)])
    return resample(utterance, 8000, 16000)


def stt(mode: str = "grammar", phrases: list[str] = PHRASES, pool_size: int = 1) -> PocketsphinxSTT:
    config = PocketsphinxSTTConfig(provider="pocketsphinx", mode=mode, pool_size=pool_size)
    return PocketsphinxSTT(config, phrases)


@pytest.fixture(scope="module")
def grammar_stt() -> PocketsphinxSTT:
    return stt()


# --- recognition ---------------------------------------------------------------------------------


@pytest.mark.parametrize("phrase", SPOKEN)
async def test_grammar_mode_recognises_each_phrase_exactly(grammar_stt: PocketsphinxSTT, phrase: str) -> None:
    assert (await grammar_stt.transcribe(telephone(phrase))).text == phrase


async def test_the_first_utterance_of_a_fresh_decoder_is_recognised() -> None:
    assert (await stt().transcribe(telephone("where are you located"))).text == "where are you located"


async def test_another_caller_voice_is_recognised_too(grammar_stt: PocketsphinxSTT) -> None:
    heard = await grammar_stt.transcribe(telephone("i would like to book a table", voice="en-us+f2"))
    assert heard.text == "i would like to book a table"


async def test_lm_mode_hears_words_without_any_phrases() -> None:
    general = stt(mode="lm", phrases=[])
    assert general.model == "en-us/lm"
    assert (await general.transcribe(telephone("what are your opening hours"))).text.split()


async def test_keyphrase_mode_reports_only_whole_phrases() -> None:
    """Spotting misses many utterances (see bench/stt_accuracy.py) but never reports a fragment."""
    spotter = stt(mode="keyphrase")
    heard = [(await spotter.transcribe(telephone(phrase))).text for phrase in SPOKEN]
    assert set(heard) <= {"", *PHRASES}
    assert "what are your opening hours" in heard


@pytest.mark.parametrize("mode", ["grammar", "keyphrase", "lm"])
async def test_silence_gives_no_words(mode: str) -> None:
    recognizer = stt(mode=mode)
    assert (await recognizer.transcribe(np.zeros(16000, dtype=np.int16))).text == ""
    assert (await recognizer.transcribe(resample(quiet(1.0), 8000, 16000))).text == ""
    assert (await recognizer.transcribe(np.zeros(0, dtype=np.int16))).text == ""


async def test_concurrent_calls_share_one_decoder() -> None:
    shared = stt(pool_size=1)
    lines = ["hello", "thank you goodbye", "where are you located"]
    heard = await asyncio.gather(*(shared.transcribe(telephone(line)) for line in lines))
    assert [transcript.text for transcript in heard] == lines


async def test_a_cancelled_transcription_hands_its_decoder_back_when_done() -> None:
    shared = stt(pool_size=1)
    await shared.warm()
    audio = telephone("hello")
    task = asyncio.create_task(shared.transcribe(audio))
    for _ in range(3):
        await asyncio.sleep(0)  # it takes the only decoder and starts recognising in a thread
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The thread still holds the decoder; the next call waits for it instead of sharing it.
    assert (await shared.transcribe(audio)).text == "hello"


async def test_wrong_audio_type_is_a_provider_error(grammar_stt: PocketsphinxSTT) -> None:
    with pytest.raises(ProviderError) as caught:
        await grammar_stt.transcribe(np.zeros(16000, dtype=np.float32))
    assert caught.value.vendor == "pocketsphinx" and caught.value.kind == "bad_request"


# --- modes, phrases and grammar ------------------------------------------------------------------


def test_auto_mode_uses_the_grammar_when_there_are_phrases() -> None:
    assert stt(mode="auto").model == "en-us/grammar"
    assert stt(mode="auto", phrases=[]).model == "en-us/lm"
    recognizer = stt()
    assert (recognizer.vendor, recognizer.sample_rate) == ("pocketsphinx", 16000)


@pytest.mark.parametrize("mode", ["grammar", "keyphrase"])
def test_phrase_modes_need_phrases(mode: str) -> None:
    with pytest.raises(ValueError, match=f"'{mode}' needs phrases"):
        stt(mode=mode, phrases=[])


def test_phrases_are_normalised_and_unknown_words_dropped(caplog: pytest.LogCaptureFixture) -> None:
    said = ["Hello, there!", "hello there", "Table for 2 zxqvbn", "zxqvbn", "I'd like"]
    with caplog.at_level(logging.WARNING):
        phrases = normalize_phrases(said)
    assert phrases == ["hello there", "table for", "i'd like"]  # digits are not words either
    assert "zxqvbn" in caplog.text


def test_config_phrases_join_the_vocabulary() -> None:
    config = PocketsphinxSTTConfig(provider="pocketsphinx", phrases=["Is there parking?"])
    assert PocketsphinxSTT(config, ["hello"]).phrases == ["hello", "is there parking"]


def test_jsgf_accepts_exactly_one_of_the_phrases() -> None:
    grammar = build_jsgf(["hello", "thank you goodbye"])
    assert grammar == ("#JSGF V1.0;\ngrammar switchboard;\n"
                       "public <utterance> = (hello) | (thank you goodbye);\n")
    with pytest.raises(ValueError):
        build_jsgf([])


# --- the decoder pool ------------------------------------------------------------------------------


async def test_pool_builds_only_when_every_decoder_is_busy() -> None:
    built: list[object] = []

    def build() -> object:
        built.append(object())
        return built[-1]

    pool = DecoderPool(build, size=2)  # type: ignore[arg-type]
    first = await pool.acquire()
    pool.release(first)
    assert await pool.acquire() is first and len(built) == 1  # reused, not a second build
    second = await pool.acquire()
    assert len(built) == 2
    waiting = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0)
    assert not waiting.done()  # both busy, size reached: it waits
    pool.release(second, broken=True)  # dropped: the waiter gets a fresh one
    assert await waiting not in (first, second) and len(built) == 3


def test_pool_survives_a_change_of_event_loop() -> None:
    pool = DecoderPool(object, size=1)  # type: ignore[arg-type]

    async def use() -> object:
        decoder = await pool.acquire()
        pool.release(decoder)
        return decoder

    assert asyncio.run(use()) is asyncio.run(use())


# --- the registry ------------------------------------------------------------------------------------


def test_registry_teaches_the_script_to_the_recognizer_and_shares_it() -> None:
    script = ScriptedLLMConfig(provider="scripted", rules=[
        ScriptedRule(match="open", reply="Noon.", phrases=["when are you open"]),
    ])
    config = PocketsphinxSTTConfig(provider="pocketsphinx")
    recognizer = registry.build("stt", config, registry.expected_phrases(script))
    assert isinstance(recognizer, PocketsphinxSTT) and recognizer.phrases == ["when are you open"]
    same_script = registry.expected_phrases(script.model_copy())
    assert registry.build("stt", config.model_copy(), same_script) is recognizer  # one decoder pool
    assert registry.build("stt", config) is not recognizer  # other phrases, other decoders
    assert isinstance(registry.build("llm", script), ScriptedLLM)
    assert isinstance(registry.build("tts", EspeakTTSConfig(provider="espeak")), EspeakTTS)


def test_registry_names_an_unknown_provider() -> None:
    unknown = EspeakTTSConfig.model_construct(provider="nope")
    with pytest.raises(ValueError, match="tts: unknown provider 'nope'; available: piper, espeak, openai"):
        registry.build("tts", unknown)


# --- the decoder's own process -----------------------------------------------------------------------


async def test_recognition_runs_in_another_process_and_an_overrun_is_stopped() -> None:
    """A decode over `time_budget_s` is a timeout and its process is killed; the next utterance gets a
    fresh decoder and is recognised."""
    import os

    recognizer = PocketsphinxSTT(PocketsphinxSTTConfig(provider="pocketsphinx", pool_size=1,
                                                       time_budget_s=0.001), PHRASES)
    await recognizer.warm()
    decoder = await recognizer.pool.acquire()
    assert decoder._process.pid != os.getpid()
    recognizer.pool.release(decoder)
    with pytest.raises(ProviderError) as caught:
        await recognizer.transcribe(telephone("what are your opening hours"))
    assert caught.value.kind == "timeout" and "longer than 0.001 s" in str(caught.value)
    for _ in range(100):
        if not decoder._process.is_alive():
            break
        await asyncio.sleep(0.01)
    assert not decoder._process.is_alive()
    recognizer.time_budget_s = 10
    assert (await recognizer.transcribe(telephone("hello"))).text == "hello"
