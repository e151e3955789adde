"""Turn-taking on live calls: speculative turns at pauses, the commit rule, and the bot's own echo.

Each test places a simulated Twilio call against the real server. The STT "hears" the phrases of a
line by counting its bursts of speech (tests/fakes/instant.py PhrasesSTT), so what it returns for a
pause depends on the audio uploaded, as with a real recognizer.
"""

from __future__ import annotations

import asyncio

import pytest

from switchboard.caller import (
    BotAudioStarted,
    CallerEvent,
    CallerLine,
    ClearReceived,
    Echo,
    LineEnded,
    LineStarted,
    run_call,
)
from switchboard.config import parse_config
from switchboard.pipeline.call import Providers
from switchboard.providers.espeak import EspeakTTS, EspeakTTSConfig
from switchboard.server import create_app, running
from tests import calls
from tests.fakes.instant import InstantLLM, InstantTTS, PhrasesSTT

pytestmark = pytest.mark.timescale()  # in-process calls on instant/fake providers: tests/timescale.py

CONFIG = """
pipelines:
  default:
    greeting: "Hi."
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
    turn: {speculate_after_ms: 150, complete_end_silence_ms: 300, incomplete_end_silence_ms: 1200,
           echo_similarity: ECHO}
"""


# PhrasesSTT hears a phrase per burst of speech: these scenarios were timed with eSpeak's caller voice,
# whose words run together (Piper's leaves short gaps inside phrases); the recogniser is the fake here
CALLER_VOICE = "en-us+klatt4"


async def place_call(providers: Providers, lines: list[CallerLine], echo_similarity: float = 0.7, **kwargs):
    config = parse_config(CONFIG.replace("ECHO", str(echo_similarity)))
    events: list[CallerEvent] = []
    result, turns = await calls.place_call(config, lines, providers, hangup_timeout_s=2,
                                           on_event=events.append, voice=CALLER_VOICE, **kwargs)
    return result, [t for t in turns if t.kind != "greeting"], events


async def first_clear(providers: Providers, lines: list[CallerLine], echo_similarity: float,
                      **kwargs) -> float | None:
    """Place a call until the server sends its first clear (its time), or 20 s pass (None)."""
    config = parse_config(CONFIG.replace("ECHO", str(echo_similarity)))
    cleared: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    def on_event(event: CallerEvent) -> None:
        if isinstance(event, ClearReceived) and not cleared.done():
            cleared.set_result(event.t)

    async with running(create_app(config, providers={"default": providers})) as port:
        call = asyncio.create_task(run_call(f"ws://127.0.0.1:{port}/media-stream", lines, on_event=on_event,
                                            hangup_timeout_s=2, voice=CALLER_VOICE, **kwargs))
        await asyncio.wait([call, cleared], timeout=20, return_when=asyncio.FIRST_COMPLETED)
        call.cancel()
        await asyncio.gather(call, return_exceptions=True)
    return cleared.result() if cleared.done() else None


def bot_audio_while_speaking(events: list[CallerEvent]) -> list[float]:
    """Times the bot started talking while a caller line was still playing."""
    speaking, overlaps = False, []
    for event in events:
        if isinstance(event, LineStarted):
            speaking = True
        elif isinstance(event, LineEnded):
            speaking = False
        elif isinstance(event, BotAudioStarted) and speaking:
            overlaps.append(event.t)
    return overlaps


async def test_a_finished_question_is_prepared_at_the_pause_and_answered_once():
    stt = PhrasesSTT(["What time do you close?"])
    llm = InstantLLM("We close at ten.")
    result, turns, _ = await place_call(Providers(stt, llm, InstantTTS()),
                                        [CallerLine(text="what time do you close")])
    (turn,) = turns
    assert turn.transcript == "What time do you close?" and turn.reply_heard == "We close at ten."
    assert (turn.speculated, turn.speculation_dropped, turn.reads) == (1, 0, "complete")
    assert len(llm.requests) == 1  # one LLM request: none wasted
    # it was prepared before the commit: the transcript was in before the endpoint
    assert turn.stt_done is not None and turn.endpoint is not None and turn.stt_done < turn.endpoint
    assert result.lines[0].response_delay_ms is not None


# how recognisers write: as the phrases are punctuated, no punctuation at all, a full stop on every piece
STYLES = ["oracle", "plain", "stop"]


