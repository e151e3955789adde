"""`DrainingServer`: uvicorn's server with SIGTERM routed to the drain (ops/drain.py).

uvicorn's own SIGTERM handling would close every call's WebSocket at once (close code 1012). Here the
first SIGTERM runs the drain and then lets uvicorn shut down as usual; a second SIGTERM, or SIGINT
(Ctrl-C), is uvicorn's immediate shutdown. A drained process exits 0. Imported only by `serve`.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import signal
from collections.abc import Awaitable, Callable
from types import FrameType

import uvicorn

log = logging.getLogger("switchboard.ops")


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
        # a fresh context: the signal may land while a call's task runs, whose context (its call id) the
        # drain must not inherit
        self._loop.call_soon_threadsafe(self._start_drain, context=contextvars.Context())

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
