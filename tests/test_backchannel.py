"""Backchannels: a caller's "yeah" over the bot pauses it and lets it go on from where the caller stopped
hearing it (nothing skipped, no second reply); "wait, no" stops it and is answered; the player's pause
and resume keep every frame and mark in order."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from switchboard.audio.wav import write_wav
from switchboard.caller import CallerLine
from switchboard.config import ConfigError, parse_config
from switchboard.core.messages import Transcript
from switchboard.pipeline.backchannel import is_backchannel
from switchboard.pipeline.call import Providers
from tests import calls
from tests.fakes.instant import InstantLLM, InstantSTT, InstantTTS, PhrasesSTT, spoken_bursts
from tests.speech import quiet, speech_like

pytestmark = pytest.mark.timescale()  # in-process calls on instant/fake providers: tests/timescale.py

DEFAULTS = parse_config("pipelines: {default: {stt: {provider: pocketsphinx}, llm: {provider: scripted}, "
                        "tts: {provider: espeak}}}").pipeline().interruption
WORDS, STOP_WORDS = DEFAULTS.backchannel_words, DEFAULTS.interrupt_words


@pytest.mark.parametrize("said", ["yeah", "Yeah.", "Uh-huh.", "uh huh", "Mm-hmm", "mhm", "Okay.",
                                  "OK, right.", "Yes, yes.", "Sure", "All right.", "I see.", "", "Hmm?"])
def test_acknowledgements_are_backchannels(said):
    assert is_backchannel(said, WORDS)


@pytest.mark.parametrize("said", ["Wait.", "No, Tuesday.", "Stop!", "yeah but what about Friday",
                                  "Okay, so how much is it?", "no"])
def test_anything_else_interrupts(said):
    assert not is_backchannel(said, WORDS)


def test_min_words_lets_a_stray_word_pass():
    assert is_backchannel("yeah totally", WORDS, min_words=2, interrupt_words=STOP_WORDS)
    assert not is_backchannel("yeah totally agree", WORDS, min_words=2, interrupt_words=STOP_WORDS)


@pytest.mark.parametrize("said", ["No.", "Wait!", "Stop", "Hold on.", "yeah, but", "Sorry?", "Never mind.",
                                  "Don't."])
def test_an_interrupt_word_interrupts_however_high_min_words_is(said):
    assert is_backchannel(said, WORDS, min_words=3)  # what raising min_words alone would do
    assert not is_backchannel(said, WORDS, min_words=3, interrupt_words=STOP_WORDS)


def test_interrupt_words_match_whole_words_only():
    assert is_backchannel("Nothing.", WORDS, min_words=2, interrupt_words=STOP_WORDS)  # not "no", "not"
    assert is_backchannel("Whatever.", WORDS, min_words=2, interrupt_words=STOP_WORDS)  # not "what"


def test_an_interrupt_phrase_holding_a_backchannel_word_still_interrupts():
    assert not is_backchannel("Oh no.", WORDS, min_words=3, interrupt_words=["oh no"])
    assert not is_backchannel("Right now!", WORDS, min_words=3, interrupt_words=["right now"])


@pytest.mark.parametrize(("interrupt", "named"),
                         [("Okay", "okay"), ("Uh huh.", "uh huh"), ("I  see", "i see")])
def test_a_word_in_both_lists_however_written_is_a_config_error_naming_it(interrupt, named):
    with pytest.raises(ConfigError) as error:
        parse_config("pipelines: {default: {stt: {provider: pocketsphinx}, llm: {provider: scripted}, "
                     "tts: {provider: espeak}, "
                     "interruption: {interrupt_words: [wait, '" + interrupt + "']}}}")
    assert f"'{named}' is in both backchannel_words and interrupt_words" in str(error.value)
    assert "interruption" in str(error.value)


class ByLengthSTT(InstantSTT):
    """Hears `short` in audio shorter than 1 s (the caller's interjection), else `long` (their question)."""

    def __init__(self, short: str, long: str = "what are your opening hours") -> None:
        super().__init__(long)
        self.short = short

    async def transcribe(self, pcm: np.ndarray) -> Transcript:
        self.heard.append(pcm)
        return Transcript(self.short if len(pcm) < self.sample_rate else self.text)


CONFIG = """
pipelines:
  default:
    greeting: "Hi."
    interruption: {backchannels: ON}
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
"""
REPLY = "We are open from noon until ten at night, every day but Monday."  # 4 s at 60 ms a character


async def talk_over_the_reply(tmp_path, short_word: str, backchannels: bool = True, min_words: int = 1):
    question, interjection = tmp_path / "question.wav", tmp_path / "yeah.wav"
    write_wav(question, np.concatenate([quiet(0.1), speech_like(1.2), quiet(0.1, seed=1)]), 8000)
    write_wav(interjection, np.concatenate([speech_like(0.45), quiet(0.1, seed=2)]), 8000)
    stt, tts = ByLengthSTT(short_word), InstantTTS(ms_per_char=60)
    providers = Providers(stt, InstantLLM(REPLY), tts)
    config = parse_config(CONFIG.replace("ON", f"{str(backchannels).lower()}, min_words: {min_words}"))
    lines = [CallerLine(wav=str(question)), CallerLine(wav=str(interjection), barge_in=True)]
    result, turns = await calls.place_call(config, lines, providers, script=calls.answered_then_quiet,
                                           hangup_timeout_s=1)
    reply_s = len(tts.render(REPLY)) / tts.sample_rate
    return result, [turn for turn in turns if turn.kind == "reply"], reply_s


async def test_a_yeah_over_the_reply_pauses_it_and_it_goes_on_to_the_end(tmp_path):
    result, replies, reply_s = await talk_over_the_reply(tmp_path, "Yeah.")
    assert len(replies) == 1  # the "yeah" got no reply of its own
    reply = replies[0]
    assert reply.backchannels == 1 and not reply.interrupted
    assert reply.reply_heard == reply.reply_text == REPLY  # every mark confirmed: heard to the end
    assert result.lines[1].clear_received  # the bot stopped at once while the caller spoke...
    greeting_s = len(InstantTTS().render("Hi.")) / 24000
    # ...and then played all of its reply: nothing skipped (a frame or so may play twice)
    assert reply_s + greeting_s - 0.05 <= result.bot_audio_played_s <= reply_s + greeting_s + 0.2


async def test_wait_no_over_the_reply_stops_it_and_is_answered(tmp_path):
    result, replies, _ = await talk_over_the_reply(tmp_path, "Wait, no.")
    assert len(replies) == 2
    assert replies[0].interrupted and replies[0].backchannels == 0
    assert len(replies[0].reply_heard) < len(REPLY)
    assert replies[1].transcript == "Wait, no." and replies[1].reply_heard == REPLY
    assert result.lines[1].clear_received


async def test_with_backchannels_off_a_yeah_interrupts_as_before(tmp_path):
    _, replies, _ = await talk_over_the_reply(tmp_path, "Yeah.", backchannels=False)
    assert len(replies) == 2 and replies[0].interrupted and replies[1].transcript == "Yeah."


async def test_with_min_words_2_a_stray_word_lets_the_bot_go_on_but_no_still_stops_it(tmp_path):
    result, replies, _ = await talk_over_the_reply(tmp_path, "Amen.", min_words=2)  # a misheard "mm-hmm"
    assert len(replies) == 1 and replies[0].backchannels == 1 and replies[0].reply_heard == REPLY
    result, replies, _ = await talk_over_the_reply(tmp_path, "No.", min_words=2)
    assert len(replies) == 2 and replies[0].interrupted and replies[1].transcript == "No."
    assert result.lines[1].clear_received


class QuestionThenPhrasesSTT(PhrasesSTT):
    """The caller's opening question (one burst of 1.2 s or more) is heard as such; what they say over the
    reply as the first k of `phrases` (PhrasesSTT), each transcription taking `delay_s`."""

    async def transcribe(self, pcm: np.ndarray) -> Transcript:
        if spoken_bursts(pcm, self.sample_rate) == 1 and len(pcm) >= self.sample_rate * 1.2:
            await asyncio.sleep(self.delay_s)
            return Transcript("what are your opening hours")
        return await super().transcribe(pcm)


async def say_twice_over_the_reply(tmp_path, said: list[str], gap_s: float, delay_s: float):
    """The caller's question, then over its reply two bursts of 0.45 s `gap_s` apart, heard as `said`
    (the first burst alone as said[0]) by a recogniser taking `delay_s`. The replies, and the call."""
    question, twice = tmp_path / "question.wav", tmp_path / "twice.wav"
    write_wav(question, np.concatenate([quiet(0.1), speech_like(1.2), quiet(0.1, seed=1)]), 8000)
    write_wav(twice, np.concatenate([speech_like(0.45), quiet(gap_s, seed=2), speech_like(0.45),
                                     quiet(0.1, seed=4)]), 8000)
    stt = QuestionThenPhrasesSTT(said, delay_s=delay_s)
    config = parse_config(CONFIG.replace("ON", "true"))
    lines = [CallerLine(wav=str(question)), CallerLine(wav=str(twice), barge_in=True)]
    result, turns = await calls.place_call(config, lines, Providers(stt, InstantLLM(REPLY), InstantTTS()),
                                           script=calls.answered_then_quiet, hangup_timeout_s=1)
    return [turn for turn in turns if turn.kind == "reply"], result


async def test_words_said_again_before_the_first_were_judged_are_answered_together(tmp_path):
    """Over the reply the caller says "No, Tuesday.", stops long enough to end that utterance, and goes on
    while it is still being transcribed: both parts are one interruption, answered as one turn."""
    # 0.8 s apart: the first part ends (vad.end_silence_ms 600) and the second starts as it is transcribed
    replies, result = await say_twice_over_the_reply(tmp_path, ["No, Tuesday.", "I said Tuesday."],
                                                     gap_s=0.8, delay_s=0.5)
    assert [reply.transcript for reply in replies] == ["what are your opening hours",
                                                       "No, Tuesday. I said Tuesday."]
    assert replies[0].interrupted and replies[1].reply_heard == REPLY
    assert result.lines[1].clear_received


async def test_speaking_again_after_a_yeah_the_bot_let_pass_pauses_it_again(tmp_path):
    """"Yeah." lets the bot go on; the caller speaks again while that utterance's last words are still
    being judged: the bot pauses at once (it must not talk over them), and both parts, read together,
    interrupt and are answered."""
    # "Yeah." is judged at its pause (0.12 s after it, for 0.4 s), its utterance ends 0.6 s after it and
    # is judged again (0.4 s): the caller goes on 0.7 s after it (speech for 0.2 s before it counts)
    replies, result = await say_twice_over_the_reply(tmp_path, ["Yeah.", "What about Friday?"],
                                                     gap_s=0.7, delay_s=0.4)
    assert [reply.transcript for reply in replies] == ["what are your opening hours",
                                                       "Yeah. What about Friday?"]
    assert replies[0].interrupted and replies[0].backchannels >= 1
    assert result.clears_received == 3  # paused for "Yeah.", paused again as they went on, then dropped


SPEECH = Path(__file__).resolve().parent.parent.parent / "shared" / "speech"
REAL_SHORT_CLIPS = {  # real people saying something short over the bot: each must stop it
    "speechcommands_no.wav": "no",
    "noisy_vctk_p232_113_its_not_fair.wav": "not",  # Moonshine: "It's not bad" (noisy)
    "noisy_vctk_p232_208_now_its_all_right.wav": "now",  # ends in "all right": not a backchannel whole
    "cards_five_five.wav": "five",
}


class QuestionThenMoonshine(InstantSTT):
    """The caller's long opening line is a fixed question; anything shorter is heard by Moonshine."""

    def __init__(self) -> None:
        from switchboard.providers.moonshine import MoonshineSTT, MoonshineSTTConfig

        super().__init__("what are your opening hours")
        self.moonshine = MoonshineSTT(MoonshineSTTConfig(provider="moonshine"))

    async def transcribe(self, pcm: np.ndarray) -> Transcript:
        if len(pcm) >= 2.5 * self.sample_rate:
            return Transcript(self.text)
        return await self.moonshine.transcribe(pcm)


@pytest.mark.parametrize(("clip", "min_words"), [*((clip, 1) for clip in sorted(REAL_SHORT_CLIPS)),
                                                 ("speechcommands_no.wav", 2),
                                                 ("noisy_vctk_p232_113_its_not_fair.wav", 2)])
@pytest.mark.timescale(1)  # Moonshine hears the clip, in a thread: real time
async def test_a_real_persons_short_line_over_the_bot_stops_it_and_is_answered(tmp_path, clip, min_words):
    if not (SPEECH / clip).exists():
        pytest.skip(f"{SPEECH / clip} is absent (the real recordings sit beside the repository)")
    question = tmp_path / "question.wav"
    write_wav(question, np.concatenate([quiet(0.1), speech_like(3.0), quiet(0.1, seed=1)]), 8000)
    tts = InstantTTS(ms_per_char=60)
    providers = Providers(QuestionThenMoonshine(), InstantLLM(REPLY), tts)
    lines = [CallerLine(wav=str(question)), CallerLine(wav=str(SPEECH / clip), barge_in=True)]
    # the words decide, not the length: speech over the paused bot may go on 5 s before it interrupts;
    # the caller waits for the answer (Moonshine on a loaded machine is slow), then 1 s of quiet
    words = f"true, min_words: {min_words}, max_backchannel_ms: 5000"
    result, turns = await calls.place_call(parse_config(CONFIG.replace("ON", words)), lines, providers,
                                           script=calls.answered_then_quiet, hangup_timeout_s=1)
    replies = [turn for turn in turns if turn.kind == "reply"]
    assert result.lines[1].clear_received
    assert replies[0].interrupted and replies[0].backchannels == 0
    assert len(replies) == 2 and REAL_SHORT_CLIPS[clip] in replies[1].transcript.lower()
