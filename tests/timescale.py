"""Scaled time for whole-call tests: the event loop, and every clock the call reads, run k times real time.

A call on instant providers spends most of its test waiting: the bot's audio is paced at 20 ms a frame,
the call ticks every 50 ms, the endpointer waits out silences and the simulated caller speaks in real
time. With ``pytestmark = pytest.mark.timescale(k)`` a test module's async tests run on `ScaledLoop`,
whose clock runs k times the monotonic clock, so every asyncio sleep, timeout and timer, in the server
and the caller alike, takes 1/k of its real time, and the call is the same call k times faster.

`time.monotonic()` (what the server's pacing, endpointing, metrics and the loop itself read) is the
scaled clock while such a loop is open, so the server needs no hook of its own and production keeps
reading the plain monotonic clock. The selector divides every wait by k, so the loop wakes on time.

What cannot follow: threads (`asyncio.to_thread`, embedded engines, fakes serving from their own
thread) and subprocesses run in real time, so a test that relies on them keeps k = 1. Work takes k times
longer on the scaled clock: a 100 ms stall of a loaded machine is 100·k ms to the call, so k stays small.
Every figure a scaled test sees (voice-to-voice ms, talk-over, durations) is in simulated seconds.
"""

from __future__ import annotations

import asyncio
import selectors
import time
from collections.abc import Callable

import pytest

DEFAULT_K = 2.0  # what `pytest.mark.timescale()` with no argument runs at
SCALE_ENV = "SWITCHBOARD_TEST_TIMESCALE"  # overrides every scaled test's k (1 = real time everywhere)


def _scaled_clock(real: Callable[[], float], k: float) -> Callable[[], float]:
    """`real` run k times faster from now on (continuous: no jump when it starts)."""
    t0 = real()

    def now() -> float:
        return t0 + (real() - t0) * k

    return now


def _scaled_clock_ns(real: Callable[[], int], k: float) -> Callable[[], int]:
    t0 = real()

    def now() -> int:
        return t0 + int((real() - t0) * k)

    return now


class _ScaledSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """The loop's selector: a wait of `timeout` loop seconds lasts timeout / k real seconds."""

    def __init__(self, k: float) -> None:
        super().__init__()
        self._k = k

    def select(self, timeout: float | None = None) -> list:
        if timeout is not None and timeout > 0:
            timeout /= self._k
        return super().select(timeout)


class ScaledLoop(asyncio.SelectorEventLoop):
    """An event loop on a clock k times the monotonic clock. While it is open `time.monotonic` and
    `time.monotonic_ns` read that clock (put back on close); only one may be open at a time."""

    _open: ScaledLoop | None = None

    def __init__(self, k: float) -> None:
        if k <= 0:
            raise ValueError("k must be > 0")
        super().__init__(_ScaledSelector(k))
        if ScaledLoop._open is not None:
            super().close()
            raise RuntimeError("one scaled loop at a time: time.monotonic is process-wide")
        self.k = k
        self._real = time.monotonic, time.monotonic_ns
        time.monotonic = _scaled_clock(self._real[0], k)
        time.monotonic_ns = _scaled_clock_ns(self._real[1], k)
        ScaledLoop._open = self

    def _restore(self) -> None:
        if ScaledLoop._open is self:
            time.monotonic, time.monotonic_ns = self._real
            ScaledLoop._open = None

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._restore()


def scale_for(item: pytest.Item, env: str | None) -> float:
    """The k a test runs at: its closest `timescale` marker's (DEFAULT_K without an argument), 1 unmarked.
    SCALE_ENV, if set, replaces every k but 1 (a test kept at `timescale(1)` is bound to real time)."""
    marker = item.get_closest_marker("timescale")
    if marker is None:
        return 1.0
    k = float(marker.args[0]) if marker.args else DEFAULT_K
    return float(env) if env and k != 1.0 else k


def loop_factory(k: float) -> Callable[[], asyncio.AbstractEventLoop]:
    if k == 1.0:
        return asyncio.new_event_loop
    return lambda: ScaledLoop(k)
