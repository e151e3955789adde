"""Drain on deploy: SIGTERM stops new calls, lets the active ones finish, then ends the rest politely.

`Drain.run()`: the process stops taking calls (`Admission.draining`: /readyz answers 503, the webhook and
new media streams hear the busy message), waits up to `drain_timeout_s` for the active calls to end on
their own, then has each remaining call say `drain_message` and hang up (a "goodbye" turn, recorded like
any other), and waits for their records. The server then shuts down as usual, flushing the call store.

`ops/serving.py`'s `DrainingServer` routes SIGTERM here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from switchboard.ops.admission import Admission
from switchboard.pipeline.call import CallSession

log = logging.getLogger("switchboard.ops")

GOODBYE_SETTLE_S = 5.0  # after the goodbyes' own watchdogs, how long their records may take to land


class Drain:
    def __init__(self, admission: Admission, calls: Mapping[str, CallSession],
                 wait_idle: Callable[[], Awaitable[None]], timeout_s: float, message: str) -> None:
        self.admission, self.calls, self.wait_idle = admission, calls, wait_idle
        self.timeout_s, self.message = timeout_s, message
        self.said_goodbye = 0  # calls ended by the drain's goodbye

    async def run(self) -> None:
        if self.admission.draining:
            return
        self.admission.draining = True
        log.warning("draining: no new calls; %d active calls have %.0f s to finish", len(self.calls),
                    self.timeout_s)
        try:
            await asyncio.wait_for(self.wait_idle(), self.timeout_s)
            log.warning("drained: every call ended on its own")
            return
        except TimeoutError:
            pass
        rest = list(self.calls.values())
        log.warning("drain: %d calls still active after %.0f s: saying goodbye and hanging up", len(rest),
                    self.timeout_s)
        self.said_goodbye += len(rest)
        await asyncio.gather(*(session.say_goodbye(self.message) for session in rest), return_exceptions=True)
        try:
            await asyncio.wait_for(self.wait_idle(), GOODBYE_SETTLE_S)
        except TimeoutError:
            log.error("drain: %d calls did not end after their goodbye; shutting down anyway",
                      len(self.calls))
