"""A caller who goes quiet is reminded, then said goodbye to; a call that reaches its time limit ends
politely; speaking again starts the reminders over."""

from __future__ import annotations

import pytest

from switchboard.caller import CallerLine
from switchboard.config import parse_config
from switchboard.pipeline.call import Providers
from tests import calls
from tests.fakes.instant import InstantLLM, InstantSTT, InstantTTS

pytestmark = pytest.mark.timescale()  # in-process calls on instant/fake providers: tests/timescale.py

CONFIG = """
pipelines:
  default:
    greeting: "Hi."
    idle: {reminder_after_s: REMIND, max_reminders: 1, reminder: "Still there?", goodbye: "Bye for now."}
    max_call_duration_s: LIMIT
    time_limit_goodbye: "Time is up."
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
"""


def providers() -> Providers:
    return Providers(InstantSTT("what are your opening hours"), InstantLLM("Noon to ten."),
                     InstantTTS(ms_per_char=40))


async def test_a_silent_caller_is_reminded_once_then_said_goodbye_to(speech_wav):
    config = parse_config(CONFIG.replace("REMIND", "1.5").replace("LIMIT", "0"))
    result, turns = await calls.place_call(config, [CallerLine(wav=speech_wav)], providers(),
                                           hangup_timeout_s=8)
    assert [(t.kind, t.reply_heard) for t in turns] == [
        ("greeting", "Hi."), ("reply", "Noon to ten."), ("reminder", "Still there?"),
        ("idle_goodbye", "Bye for now.")]
    assert turns[-1].ended_call and result.hangup and not result.stop_sent


async def test_a_call_that_reaches_its_time_limit_ends_with_a_goodbye(speech_wav):
    config = parse_config(CONFIG.replace("REMIND", "0").replace("LIMIT", "5"))
    result, turns = await calls.place_call(config, [CallerLine(wav=speech_wav)], providers(),
                                           hangup_timeout_s=8)
    assert [t.kind for t in turns] == ["greeting", "reply", "time_limit"]
    assert turns[-1].reply_heard == "Time is up." and result.hangup
    assert result.duration_s < 8  # it was the server that ended it


class MuteOnGoodbye(InstantTTS):
    """A voice that fails on the goodbye line (and there is no other)."""

    async def stream(self, text: str):
        if text == "Bye for now.":
            from switchboard.core.errors import ProviderError

            raise ProviderError("instant", "server", "injected TTS failure")
        async for pcm in super().stream(text):
            yield pcm


async def test_a_goodbye_no_voice_can_say_still_hangs_up(speech_wav):
    config = parse_config(CONFIG.replace("REMIND", "1.5").replace("LIMIT", "0"))
    providers = Providers(InstantSTT("what are your opening hours"), InstantLLM("Noon to ten."),
                          MuteOnGoodbye(ms_per_char=40))
    result, turns = await calls.place_call(config, [CallerLine(wav=speech_wav)], providers,
                                           hangup_timeout_s=8)
    assert turns[-1].kind == "idle_goodbye" and turns[-1].error and "injected TTS failure" in turns[-1].error
    assert result.hangup and not result.stop_sent
