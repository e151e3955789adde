"""Fixtures shared by the call tests."""

import numpy as np
import pytest

from switchboard.audio.wav import write_wav
from tests.speech import quiet, speech_like


@pytest.fixture
def speech_wav(tmp_path) -> str:
    """A caller line for the simulated caller: 1.2 s of speech-like sound with line noise either side,
    as an 8 kHz WAV (for tests whose STT is instant, so the words don't matter)."""
    path = tmp_path / "line.wav"
    write_wav(path, np.concatenate([quiet(0.1), speech_like(1.2), quiet(0.1, seed=1)]), 8000)
    return str(path)
