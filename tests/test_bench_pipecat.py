"""bench.pipecat_turns' own arithmetic (the bench itself is not run here): what its fake STT reads from an
upload, and how a call's caller events become the side-by-side figures."""

from __future__ import annotations

import numpy as np

from bench.pipecat_turns import (
    HeardLine,
    Row,
    Sound,
    false_starts,
    fragment,
    hear,
    kept,
    stopped,
    summary,
)
from switchboard.caller import BotAudioStarted, ClearReceived, LineEnded, LineStarted

RATE = 8000


def bursts(*spans: tuple[float, float], total: float, rate: int = RATE) -> np.ndarray:
    """Vowel-like bursts on silence, each with its own syllable rate (its own loudness contour)."""
    pcm = np.zeros(int(total * rate))
    for n, (start, end) in enumerate(spans):
        t = np.arange(int((end - start) * rate)) / rate
        syllables = 0.55 + 0.45 * np.sin(2 * np.pi * (3 + 2.5 * n) * t)
        pcm[int(start * rate) : int(start * rate) + len(t)] = np.sin(2 * np.pi * 150 * t) * 6000 * syllables
    return pcm.astype(np.int16)


LINE = bursts((0.0, 1.05), (1.5, 2.4), total=2.4)  # two phrases with a 0.45 s pause
HEARD = HeardLine.of("I would like to book a table for two people tonight at eight.", LINE, RATE)


def test_an_upload_of_the_first_phrase_reads_as_a_whisper_fragment_with_a_full_stop():
    upload = np.concatenate([np.zeros(RATE // 2, np.int16), LINE[: int(1.25 * RATE)]])
    assert hear(upload, RATE, [HEARD]) == "I would like to book a table."


def test_the_whole_line_reads_as_its_transcript_at_another_rate_and_with_silence_around_it():
    upsampled = np.repeat(LINE, 2)  # 16 kHz, as uploads come
    upload = np.concatenate([np.zeros(16000, np.int16), upsampled, np.zeros(8000, np.int16)])
    assert hear(upload, 16000, [HEARD]) == "I would like to book a table for two people tonight at eight."


def test_a_segment_of_the_second_phrase_alone_reads_as_its_words():
    upload = np.concatenate([LINE[int(1.25 * RATE) :], np.zeros(RATE // 2, np.int16)])  # Pipecat's segment
    assert hear(upload, RATE, [HEARD]) == "For two people tonight at eight."


def test_silence_reads_as_nothing_and_fragments_are_written_like_whisper():
    assert hear(np.zeros(RATE, np.int16), RATE, [HEARD]) == ""
    assert fragment(["mm-hmm"], True, "mm-hmm") == "Mm-hmm."
    assert fragment(["Lord,", "but"], False, "Lord, but I'm glad.") == "Lord, but."


def test_false_starts_count_bot_audio_starting_mid_line():
    events = [LineStarted(0.0, 0, "a", False), BotAudioStarted(1.0, None), ClearReceived(1.2, None, 0),
              BotAudioStarted(1.5, None), LineEnded(2.0, 0), BotAudioStarted(2.5, 500.0),
              LineStarted(4.0, 1, "b", False), LineEnded(5.0, 1), BotAudioStarted(5.4, 400.0)]
    assert false_starts(events) == [2, 0]


def test_a_listener_sound_is_kept_only_when_the_answer_goes_on_after_a_short_pause():
    assert kept(Sound("mm", "listener", 8.1, None, None, 8.0))  # never stopped
    assert kept(Sound("mm", "listener", 8.3, 180.0, 0.6, 8.0))  # paused 0.6 s, went on
    assert not kept(Sound("mm", "listener", 8.3, 180.0, 1.7, 8.0))  # paused too long
    assert not kept(Sound("mm", "listener", 3.2, 400.0, 0.9, 8.0))  # a new, short answer instead
    assert stopped(Sound("no", "interruption", 2.4, 210.0, 0.8, 8.0))
    assert not stopped(Sound("no", "interruption", 8.0, 210.0, 0.4, 8.0))  # the answer went on


def test_the_summary_gives_each_row_its_figures_and_its_ratio_to_pipecats():
    pipecat = Row(over=[0.4, 0.2, 0.0], false_starts=[1, 1, 0], delays=[1200.0, 1000.0, 1100.0],
                  reference_s=8.0, sounds=[Sound("mm", "listener", 3.0, 400.0, 0.9, 8.0),
                                           Sound("no", "interruption", 2.0, 500.0, 0.9, 8.0)])
    ours = Row(over=[0.0, 0.1, 0.0], false_starts=[0, 1, 0], delays=[900.0, 950.0, 1000.0],
               reference_s=8.0, sounds=[Sound("mm", "listener", 8.2, 150.0, 0.5, 8.0),
                                        Sound("no", "interruption", 2.5, 200.0, 0.9, 8.0)])
    figures = dict(summary({"pipecat": pipecat, "openai": ours}))
    assert figures["median reply delay (paused lines)"] == ["1.10 s", "0.95 s (0.86x)"]
    assert figures["talk-over, all paused lines (per run)"] == ["0.60 s", "0.10 s (0.17x)"]
    assert figures["talk-over, scripted 450 ms pause (per run)"] == ["0.40 s", "0.00 s (0.00x)"]
    twice = dict(summary({"pipecat": pipecat.merge(pipecat), "openai": ours.merge(ours)}))
    assert twice["talk-over, all paused lines (per run)"] == figures["talk-over, all paused lines (per run)"]
    assert twice["talk-over, scripted 450 ms pause (per run)"] == ["0.40 s", "0.00 s (0.00x)"]
    assert figures["false starts (lines with one)"] == ["2 (2 of 3)", "1 (1 of 3)"]
    assert figures["stop after a real interruption, median"] == ["0.50 s", "0.20 s (0.40x)"]
    assert figures["real listener sounds kept (pause <= 1 s)"] == ["0 of 1", "1 of 1"]
    assert figures["real interruptions that stopped the bot"] == ["1 of 1", "1 of 1"]
