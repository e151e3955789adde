"""StreamResampler / resample: continuity across chunks, durations after flush, spectral content."""

from __future__ import annotations

import numpy as np
import pytest

from switchboard.audio.resample import StreamResampler, resample


def _sine(freq: float, rate: int, seconds: float, amplitude: float = 10000.0) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def _stream_in_pieces(resampler: StreamResampler, pcm: np.ndarray, piece: int) -> np.ndarray:
    out = [resampler.process(pcm[i : i + piece]) for i in range(0, len(pcm), piece)]
    out.append(resampler.flush())
    return np.concatenate(out)


@pytest.mark.parametrize(("in_rate", "out_rate"), [(22050, 8000), (24000, 8000), (8000, 16000)])
def test_stream_in_20ms_pieces_matches_one_shot(in_rate: int, out_rate: int) -> None:
    pcm = _sine(440, in_rate, 1.5)
    streamed = _stream_in_pieces(StreamResampler(in_rate, out_rate), pcm, in_rate // 50)
    one_shot = resample(pcm, in_rate, out_rate)
    assert streamed.dtype == np.int16
    assert abs(len(streamed) - len(pcm) * out_rate / in_rate) <= 1
    assert len(streamed) == len(one_shot)
    # same filter either way; int16 rounding may differ by a couple of LSBs
    assert np.max(np.abs(streamed.astype(np.int32) - one_shot)) <= 4


def test_flush_after_each_chunk_keeps_each_chunk_duration() -> None:
    resampler = StreamResampler(22050, 8000)
    pcm = _sine(300, 22050, 1.0)
    for _ in range(3):  # the stream stays usable after every flush
        out = np.concatenate([resampler.process(pcm), resampler.flush()])
        assert abs(len(out) - 8000) <= 1


def test_process_holds_back_a_tail_that_flush_releases() -> None:
    resampler = StreamResampler(24000, 8000)
    first = resampler.process(_sine(440, 24000, 0.2))
    tail = resampler.flush()
    assert len(first) < 1600
    assert len(first) + len(tail) == 1600


def test_tone_keeps_its_frequency_24k_to_8k() -> None:
    out = resample(_sine(1000, 24000, 1.0), 24000, 8000)
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    peak_hz = np.argmax(spectrum) * 8000 / len(out)
    assert abs(peak_hz - 1000) <= 2


def test_streamed_tone_keeps_its_frequency() -> None:
    out = _stream_in_pieces(StreamResampler(24000, 8000), _sine(1000, 24000, 1.0), 480)
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    assert abs(np.argmax(spectrum) * 8000 / len(out) - 1000) <= 2


def test_out_of_band_tone_is_filtered_out() -> None:
    # 6 kHz cannot exist at 8 kHz; the anti-alias filter must remove it rather than fold it to 2 kHz
    out = resample(_sine(6000, 24000, 1.0), 24000, 8000)[800:-800]  # skip the start/stop transients
    assert np.sqrt(np.mean(out.astype(np.float64) ** 2)) < 10  # input RMS is ≈7000


def test_equal_rates_pass_through_unchanged() -> None:
    pcm = _sine(440, 8000, 0.1)
    resampler = StreamResampler(8000, 8000)
    np.testing.assert_array_equal(resampler.process(pcm), pcm)
    assert len(resampler.flush()) == 0
    np.testing.assert_array_equal(resample(pcm, 8000, 8000), pcm)


def test_rejects_non_int16_and_stereo() -> None:
    resampler = StreamResampler(22050, 8000)
    with pytest.raises(TypeError):
        resampler.process(np.zeros(100, dtype=np.float32))
    with pytest.raises(ValueError):
        resampler.process(np.zeros((100, 2), dtype=np.int16))


def test_halfband_holds_nothing_back_and_keeps_the_voice_band():
    from switchboard.audio.resample import HalfbandResampler

    def tone(hz: float, rate: int, seconds: float = 1.0) -> np.ndarray:
        return (np.sin(2 * np.pi * hz * np.arange(int(rate * seconds)) / rate) * 10000).astype(np.int16)

    def level_db(pcm: np.ndarray) -> float:
        return 20 * np.log10(np.sqrt(np.mean(pcm[400:].astype(np.float64) ** 2)) + 1e-9)

    for hz, kept in ((300, True), (3400, True), (4500, False), (6000, False)):
        down = HalfbandResampler(up=False)
        wide = tone(hz, 16000)
        chunks = [down.process(wide[i : i + 320]) for i in range(0, len(wide), 320)]
        assert {len(c) for c in chunks} == {160}  # a 20 ms frame out for every 20 ms in: nothing held
        loss = level_db(np.concatenate(chunks)) - level_db(wide)
        assert (abs(loss) < 0.5) if kept else loss < -60, (hz, loss)  # above 4 kHz would alias: removed
    up = HalfbandResampler(up=True)
    impulse = np.zeros(1600, np.int16)
    impulse[800] = 10000
    out = np.concatenate([up.process(impulse[i : i + 160]) for i in range(0, 1600, 160)])
    assert len(out) == 3200 and 0 < (np.argmax(out) - 1600) / 16 < 4  # the filter's own 3 ms, no more
