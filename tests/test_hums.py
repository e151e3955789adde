"""A listener's hum ("mm", "mm-hmm") over the bot's answer lets it go on, whatever words the recogniser
makes of it; real interruptions still stop it (audio/murmur.py, pipeline/backchannel.py).

Developed on real listener sounds cut from a meeting (../shared/speech, AMI: skipped, saying so, where the
folder is absent), scaled to a typical speech level as a phone line's gain would; synthetic hums of many
pitches, lengths and levels (tests/speech.hum) for breadth.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import numpy as np
import pytest

from switchboard.audio.g711 import ulaw_decode, ulaw_encode
from switchboard.audio.murmur import is_murmur
from switchboard.audio.resample import resample
from switchboard.audio.wav import read_wav, write_wav
from switchboard.caller import BotAudioStarted, CallerEvent, CallerLine, ClearReceived
from switchboard.config import parse_config
from switchboard.core.messages import Transcript
from switchboard.pipeline.call import Providers
from tests import calls
from tests.fakes.instant import InstantLLM, InstantSTT, InstantTTS
from tests.speech import espeak, hum, quiet, speech_like
from tests.test_backchannel import CONFIG, REAL_SHORT_CLIPS, REPLY, QuestionThenMoonshine

pytestmark = pytest.mark.timescale()  # in-process calls on instant/fake providers: tests/timescale.py

SPEECH = Path(__file__).resolve().parents[2] / "shared" / "speech"
# real listener sounds said while someone else talked (MANIFEST.tsv category backchannel)
LISTENER_SOUNDS = ["ami_FEE016_mm-hmm_22.32.wav", "ami_FEE016_mm_25.60.wav", "ami_FEE016_oh-yeah_18.52.wav",
                   "ami_MEE014_yeah_42.17.wav", "ami_FEE013_yeah_2.59.wav"]
needs_speech = pytest.mark.skipif(not SPEECH.is_dir(), reason=f"the real recordings are not at {SPEECH}")


def on_the_line(pcm: np.ndarray, rate: int, level_dbfs: float | None = -20.0) -> np.ndarray:
    """At 8 kHz through μ-law, scaled to `level_dbfs` RMS (None: as recorded)."""
    x = pcm.astype(np.float64)
    if level_dbfs is not None:
        x *= 10 ** (level_dbfs / 20) * 32768 / np.sqrt(np.mean(x**2))
    return ulaw_decode(ulaw_encode(resample(np.clip(x, -32768, 32767).astype(np.int16), rate, 8000)))


def test_hums_of_every_pitch_length_and_level_are_heard_as_hums():
    missed = [(f0, seconds, syllables, level)
              for f0, seconds, syllables, level in itertools.product((85, 120, 170, 240), (0.25, 0.5, 0.8),
                                                                    (1, 2), (-35, -20, -10))
              if not is_murmur(on_the_line(hum(seconds, f0, syllables, level, seed=f0), 8000, None))]
    assert missed == []


@pytest.mark.parametrize("voice", ["en-us", "en-us+f3", "en-gb-x-rp"])
def test_short_words_are_not_hums(voice):
    words = ["no", "wait", "stop", "what", "hold on", "sorry", "nope", "who", "hello", "oh no", "yes",
             "Tuesday", "five", "go", "seven"]
    assert [w for w in words if is_murmur(on_the_line(*espeak(w, voice)))] == []


@needs_speech
def test_real_hums_are_hums_and_real_short_interruptions_are_not():
    def murmur(clip: str) -> bool:
        return is_murmur(on_the_line(*read_wav(str(SPEECH / clip))))

    hums = ["ami_FEE016_mm-hmm_22.32.wav", "ami_FEE016_mm_25.60.wav"]
    assert [clip for clip in hums if not murmur(clip)] == []
    assert [clip for clip in REAL_SHORT_CLIPS if murmur(clip)] == []


class ByLengthSTT(InstantSTT):
    """Hears `short` in audio shorter than 2 s (what the caller says over the bot), else their question."""

    def __init__(self, short: str) -> None:
        super().__init__("what are your opening hours")
        self.short = short

    async def transcribe(self, pcm: np.ndarray) -> Transcript:
        return Transcript(self.short if len(pcm) < 2 * self.sample_rate else self.text)


async def over_the_reply(tmp_path, interjection: np.ndarray, stt, **caller_options) -> tuple:
    """The caller asks (3 s), then about a second into the 4 s answer makes `interjection` (8 kHz)."""
    question, sound = tmp_path / "question.wav", tmp_path / "sound.wav"
    write_wav(question, np.concatenate([quiet(0.1), speech_like(3.0), quiet(0.1, seed=1)]), 8000)
    write_wav(sound, np.concatenate([interjection, quiet(0.2, seed=3)]), 8000)
    lines = [CallerLine(wav=str(question)), CallerLine(wav=str(sound), barge_in=True)]
    result, turns = await calls.place_call(parse_config(CONFIG.replace("ON", "true")), lines,
                                           Providers(stt, InstantLLM(REPLY), InstantTTS(ms_per_char=60)),
                                           script=calls.answered_then_quiet,  # a loaded machine may
                                           hangup_timeout_s=1.5,  # judge slowly: the caller waits on it
                                           **caller_options)
    return result, [turn for turn in turns if turn.kind == "reply"]


@pytest.mark.parametrize(("f0", "syllables"), [(110, 2), (210, 1)])
async def test_a_hum_written_as_words_lets_the_bot_go_on(tmp_path, f0, syllables):
    # the recogniser writes the hum as words it is not (as Moonshine wrote a real "mm-hmm"): the bot goes on
    stt = ByLengthSTT("You need.")
    result, replies = await over_the_reply(tmp_path, hum(0.55, f0, syllables), stt)
    assert result.lines[1].clear_received  # the bot stopped at once while the caller hummed...
    assert len(replies) == 1 and replies[0].backchannels == 1 and not replies[0].interrupted
    assert replies[0].reply_heard == REPLY  # ...and went on to the end of the same answer


async def test_a_hum_written_with_an_interrupt_word_still_stops_the_bot(tmp_path):
    _, replies = await over_the_reply(tmp_path, hum(0.55, 150, 2), ByLengthSTT("No."))
    assert len(replies) == 2 and replies[0].interrupted and replies[1].transcript == "No."


class WordsAfterTheBotWentOn(ByLengthSTT):
    """Gives the words of what the caller said over the bot only once the caller hears the bot again (or
    after 2 s: then the bot had waited for them)."""

    def __init__(self, short: str) -> None:
        super().__init__(short)
        self.went_on = asyncio.Event()
        self.bot_went_on_first: bool | None = None

    def on_event(self, event: CallerEvent) -> None:
        if isinstance(event, ClearReceived):
            self.cleared = True
        elif isinstance(event, BotAudioStarted) and getattr(self, "cleared", False):
            self.went_on.set()

    async def transcribe(self, pcm: np.ndarray) -> Transcript:
        if len(pcm) < 2 * self.sample_rate:
            try:
                await asyncio.wait_for(self.went_on.wait(), 2)
                self.bot_went_on_first = True
            except TimeoutError:
                self.bot_went_on_first = False
        return await super().transcribe(pcm)


async def test_a_hum_lets_the_bot_go_on_before_its_words_are_read(tmp_path):
    # the recogniser's time is no pause: a hum's sound alone lets the bot go on (1.68 s, then 1.11 s of
    # pause for a real "oh yeah" on bench.backchannels / bench.pipecat_turns while its words were read)
    stt = WordsAfterTheBotWentOn("Mm-hmm.")
    result, replies = await over_the_reply(tmp_path, hum(0.55, 150, 2), stt, on_event=stt.on_event)
    assert stt.bot_went_on_first is True
    assert result.lines[1].clear_received
    assert len(replies) == 1 and replies[0].backchannels == 1 and not replies[0].interrupted
    assert replies[0].reply_heard == REPLY


async def test_words_over_the_bot_are_read_before_it_goes_on(tmp_path):
    # ...but not words ("yeah", no hum): the bot waits for them (the recogniser answers only after 2 s)
    stt = WordsAfterTheBotWentOn("Yeah.")
    _, replies = await over_the_reply(tmp_path, speech_like(0.45), stt, on_event=stt.on_event)
    assert stt.bot_went_on_first is False
    assert len(replies) == 1 and replies[0].backchannels == 1 and replies[0].reply_heard == REPLY


@pytest.mark.timescale(1)  # Moonshine hears the clip, in a thread: real time
@needs_speech
@pytest.mark.parametrize("clip", LISTENER_SOUNDS)
async def test_a_real_listener_sound_lets_the_bot_go_on(tmp_path, clip):
    # Moonshine hears it for real (at speech level: the clips are as recorded, some very quiet)
    stt = QuestionThenMoonshine()
    await stt.moonshine.warm()  # loaded before the call, as the server's start-up does
    _, replies = await over_the_reply(tmp_path, on_the_line(*read_wav(str(SPEECH / clip))), stt)
    assert len(replies) == 1 and not replies[0].interrupted
    assert replies[0].reply_heard == REPLY
