"""Fixtures shared by the call tests, and the `timescale` marker (tests/timescale.py)."""

import os

import numpy as np
import pytest

from switchboard.audio.wav import write_wav
from tests.speech import quiet, speech_like
from tests.timescale import SCALE_ENV, loop_factory, scale_for


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", "timescale(k): run the test's event loop and time.monotonic k times real time "
        "(in-process calls on instant or fake providers only; see tests/timescale.py)")


def pytest_asyncio_loop_factories(config, item):
    """Each async test's event loop: a `ScaledLoop` for a test marked `timescale`, else asyncio's own."""
    k = scale_for(item, os.environ.get(SCALE_ENV))
    return {"asyncio" if k == 1.0 else f"timescale-{k:g}": loop_factory(k)}


@pytest.fixture
def speech_wav(tmp_path) -> str:
    """A caller line for the simulated caller: 1.2 s of speech-like sound with line noise either side,
    as an 8 kHz WAV (for tests whose STT is instant, so the words don't matter)."""
    path = tmp_path / "line.wav"
    write_wav(path, np.concatenate([quiet(0.1), speech_like(1.2), quiet(0.1, seed=1)]), 8000)
    return str(path)
