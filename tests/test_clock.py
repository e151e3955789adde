"""The engines' wall clock (pipeline/clock.py): a tick that raises is logged, and the clock goes on."""

from __future__ import annotations

import asyncio
import logging

from switchboard.pipeline.clock import tick_forever


async def test_a_failing_tick_is_logged_once_and_the_ticks_go_on(caplog):
    calls: list[float] = []

    async def tick(now: float) -> None:
        calls.append(now)
        raise RuntimeError("a bug in a tick")

    with caplog.at_level(logging.ERROR, "switchboard.call"):
        clock = asyncio.create_task(tick_forever(tick, "CA1"))
        await asyncio.sleep(0.5)
        clock.cancel()
        await asyncio.gather(clock, return_exceptions=True)
    assert len(calls) >= 5  # ~10 ticks in 0.5 s: the clock did not stop at the first failure
    failures = [record for record in caplog.records if "a tick failed" in record.getMessage()]
    assert len(failures) == 1 and "CA1" in failures[0].getMessage()  # not once per tick
    assert "a bug in a tick" in failures[0].exc_text
