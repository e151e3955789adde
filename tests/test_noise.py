"""The noise gate: an utterance with no voicing (hiss, wind, rumble, a hum) never reaches the recogniser
and gets no reply; speech does, even with noise around it. Synthetic noise and voices here, and the real
recordings of ../shared/speech with noise added (skipped, saying so, when the folder is absent)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from switchboard.audio.g711 import ulaw_decode, ulaw_encode
from switchboard.audio.noise import is_noise
from switchboard.audio.resample import resample
from switchboard.audio.wav import write_wav
from switchboard.caller import CallerLine
from switchboard.config import parse_config
from switchboard.pipeline.call import Providers
from tests import calls
from tests.fakes.instant import InstantLLM, InstantSTT, InstantTTS
from tests.speech import espeak, quiet, speech_like

pytestmark = pytest.mark.timescale()  # in-process calls on instant/fake providers: tests/timescale.py

SPEECH_DIR = Path(__file__).resolve().parents[2] / "shared" / "speech"


def on_the_line(pcm: np.ndarray, rate: int) -> np.ndarray:
    """`pcm` as it arrives from a phone call: 8 kHz, through μ-law."""
    return ulaw_decode(ulaw_encode(resample(pcm, rate, 8000)))


def at_level(x: np.ndarray, dbfs: float) -> np.ndarray:
    x = x / np.sqrt(np.mean(x * x)) * 32768 * 10 ** (dbfs / 20)
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def noises(seconds: float = 10, seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    white = rng.normal(size=round(8000 * seconds))
    t = np.arange(len(white)) / 8000
    pink = np.fft.irfft(np.fft.rfft(white) / np.sqrt(np.arange(1, len(white) // 2 + 2)), len(white))
    brown = np.cumsum(white)
    brown -= np.convolve(brown, np.ones(400) / 400, "same")
    return {
        "white": white, "pink": pink, "brown": brown,
        "gusting wind": white * (1 + 0.8 * np.sin(2 * np.pi * 0.5 * t)),
        "hum": np.sin(2 * np.pi * 50 * t) + 0.5 * np.sin(2 * np.pi * 150 * t) + 0.1 * white,
        "dial tone": np.sin(2 * np.pi * 350 * t) + np.sin(2 * np.pi * 440 * t),
    }


@pytest.mark.parametrize("dbfs", [-35, -20, -10])
def test_noise_of_every_colour_and_level_is_noise(dbfs):
    for name, noise in noises().items():
        assert is_noise(on_the_line(at_level(noise, dbfs), 8000)), (name, dbfs)


def test_speech_is_not_noise_even_with_noise_around_it():
    sentence = on_the_line(*espeak("I would like to book a table for four people at seven"))
    yes = on_the_line(*espeak("yes"))
    assert not is_noise(sentence)
    assert not is_noise(yes)
    assert not is_noise(speech_like(1.0))
    noise = at_level(noises(20)["white"], -25)
    # a short "yes" after 20 s of hiss: the 200 ms of voicing is enough
    assert not is_noise(np.concatenate([noise, yes]))
    assert not is_noise(with_noise(sentence, noises()["pink"], snr_db=0))
    assert not is_noise(np.zeros(8000, np.int16))  # silence is not for the gate to judge


def with_noise(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """`speech` with `noise` added at `snr_db` below the speech's loud frames."""
    frames = speech[: len(speech) // 320 * 320].astype(np.float64).reshape(-1, 320)
    rms = np.sqrt(np.mean(frames * frames, axis=1))
    level = np.sqrt(np.mean(rms[rms > 0.1 * rms.max()] ** 2))
    noise = np.resize(noise, len(speech))
    noise = noise / np.sqrt(np.mean(noise * noise)) * level * 10 ** (-snr_db / 20)
    return np.clip(np.round(speech + noise), -32768, 32767).astype(np.int16)


def real_recordings() -> list[Path]:
    if not SPEECH_DIR.is_dir():
        pytest.skip(f"the real recordings are not at {SPEECH_DIR}")
    return sorted(SPEECH_DIR.glob("*.wav"))


def listener_sounds() -> set[str]:
    """The real listener sounds of ../shared/speech: a hum, a "yeah", a filler cut from a meeting."""
    manifest = (SPEECH_DIR / "MANIFEST.tsv").read_text().splitlines()
    header = manifest[0].split("\t")
    rows = [dict(zip(header, line.split("\t"), strict=False)) for line in manifest[1:] if line.strip()]
    return {row["file"] for row in rows if row["category"] in ("backchannel", "filler", "short-words")}


def test_no_real_recording_is_noise_even_with_hiss_added():
    noise = noises()
    short = listener_sounds()
    for path in real_recordings():
        pcm, rate = sf.read(path, dtype="int16")
        speech = on_the_line(pcm, rate)
        assert not is_noise(speech), path.name
        # a sentence keeps voiced frames in hiss as loud as itself; a listener's quarter-second, often
        # breathy "yeah" has none left at 5 dB (one had no frame above the voicing threshold): those are
        # held to 10 dB, still a very noisy line
        hiss = (("white", 10), ("pink", 10)) if path.name in short else (("white", 5), ("pink", 0))
        for colour, snr_db in hiss:
            assert not is_noise(with_noise(speech, noise[colour], snr_db)), (path.name, colour, snr_db)


CONFIG = """
pipelines:
  default:
    greeting: "Hi."
    vad: {noise_gate: GATE}
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
"""


@pytest.mark.parametrize("gate", [True, False])
async def test_a_caller_on_a_noisy_line_is_answered_once_for_what_they_said(tmp_path, gate):
    """Three seconds of loud wind, a pause, then speech: with the gate the recogniser hears only the speech
    and the bot answers it; without, the wind is an utterance of its own, sent to the recogniser."""
    wind = at_level(noises(3)["gusting wind"], -20)
    line = tmp_path / "noisy.wav"
    write_wav(line, np.concatenate([wind, quiet(1.0), speech_like(1.2), quiet(0.3, seed=1)]), 8000)
    stt = InstantSTT("what are your opening hours")
    providers = Providers(stt, InstantLLM("We open at noon."), InstantTTS())
    config = parse_config(CONFIG.replace("GATE", str(gate).lower()))
    _, turns = await calls.place_call(config, [CallerLine(wav=str(line))], providers, hangup_timeout_s=2)
    answered = [turn for turn in turns if turn.kind == "reply"]
    if gate:
        assert len(stt.heard) == 1 and len(stt.heard[0]) < 3 * 16000  # the speech, not the wind
        assert [turn.reply_text for turn in answered] == ["We open at noon."]
    else:
        assert sum(map(len, stt.heard)) >= 4 * 16000  # the wind reached it (whole, or at its pauses)
        assert len(answered) >= 2


@pytest.mark.parametrize("seconds", [0.6, 0.24])
async def test_a_noise_while_the_bot_thinks_does_not_lose_the_answer(tmp_path, seconds):
    """A door slam (0.6 s of loud noise: an utterance, dropped as noise) or a click (0.24 s: enough to
    interrupt, too short to be an utterance) as the bot works on its answer stops that work, as speech
    would; once it proves not to be speech the caller's question is answered all the same."""
    slam = at_level(noises(seconds)["white"], -15)
    line = tmp_path / "question_then_slam.wav"
    write_wav(line, np.concatenate([speech_like(1.2), quiet(2.5), slam, quiet(0.5, seed=1)]), 8000)
    stt = InstantSTT("what are your opening hours")
    providers = Providers(stt, InstantLLM("We open at noon.", delay_s=4.0), InstantTTS())
    config = parse_config(CONFIG.replace("GATE", "true"))
    _, turns = await calls.place_call(config, [CallerLine(wav=str(line))], providers,
                                      script=calls.answered_then_quiet, hangup_timeout_s=1)  # waits on it
    answered = [turn for turn in turns if turn.kind == "reply"]
    assert [turn.transcript for turn in answered][-1:] == ["what are your opening hours"]
    assert answered[-1].reply_heard == "We open at noon."


class SlowFirstTTS(InstantTTS):
    """Its first line takes `delay_s` to start (a cold vendor); the rest come at once."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s

    async def stream(self, text):
        delay, self.delay_s = self.delay_s, 0.0
        await asyncio.sleep(delay)
        async for chunk in super().stream(text):
            yield chunk


async def test_a_click_before_the_greeting_is_heard_does_not_leave_the_caller_in_silence(tmp_path):
    """A click on the line (the handset picked up) cuts the greeting before a word of it went out: once it
    proves not to be the caller speaking, the bot greets them."""
    click = tmp_path / "click.wav"
    write_wav(click, at_level(noises(0.24)["white"], -15), 8000)
    providers = Providers(InstantSTT("hello"), InstantLLM("We open at noon."), SlowFirstTTS(delay_s=1.5))
    config = parse_config(CONFIG.replace("GATE", "true"))
    # the caller does not wait for a greeting that is slow to come: the click is at 0.3 s
    _, turns = await calls.place_call(config, [CallerLine(wav=str(click))], providers, reply_timeout_s=0.3,
                                      hangup_timeout_s=3)
    assert [(turn.kind, turn.reply_heard) for turn in turns] == [("greeting", ""), ("greeting", "Hi.")]


async def test_a_caller_who_speaks_before_the_greeting_is_answered_not_greeted(tmp_path):
    hello = tmp_path / "hello.wav"
    write_wav(hello, np.concatenate([speech_like(0.8), quiet(0.2)]), 8000)
    providers = Providers(InstantSTT("hello"), InstantLLM("Hi, how can I help?"), SlowFirstTTS(delay_s=1.5))
    config = parse_config(CONFIG.replace("GATE", "true"))
    _, turns = await calls.place_call(config, [CallerLine(wav=str(hello))], providers, reply_timeout_s=0.3,
                                      hangup_timeout_s=2)
    assert [(turn.kind, turn.reply_heard) for turn in turns] == [("greeting", ""),
                                                                 ("reply", "Hi, how can I help?")]
