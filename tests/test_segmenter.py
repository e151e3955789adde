"""Segmenter: utterance boundaries, pre-roll, minimum length, forced cuts, wall-clock endpointing.

Times are synthetic: each chunk is pushed with ``now`` = the stream time at its end (or a fixed value
to simulate faster-than-real-time input), so nothing here depends on the test machine's clock.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pytest

from switchboard.audio.resample import resample
from switchboard.audio.segmenter import Pause, Resumed, Segmenter, SegmenterEvent, SpeechStarted, Utterance
from tests.speech import espeak, quiet, speech_like

RATE = 8000
FRAME = 160  # 20 ms at 8 kHz
T0 = 1000.0  # an arbitrary monotonic-clock origin


def _stream(*parts: np.ndarray) -> np.ndarray:
    return np.concatenate(parts)


def _feed(
    seg: Segmenter, pcm: np.ndarray, piece: int = FRAME, now: float | None = None
) -> list[tuple[float, SegmenterEvent]]:
    """Push ``pcm`` in ``piece``-sample chunks; ``now`` is real-time stream time unless fixed."""
    events: list[tuple[float, SegmenterEvent]] = []
    for start in range(0, len(pcm), piece):
        chunk = pcm[start : start + piece]
        at = now if now is not None else T0 + (start + len(chunk)) / RATE
        events += [(at, event) for event in seg.push(chunk, at)]
    return events


def _utterances(events: Iterable[tuple[float, SegmenterEvent]]) -> list[Utterance]:
    return [event for _, event in events if isinstance(event, Utterance)]


def _offset_in(stream: np.ndarray, pcm: np.ndarray) -> int:
    """Sample index at which ``pcm`` occurs verbatim in ``stream``."""
    index = stream.tobytes().find(pcm.tobytes())
    assert index >= 0 and index % 2 == 0, "utterance audio is not a slice of the input"
    return index // 2


def _first_audible(pcm: np.ndarray, level: int = 300) -> int:
    return int(np.argmax(np.abs(pcm.astype(np.int32)) > level))


class ScriptedVad:
    """Stands in for webrtcvad: returns a scripted voiced/unvoiced flag per frame ('1' / '.')."""

    def __init__(self, script: str) -> None:
        self._flags = iter(script)

    def is_speech(self, frame: bytes, sample_rate: int) -> bool:
        return next(self._flags, ".") == "1"


def _scripted(script: str, **kwargs: float) -> tuple[list[tuple[float, SegmenterEvent]], np.ndarray]:
    """Run a segmenter whose VAD follows ``script``, one 20 ms frame per character."""
    seg = Segmenter(**kwargs)
    seg._vad = ScriptedVad(script)
    pcm = quiet(len(script) * 0.02, seed=7)
    return _feed(seg, pcm), pcm


# --- real VAD on synthetic and synthesised speech -------------------------------------------------


def test_one_second_of_speech_gives_one_utterance_with_pre_roll() -> None:
    pcm = _stream(quiet(1.0, seed=1), speech_like(1.0), quiet(1.5, seed=2))
    events = _feed(Segmenter(), pcm)

    assert [type(e) for _, e in events] == [SpeechStarted, Utterance]
    (started_now, started), (emitted_at, utt) = events
    assert started.at == started_now
    assert not utt.forced
    # pcm begins pre_roll_ms (300 ms = 2400 samples) before the speech, within one VAD frame
    offset = _offset_in(pcm, utt.pcm)
    assert abs(offset - (RATE - 2400)) <= FRAME
    # and ends ~100 ms after the last speech frame (webrtcvad's own hangover adds a few frames)
    end = offset + len(utt.pcm)
    assert 2 * RATE + 800 <= end <= 2 * RATE + 800 + 0.2 * RATE
    assert utt.speech_start == pytest.approx(T0 + 1.02, abs=0.021)
    assert utt.speech_end == pytest.approx(T0 + 2.0, abs=0.2)
    assert started.at == pytest.approx(utt.speech_start + 0.18, abs=0.021)  # 200 ms of speech frames
    # endpointed end_silence_ms after the last VAD speech frame; speech_end discounts the VAD's
    # hangover (quiet trailing frames), so it can be up to a few frames earlier than that
    assert 0.6 <= emitted_at - utt.speech_end <= 0.6 + 0.16
    assert 960 <= utt.voiced_ms <= 1200


def test_sixty_ms_click_is_not_an_utterance() -> None:
    seg = Segmenter()
    pcm = _stream(quiet(1.0, seed=1), speech_like(0.06, amplitude=16000), quiet(2.0, seed=2))
    assert _feed(seg, pcm) == []
    assert seg.tick(T0 + 10.0) == []


@pytest.mark.parametrize(
    "background",
    [np.zeros(5 * RATE, dtype=np.int16), quiet(5.0), quiet(5.0, level=100.0)],
    ids=["digital-silence", "line-noise", "low-noise"],
)
def test_silence_and_low_noise_give_nothing(background: np.ndarray) -> None:
    seg = Segmenter()
    assert _feed(seg, background) == []
    assert seg.tick(T0 + 10.0) == []


def test_max_utterance_forces_a_cut_and_the_speech_continues() -> None:
    pcm = _stream(quiet(1.0, seed=1), speech_like(4.0), quiet(1.5, seed=2))
    events = _feed(Segmenter(max_utterance_s=2.5), pcm)

    assert [type(e) for _, e in events] == [SpeechStarted, Utterance, SpeechStarted, Utterance]
    first, second = _utterances(events)
    assert first.forced and not second.forced
    assert len(first.pcm) == 2400 + int(2.5 * RATE)  # pre-roll + max_utterance_s of audio
    assert first.voiced_ms == 2500
    # the continuation picks up exactly where the cut was: nothing lost, nothing repeated
    assert _offset_in(pcm, second.pcm) == _offset_in(pcm, first.pcm) + len(first.pcm)
    assert 1400 <= second.voiced_ms <= 1700
    assert second.speech_start > first.speech_end


def test_tick_endpoints_a_stream_that_stops_sending_frames() -> None:
    seg = Segmenter()
    pcm = _stream(quiet(1.0, seed=1), speech_like(1.0))  # the carrier sends nothing after this
    events = _feed(seg, pcm)
    assert [type(e) for _, e in events] == [SpeechStarted]
    last_push = T0 + 2.0

    assert seg.tick(last_push + 0.3) == []
    assert seg.tick(last_push + 0.59) == []
    (utt,) = seg.tick(last_push + 0.61)
    assert isinstance(utt, Utterance)
    assert utt.speech_end == last_push  # the last frames pushed were voiced
    assert seg.tick(last_push + 5.0) == []  # endpointed once only


def test_tick_counts_pushed_silence_plus_the_time_since_the_last_frame() -> None:
    seg = Segmenter()
    pcm = _stream(quiet(1.0, seed=1), speech_like(1.0), quiet(0.3, seed=2))
    events = _feed(seg, pcm)  # in real time: 300 ms of silence frames, then nothing more
    assert [type(e) for _, e in events] == [SpeechStarted]
    # the same audio followed by more silence frames tells when the last speech frame was
    ((emitted_at, reference),) = [
        (t, e) for t, e in _feed(Segmenter(), _stream(pcm, quiet(1.0, seed=3))) if isinstance(e, Utterance)
    ]
    last_speech_frame = emitted_at - 0.6  # endpointed by end_silence_ms of pushed silence frames
    assert last_speech_frame + 0.58 > T0 + 2.3  # the ticks below come after the last push

    # silence frames pushed + wall time since the last push = wall time since the last speech frame
    assert seg.tick(last_speech_frame + 0.58) == []
    (utt,) = seg.tick(last_speech_frame + 0.61)
    assert utt.speech_end == reference.speech_end
    np.testing.assert_array_equal(utt.pcm, reference.pcm)


def test_frames_pushed_faster_than_real_time_endpoint_from_audio() -> None:
    pcm = _stream(quiet(1.0, seed=1), speech_like(1.0), quiet(1.5, seed=2))
    (real_time,) = _utterances(_feed(Segmenter(), pcm))

    seg = Segmenter()
    burst = _feed(seg, pcm, now=T0)  # a 3.5 s backlog drained in no time
    (fast,) = _utterances(burst)
    np.testing.assert_array_equal(fast.pcm, real_time.pcm)
    assert fast.voiced_ms == real_time.voiced_ms
    assert fast.speech_start == fast.speech_end == T0
    assert seg.tick(T0) == []


@pytest.mark.parametrize("piece", [400, 800, 296, 7 * RATE // 2], ids=["50ms", "100ms", "37ms", "one-push"])
def test_chunk_size_does_not_change_the_result(piece: int) -> None:
    pcm = _stream(quiet(1.0, seed=1), speech_like(1.2), quiet(0.8, seed=2), speech_like(0.7), quiet(1.0))
    expected = _utterances(_feed(Segmenter(), pcm))
    got = _utterances(_feed(Segmenter(), pcm, piece=piece))

    assert len(got) == len(expected) == 2
    chunk_s = piece / RATE
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g.pcm, e.pcm)
        assert (g.voiced_ms, g.forced) == (e.voiced_ms, e.forced)
        # arrival times can only be later, by less than one chunk
        assert 0 <= g.speech_start - e.speech_start < chunk_s
        assert 0 <= g.speech_end - e.speech_end < chunk_s


def test_reset_drops_a_partial_utterance() -> None:
    seg = Segmenter()
    _feed(seg, _stream(quiet(1.0, seed=1), speech_like(0.8)))
    seg.reset()
    assert _feed(seg, quiet(2.0, seed=2)) == []
    assert seg.tick(T0 + 10.0) == []


def test_espeak_sentences_separated_by_a_pause_give_two_utterances() -> None:
    first, rate = espeak("Hello, I would like to book a table for two.")
    second, _ = espeak("Tomorrow evening at eight, please.")
    first, second = resample(first, rate, RATE), resample(second, rate, RATE)
    pcm = _stream(quiet(0.5, seed=1), first, quiet(1.2, seed=2), second, quiet(1.0, seed=3))
    events = _feed(Segmenter(), pcm, piece=800)  # Exotel-style 100 ms pieces

    assert [type(e) for _, e in events] == [SpeechStarted, Utterance] * 2
    utts = _utterances(events)
    assert not any(u.forced for u in utts)
    # each utterance starts ~pre_roll_ms before its sentence's first audible sample
    sound_starts = [
        int(0.5 * RATE) + _first_audible(first),
        int(0.5 * RATE) + len(first) + int(1.2 * RATE) + _first_audible(second),
    ]
    for utt, sound_start in zip(utts, sound_starts, strict=True):
        assert abs(_offset_in(pcm, utt.pcm) - (sound_start - 2400)) <= 2 * FRAME
    assert all(u.voiced_ms >= 0.6 * len(s) / RATE * 1000 for u, s in zip(utts, [first, second], strict=True))


# --- the documented rule, with a scripted VAD -------------------------------------------------------


def test_a_single_voiced_frame_never_opens_an_utterance() -> None:
    events, _ = _scripted("....1.........1...." + "." * 40, min_speech_ms=20, barge_in_min_ms=20)
    assert events == []


def test_two_voiced_frames_open_an_utterance_counted_from_the_first() -> None:
    script = "." * 20 + "11" + "." * 40
    events, pcm = _scripted(script, min_speech_ms=40, barge_in_min_ms=40, pre_roll_ms=100)
    assert [type(e) for _, e in events] == [SpeechStarted, Utterance]
    utt = events[1][1]
    assert utt.voiced_ms == 40
    assert _offset_in(pcm, utt.pcm) == (20 - 5) * FRAME  # 5 frames of pre-roll before the first '1'
    assert len(utt.pcm) == (5 + 2 + 5) * FRAME  # pre-roll + speech + 100 ms of trailing silence
    assert utt.speech_start == pytest.approx(T0 + 21 * 0.02)
    assert utt.speech_end == pytest.approx(T0 + 22 * 0.02)
    assert events[1][0] == pytest.approx(utt.speech_end + 0.6)


def test_a_lone_voiced_frame_in_the_endpoint_silence_does_not_extend_it() -> None:
    script = "." * 10 + "1" * 20 + "." * 10 + "1" + "." * 40
    events, _ = _scripted(script)
    [(emitted_at, utt)] = [(t, e) for t, e in events if isinstance(e, Utterance)]
    assert utt.voiced_ms == 400
    assert emitted_at == pytest.approx(T0 + (30 + 30) * 0.02)  # 600 ms after frame 30


def test_lone_unvoiced_frames_inside_speech_do_not_split_it() -> None:
    script = "." * 10 + ("1" * 8 + ".") * 10 + "." * 40
    events, _ = _scripted(script)
    (utt,) = _utterances(events)
    assert utt.voiced_ms == 80 * 20


def test_speech_below_min_speech_ms_is_dropped_even_after_speech_started() -> None:
    events, _ = _scripted("." * 10 + "1" * 12 + "." * 40, min_speech_ms=250, barge_in_min_ms=200)
    assert [type(e) for _, e in events] == [SpeechStarted]  # 240 ms: barge-in yes, turn no


def test_pre_roll_is_shorter_when_speech_follows_an_utterance_closely() -> None:
    script = "." * 20 + "1" * 20 + "." * 30 + "11" + "1" * 18 + "." * 40
    events, pcm = _scripted(script, end_silence_ms=600, pre_roll_ms=300)
    first, second = _utterances(events)
    # the first ends at frame 70 (600 ms after frame 39); frames 70..71 are the only pre-roll left
    assert _offset_in(pcm, second.pcm) == 70 * FRAME
    assert second.voiced_ms == 400
    assert first.voiced_ms == 400


def test_rejects_unsupported_rate_and_non_int16_input() -> None:
    with pytest.raises(ValueError):
        Segmenter(sample_rate=11025)
    with pytest.raises(TypeError):
        Segmenter().push(np.zeros(160, dtype=np.float32), T0)


def test_endpoint_silence_counts_from_the_voice_not_the_vads_hangover() -> None:
    """webrtcvad keeps flagging ~100 ms after the voice stops; neither speech_end nor the endpoint
    silence should include that, or every turn answers ~100 ms late and reports itself faster."""
    events = _feed(Segmenter(), _stream(quiet(1.0, seed=1), speech_like(1.0), quiet(1.5, seed=2)))
    ((emitted_at, utt),) = [(t, e) for t, e in events if isinstance(e, Utterance)]
    assert utt.speech_end == pytest.approx(T0 + 2.0, abs=0.03)
    assert emitted_at - utt.speech_end == pytest.approx(0.6, abs=0.03)


# --- pauses: speculation and a per-utterance commit silence ----------------------------------------


def _two_phrases() -> np.ndarray:
    """0.5 s speech, 0.3 s pause, 0.5 s speech, then silence."""
    return _stream(quiet(0.5, seed=1), speech_like(0.5), quiet(0.3, seed=2), speech_like(0.5),
                   quiet(1.0, seed=3))


def test_a_short_pause_emits_pause_then_resumed_and_the_utterance_goes_on() -> None:
    pcm = _two_phrases()
    events = _feed(Segmenter(speculate_after_ms=160), pcm)

    kinds = [type(e) for _, e in events]
    assert kinds == [SpeechStarted, Pause, Resumed, Pause, Utterance]
    pause = events[1][1]
    assert isinstance(pause, Pause)
    # the pause fires 160 ms after the voice stops (+ a frame), carrying the speech so far
    assert pause.at - pause.speech_end == pytest.approx(0.16, abs=0.03)
    assert 400 <= pause.voiced_ms <= 620
    resumed_at = events[2][0]
    assert resumed_at == pytest.approx(T0 + 1.3, abs=0.06)  # when the caller spoke again
    (utt,) = _utterances(events)
    # one utterance with both halves: the pause did not cut it
    assert 900 <= utt.voiced_ms <= 1300
    assert _offset_in(pcm, pause.pcm) == _offset_in(pcm, utt.pcm)  # the pause's audio is its start


def test_no_pause_events_without_speculation_or_before_min_speech() -> None:
    pcm = _two_phrases()
    assert Pause not in [type(e) for _, e in _feed(Segmenter(), pcm)]
    short = _stream(quiet(0.5, seed=1), speech_like(0.1), quiet(0.3, seed=2), speech_like(0.5), quiet(1.0))
    kinds = [type(e) for _, e in _feed(Segmenter(speculate_after_ms=160, min_speech_ms=250), short)]
    assert kinds.count(Pause) == 1  # only after the second burst, when the speech totals 250 ms


def test_set_end_silence_changes_the_open_utterance_only() -> None:
    seg = Segmenter(speculate_after_ms=100, end_silence_ms=600)
    events = _feed(seg, _stream(quiet(0.5, seed=1), speech_like(0.6), quiet(0.14, seed=2)))
    pause = next(e for _, e in events if isinstance(e, Pause))
    seg.set_end_silence(1200)  # e.g. the transcript so far ends in "and"
    assert seg.tick(pause.speech_end + 1.0) == []  # 600 ms would have ended it
    assert isinstance(seg.tick(pause.speech_end + 1.25)[0], Utterance)
    # the next utterance is back to end_silence_ms
    t = pause.speech_end + 2.0
    events = _feed(seg, speech_like(0.6), now=t)
    assert not _utterances(events)
    assert not any(isinstance(e, Utterance) for e in seg.tick(t + 0.59))
    assert isinstance(seg.tick(t + 0.61)[0], Utterance)


def test_a_stream_that_stops_sending_frames_still_pauses_then_ends() -> None:
    seg = Segmenter(speculate_after_ms=150)
    _feed(seg, _stream(quiet(0.5, seed=1), speech_like(0.6)))
    last = T0 + 1.1
    assert seg.tick(last + 0.1) == []
    assert seg.tick(last + 0.16) == []  # the next 20 ms frame would have been due by now: 140 ms
    (pause,) = seg.tick(last + 0.18)
    assert isinstance(pause, Pause)
    assert seg.tick(last + 0.3) == []  # once per pause
    assert isinstance(seg.tick(last + 0.61)[0], Utterance)


def test_the_wait_for_a_chunky_carriers_next_chunk_is_not_a_pause() -> None:
    seg = Segmenter(speculate_after_ms=150)
    pcm = _stream(quiet(0.5, seed=1), speech_like(1.6))
    chunk = 2400  # 300 ms chunks, as Exotel may send
    events = []
    for start in range(0, len(pcm), chunk):
        at = T0 + (start + chunk) / RATE
        events += seg.push(pcm[start : start + chunk], at)
        events += seg.tick(at + 0.25)  # 250 ms into the wait for the next chunk
    assert not any(isinstance(e, Pause) for e in events)
