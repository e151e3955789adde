"""Drain on deploy: SIGTERM stops new calls, lets the active ones finish, then ends the rest politely.

`Drain.run()`: the process stops taking calls (`Admission.draining`: /readyz answers 503, the webhook and
new media streams hear the busy message), waits up to `drain_timeout_s` for the active calls to end on
their own, then has each remaining call say `drain_message` and hang up (a "goodbye" turn, recorded like
any other), and waits for their records. The server then shuts down as usual, flushing the call store.

`DrainingServer` is uvicorn's server with SIGTERM routed to the drain: uvicorn's own handling would close
every call's WebSocket at once (close code 1012). A second SIGTERM, or SIGINT (Ctrl-C), exits at once.
A drained process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping
from types import FrameType

import uvicorn

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


class DrainingServer(uvicorn.Server):
    """uvicorn's server; the first SIGTERM runs `drain` and then shuts down as usual."""

    def __init__(self, config: uvicorn.Config, drain: Callable[[], Awaitable[None]]) -> None:
        super().__init__(config)
        self._drain = drain
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining: asyncio.Task | None = None

    async def serve(self, sockets: list | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM or self._draining is not None or self._loop is None or self.should_exit:
            super().handle_exit(sig, frame)  # Ctrl-C, a second SIGTERM: uvicorn's immediate shutdown
            return
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        if self._draining is None:
            self._draining = asyncio.create_task(self._drain_then_exit(), name="drain")

    async def _drain_then_exit(self) -> None:
        try:
            await self._drain()
        except Exception:
            log.exception("drain failed; shutting down")
        finally:
            self.should_exit = True
