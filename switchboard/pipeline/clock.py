"""The call engines' wall clock: a tick every `TICK_S` that a bug in one tick cannot stop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("switchboard.call")

TICK_S = 0.05  # how often the endpointer's silences, holds, keypad entries and time limits are checked
LOG_EVERY_S = 5.0  # a tick that fails every time is logged this often, not 20 times a second


async def tick_forever(tick: Callable[[float], Awaitable[None]], call_id: str) -> None:
    """Call `tick(now)` every `TICK_S` until cancelled; a tick that raises is logged and the clock goes on
    (stopped, it would leave the caller in silence: no endpointing, no hold released, no time limit)."""
    logged_at = -LOG_EVERY_S
    while True:
        await asyncio.sleep(TICK_S)
        now = time.monotonic()
        try:
            await tick(now)
        except Exception:
            if now - logged_at >= LOG_EVERY_S:
                log.exception("call %s: a tick failed", call_id)
                logged_at = now
