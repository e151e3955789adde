"""read_wav / write_wav: lossless mono round trip, stereo mixed down on read, bad input rejected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from switchboard.audio.wav import read_wav, write_wav


def test_mono_round_trip_is_lossless(tmp_path: Path) -> None:
    pcm = np.random.default_rng(1).integers(-32768, 32768, 8000, dtype=np.int16)
    path = tmp_path / "mono.wav"
    write_wav(path, pcm, 8000)
    out, rate = read_wav(path)
    assert rate == 8000
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, pcm)


def test_stereo_is_mixed_down_on_read(tmp_path: Path) -> None:
    left = np.array([1000, -32768, 32767, 3], dtype=np.int16)
    right = np.array([3000, -32768, 32767, 0], dtype=np.int16)
    path = tmp_path / "stereo.wav"
    write_wav(path, np.stack([left, right], axis=1), 16000)
    out, rate = read_wav(path)
    assert rate == 16000
    np.testing.assert_array_equal(out, np.array([2000, -32768, 32767, 1], dtype=np.int16))


def test_write_rejects_float_and_odd_shapes(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        write_wav(tmp_path / "f.wav", np.zeros(10, dtype=np.float32), 8000)
    with pytest.raises(ValueError):
        write_wav(tmp_path / "c.wav", np.zeros((10, 3), dtype=np.int16), 8000)
