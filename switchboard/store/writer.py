"""`StoreWriter`: the call store, written off the audio path.

The server calls `call_started`, `turn`, `shadow` and `call_ended` synchronously (from `on_turn` and its
call hooks); they only put a record in a bounded queue and never raise. One background task writes the
records in order, each in its own committed transaction, so a crash loses at most what was still queued
(normally only the turn in flight).

When the database is down, locked or full, the task keeps the record and retries with backoff (1 s up
to 30 s) while new records queue up to `max_pending`; past that they are dropped and counted. Records
the database refuses for good (a constraint, a bad value) are dropped and counted. Every failure is
logged at error level, at most once per `complain_every_s`, with the counts since the last message.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

from sqlalchemy import exc as sa_exc

from switchboard.core.metrics import TurnMetrics
from switchboard.store.calls import CallStore

if TYPE_CHECKING:
    from switchboard.core.metrics import ShadowResult

log = logging.getLogger("switchboard.store")

Write = Callable[[CallStore], Awaitable[None]]  # one queued record


def is_transient(error: BaseException) -> bool:
    """Could retrying later succeed? (Connection lost or refused, database locked or full, timeouts.)"""
    if isinstance(error, sa_exc.DBAPIError):
        return error.connection_invalidated or isinstance(error, (sa_exc.OperationalError,
                                                                  sa_exc.InterfaceError))
    return isinstance(error, (OSError, TimeoutError, sa_exc.TimeoutError, sa_exc.DisconnectionError))


class StoreWriter:
    """Queues call records and writes them to `store` from one background task.

    Use `await writer.start()` (or `async with writer:`) in the event loop, `await writer.aclose()` at
    shutdown. The store is opened by the task if it is not open yet, retrying while the database is down.
    """

    def __init__(
        self,
        store: CallStore,
        max_pending: int = 10_000,
        complain_every_s: float = 60.0,
        retry_delays_s: tuple[float, float] = (1.0, 30.0),
    ) -> None:
        self.store = store
        self.complain_every_s = complain_every_s
        self.retry_delays_s = retry_delays_s
        self.written = 0  # records committed
        self.dropped = 0  # records lost: queue full, refused by the database, or unwritten at shutdown
        self.failures = 0  # failed attempts (a record retried 5 times counts 5)
        self._queue: asyncio.Queue[Write | None] = asyncio.Queue(max_pending)
        self._task: asyncio.Task[None] | None = None
        self._last_complaint: dict[str, float] = {}  # kind of trouble -> when it was last logged
        self._unreported: dict[str, int] = {}  # kind of trouble -> occurrences since then

    # --- called from the audio path: synchronous, never raise --------------------------------------------

    def call_started(
        self,
        call_id: str,
        pipeline: str,
        *,
        from_number: str = "",
        to_number: str = "",
        carrier: str = "",
        variant: str | None = None,
        eval_tags: dict[str, str] | None = None,
        config_version: tuple[str, str] | None = None,
    ) -> None:
        """Queue the call's row (started now, UTC). `eval_tags`: eval_run, eval_scenario of an eval call;
        `config_version`: the hashes of the pipeline's settings and of the file that answered it."""
        started_at = datetime.now(UTC)
        self._put(lambda store: store.start_call(
            call_id, pipeline, started_at=started_at, from_number=from_number, to_number=to_number,
            carrier=carrier, variant=variant, eval_tags=eval_tags, config_version=config_version,
        ), f"start of call {call_id}")

    def turn(self, metrics: TurnMetrics) -> None:
        """Queue a finished turn (a copy: later changes to `metrics` are not seen). Fits `on_turn`."""
        try:
            snapshot = dataclasses.replace(metrics, failures=list(metrics.failures),
                                           hedges=list(metrics.hedges), vendors=dict(metrics.vendors))
        except Exception:  # never raise into the call
            log.exception("call store: could not copy turn metrics; turn not recorded")
            return
        created_at = datetime.now(UTC)
        self._put(lambda store: store.add_turn(snapshot, created_at=created_at),
                  f"turn {metrics.index} of call {metrics.call_id}")

    def shadow(self, result: ShadowResult) -> None:
        """Queue a shadow LLM's result (a copy). Fits `ShadowRunner(on_result=…)`."""
        try:
            snapshot = dataclasses.replace(result)
        except Exception:  # never raise into the call
            log.exception("call store: could not copy a shadow result; not recorded")
            return
        created_at = datetime.now(UTC)
        self._put(lambda store: store.add_shadow(snapshot, created_at=created_at),
                  f"shadow {result.name} of turn {result.turn_index} of call {result.call_id}")

    def call_ended(self, call_id: str, summary: dict[str, Any], recording: str | None = None) -> None:
        """Queue the call's summary and recording path (ended now, UTC)."""
        ended_at = datetime.now(UTC)
        summary = dict(summary)
        self._put(lambda store: store.end_call(call_id, summary, recording=recording, ended_at=ended_at),
                  f"end of call {call_id}")

    def close_lost_calls(self) -> None:
        """Queue closing the calls an earlier crash left open (see `CallStore.close_lost_calls`); queued
        at start-up, before any call of this process, it runs as soon as the database opens."""
        self._put(lambda store: store.close_lost_calls(), "closing of calls left open by a crash")

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def _put(self, write: Write, what: str) -> None:
        try:
            self._queue.put_nowait(write)
        except asyncio.QueueFull:
            self.dropped += 1
            self._complain("queue full", f"dropped the {what}: {self._queue.maxsize} records already "
                           "waiting for the database")

    # --- lifecycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the background task (in the running loop). Idempotent."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="call-store-writer")

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Write what is queued (for up to `timeout_s`), then stop. Records left unwritten are counted as
        dropped and logged. Does not close the store."""
        if self._task is None:
            return
        task, self._task = self._task, None
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)  # stop after the records already queued
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout_s)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        left = sum(write is not None for write in self._drain())
        if left:
            self.dropped += left
            log.error("call store: %d records not written at shutdown (database unavailable)", left)

    async def __aenter__(self) -> StoreWriter:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    def _drain(self) -> list[Write | None]:
        items = []
        while not self._queue.empty():
            items.append(self._queue.get_nowait())
        return items

    # --- the background task -----------------------------------------------------------------------------

    async def _run(self) -> None:
        await self._retrying(self._open, "open the database")
        while True:
            write = await self._queue.get()
            if write is None:
                return
            if await self._retrying(lambda w=write: w(self.store), "write a record"):
                self.written += 1

    async def _open(self) -> None:
        if not self.store.is_open:
            await self.store.open()

    async def _retrying(self, attempt: Callable[[], Awaitable[None]], what: str) -> bool:
        """Run `attempt` until it succeeds (True) or fails for good (False, the record is dropped)."""
        delay, longest = self.retry_delays_s
        while True:
            try:
                await attempt()
                return True
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.failures += 1
                if not is_transient(error):
                    self.dropped += 1
                    self._complain("refused",
                                   f"could not {what}, dropped it: {type(error).__name__}: {error}")
                    return False
                self._complain("unavailable", f"could not {what}, retrying in {delay:g} s "
                               f"({self.pending} records waiting): {type(error).__name__}: {error}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, longest)

    def _complain(self, kind: str, message: str) -> None:
        """Log at error level, each kind of trouble at most once per `complain_every_s`, with how often it
        happened in between."""
        now = time.monotonic()
        if now - self._last_complaint.get(kind, float("-inf")) < self.complain_every_s:
            self._unreported[kind] = self._unreported.get(kind, 0) + 1
            return
        unreported = self._unreported.pop(kind, 0)
        since = f" ({unreported} more like it since the last message)" if unreported else ""
        log.error("call store (%s): %s%s; totals: %d written, %d failed attempts, %d dropped; calls go on",
                  self.store.url.split("://")[0], message, since, self.written, self.failures, self.dropped)
        self._last_complaint[kind] = now
