"""The `timescale` marker: a marked test's loop and `time.monotonic` run on one scaled clock."""

import asyncio
import os
import time

import pytest

from tests.timescale import SCALE_ENV, ScaledLoop


@pytest.mark.timescale(4)
async def test_a_marked_test_runs_on_a_scaled_loop_that_monotonic_follows():
    loop = asyncio.get_running_loop()
    k = float(os.environ.get(SCALE_ENV) or 4)  # the variable, when set, replaces the marker's k
    assert (isinstance(loop, ScaledLoop) and loop.k == k) if k != 1 else not isinstance(loop, ScaledLoop)
    before = loop.time()
    await asyncio.sleep(0.2)
    # the server's clock (time.monotonic) and the caller's (loop.time) are one clock
    assert loop.time() - before >= 0.2
    assert abs(time.monotonic() - loop.time()) < 0.05


async def test_an_unmarked_test_runs_in_real_time():
    assert not isinstance(asyncio.get_running_loop(), ScaledLoop)


def test_closing_the_loop_puts_the_real_clock_back():
    real = time.monotonic, time.monotonic_ns
    loop = ScaledLoop(3)
    assert time.monotonic is not real[0]
    with pytest.raises(RuntimeError):
        ScaledLoop(2)  # time.monotonic is process-wide: one scaled loop at a time
    loop.close()
    assert (time.monotonic, time.monotonic_ns) == real