@pytest.mark.parametrize("style", STYLES)
async def test_a_pause_mid_sentence_does_not_end_the_turn(style):
    # "...a table for [0.8 s] four people at seven": the pause's transcript reads unfinished
    stt = PhrasesSTT(["I'd like to book a table for", "four people at seven."], style=style)
    llm = InstantLLM("Lovely, see you at seven.")
    line = CallerLine(text="i would like to book a table for [0.8s] four people at seven")
    result, turns, events = await place_call(Providers(stt, llm, InstantTTS()), [line])

    (turn,) = turns  # one turn, with both halves
    assert turn.transcript == stt.styled("I'd like to book a table for four people at seven.")
    # prepared at the 0.8 s pause (and at any short gap inside words), dropped each time the caller
    # went on; the last one, after the whole sentence, became the turn
    assert turn.speculated >= 2 and turn.speculation_dropped == turn.speculated - 1
    assert stt.styled("I'd like to book a table for") in stt.texts  # it was heard at the pause...
    assert [m[-1].content for m in llm.requests][-1] == turn.transcript  # ...but only the whole was answered
    assert bot_audio_while_speaking(events) == []
    assert result.clears_received == 0


@pytest.mark.parametrize("style", ["oracle", "stop"])  # the first half has to read finished
async def test_a_complete_sounding_pause_then_more_speech_is_one_turn_if_the_bot_had_not_spoken(style):
    # the first half reads finished and is committed once its transcript is in (slow STT: 0.65 s after
    # the voice ends), but the caller went on at 0.5 s: the reply waits for them, then the committed
    # turn is taken back unheard and the caller's words are answered together
    stt = PhrasesSTT(["It is about my booking.", "The one on Friday."], delay_s=0.5, style=style)
    llm = InstantLLM("Sure.")
    line = CallerLine(text="it is about my booking [0.5s] the one on friday")
    _, turns, events = await place_call(Providers(stt, llm, InstantTTS()), [line])

    answered = [t for t in turns if t.reply_heard]
    assert [t.transcript for t in answered] == [stt.styled("It is about my booking. The one on Friday.")]
    assert bot_audio_while_speaking(events) == []


@pytest.mark.timescale(1)  # eSpeak speaks the bot's reply, in a thread: real time
async def test_the_bots_echo_does_not_interrupt_it_but_the_caller_does():
    long_reply = "We are open from noon until ten at night, Tuesday to Sunday, and until eleven on Fridays."
    lines = [CallerLine(text="when are you open")]
    def providers() -> Providers:
        return Providers(PhrasesSTT(["When are you open?"]), InstantLLM(long_reply),
                         EspeakTTS(EspeakTTSConfig(provider="espeak", voice="en-us+f3")))

    echo = Echo(delay_ms=120, gain_db=-12)
    guarded, _, _ = await place_call(providers(), lines, echo=echo)
    assert guarded.clears_received == 0  # the bot heard itself and carried on
    assert guarded.bot_audio_played_s >= 5.0

    # without the guard its own voice cuts it off (and then answers its own echo, round and round)
    assert await first_clear(providers(), lines, echo=echo, echo_similarity=0) is not None

    talked_over, _, _ = await place_call(
        providers(), [*lines, CallerLine(text="sorry can you repeat that", barge_in=True)], echo=echo)
    assert talked_over.lines[1].clear_received  # the caller still interrupts it


async def test_a_caller_who_goes_on_as_the_bot_starts_answering_gets_one_answer_to_the_whole():
    # "It is about my booking." reads finished: committed after 300 ms of silence and answered; the caller
    # goes on 1 s into their pause, just after the bot started: it stops at once, its reply is undone
    # (not in the history), and the whole sentence is answered once
    stt = PhrasesSTT(["It is about my booking.", "The one on Friday."])
    llm = InstantLLM("Lovely, what time would you like?")
    line = CallerLine(text="it is about my booking [1.0s] the one on friday")
    result, turns, _ = await place_call(Providers(stt, llm, InstantTTS()), [line])

    undone = [t for t in turns if t.undone]
    assert len(undone) == 1 and undone[0].interrupted and undone[0].transcript == "It is about my booking."
    answered = [t for t in turns if t.reply_heard and not t.undone]
    assert [t.transcript for t in answered] == ["It is about my booking. The one on Friday."]
    last_request = llm.requests[-1]
    assert [m.role for m in last_request[1:]] == ["assistant", "user"]  # the greeting, then the whole
    assert result.lines[0].clear_received
