"""Answering machine detection when the carrier tells its verdict apart from the call's stream.

Twilio runs its detection before it asks for the call's TwiML, so its verdict (`AnsweredBy`) opens the
stream with the call. Telnyx (TeXML with `AsyncAmd`), Plivo (`machine_detection_url`) and Vonage (its
event webhook) post it to a webhook of their own, which may come before or after the media socket
opens. The carrier's webhook route `record`s it here under the carrier's id of the call; the server
holds a start that says it wants one (the `verdict_wait_s` parameter our dialers put in the stream)
until it is in or that long has passed, so the call starts knowing who answered, as a Twilio one does:
a machine gets the pipeline's `voicemail:` behaviour, a person the greeting. What the line carries
while the start is held (the machine's greeting, a person's "hello?") is not the call's.

A verdict is kept `KEEP_S` for a socket that opens after it, at most `MAX_KEPT` of them. The carrier may
post it to another process than the one holding the call's socket (`serve --workers N`, several instances
behind a load balancer): with a PostgreSQL store every process shares the verdicts it is posted
(`relay`, set by ops/live_bus.py) and records the others' (`record(..., shared=True)`). Without one there
is one process, whose board is all there is.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Callable

from switchboard.core.carrier import Start

log = logging.getLogger("switchboard.verdicts")

WAIT_PARAMETER = "verdict_wait_s"  # a start's custom parameter: hold the call for the verdict this long
ANSWERED_BY = "answered_by"  # the verdict, in Twilio's words (machine_start, machine_end_beep, human, …)
MAX_WAIT_S = 60.0
KEEP_S = 120.0
MAX_KEPT = 10_000


class MachineVerdicts:
    """Verdicts posted by carriers, by the carrier's call id; a call's start may wait for its own."""

    def __init__(self) -> None:
        self._kept: collections.OrderedDict[str, tuple[str, float]] = collections.OrderedDict()
        self._waiting: dict[str, asyncio.Future[str]] = {}
        self.relay: Callable[[str, str], None] | None = None  # tells the other processes (never waits)

    def record(self, call_id: str, answered_by: str, shared: bool = False) -> None:
        """The carrier's verdict for `call_id` (a later one replaces it; a held start takes the first).
        `shared`: another process was posted it and passed it on (so it is not relayed back)."""
        if not call_id or not answered_by:
            return
        if not shared and self.relay is not None:
            self.relay(call_id, answered_by)
        now = time.monotonic()
        self._kept.pop(call_id, None)
        self._kept[call_id] = (answered_by, now)
        while self._kept and (len(self._kept) > MAX_KEPT or _oldest(self._kept) < now - KEEP_S):
            self._kept.popitem(last=False)
        waiter = self._waiting.pop(call_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(answered_by)

    def known(self, call_id: str) -> str | None:
        kept = self._kept.get(call_id)
        return kept[0] if kept is not None and kept[1] >= time.monotonic() - KEEP_S else None

    async def wait(self, call_id: str, timeout_s: float) -> str | None:
        """`call_id`'s verdict once it is in, or None after `timeout_s`."""
        known = self.known(call_id)
        if known is not None:
            return known
        waiter = self._waiting.get(call_id)
        if waiter is None or waiter.done():
            waiter = self._waiting[call_id] = asyncio.get_running_loop().create_future()
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), timeout_s)
        except TimeoutError:
            return None
        finally:
            if self._waiting.get(call_id) is waiter and not waiter.done():
                del self._waiting[call_id]
                waiter.cancel()

    def hold(self, start: Start) -> HeldStart | None:
        """A start to hold until its verdict is in, or None to start the call now (no verdict wanted, or
        the verdict already known: then it is written into the start's parameters)."""
        params = start.custom_parameters
        wait_s = _seconds(params.pop(WAIT_PARAMETER, ""))
        if wait_s is None or params.get(ANSWERED_BY):
            return None
        known = self.known(start.call_sid)
        if known is not None:
            params[ANSWERED_BY] = known
            return None
        log.info("call %s: holding the start up to %.1f s for the machine detection's verdict",
                 start.call_sid, wait_s)
        return HeldStart(start, asyncio.create_task(self.wait(start.call_sid, wait_s)), wait_s)


class HeldStart:
    """A start waiting for its verdict (one connection's, in the server's call loop)."""

    def __init__(self, start: Start, verdict: asyncio.Task[str | None], wait_s: float) -> None:
        self._start, self._verdict, self._wait_s = start, verdict, wait_s
        self._since = time.monotonic()

    def ready(self) -> bool:
        return self._verdict.done()

    def release(self) -> Start:
        """The start, its parameters holding the verdict (none after the wait: the call goes on as for a
        person)."""
        answered_by = None if self._verdict.cancelled() else self._verdict.result()
        waited = time.monotonic() - self._since
        if answered_by is None:
            log.info("call %s: no machine detection verdict within %.1f s: the call goes on as answered by "
                     "a person", self._start.call_sid, self._wait_s)
        else:
            log.info("call %s: answered by %s (verdict after %.1f s)", self._start.call_sid, answered_by,
                     waited)
            self._start.custom_parameters[ANSWERED_BY] = answered_by
        return self._start

    def cancel(self) -> None:
        self._verdict.cancel()


def _oldest(kept: collections.OrderedDict[str, tuple[str, float]]) -> float:
    return next(iter(kept.values()))[1]


def _seconds(value: str) -> float | None:
    try:
        seconds = float(value)
    except ValueError:
        return None
    return min(seconds, MAX_WAIT_S) if math.isfinite(seconds) and seconds > 0 else None
