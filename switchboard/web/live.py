"""`LiveHub`: what is happening on the live calls, pushed to the dashboard's browsers (`GET /api/live`).

The server calls `call_started`, `turn` and `call_ended` synchronously from the call path; they only
update a small in-memory picture of the active calls and `put_nowait` an event into each subscriber's
bounded queue: they never wait and never raise. A subscriber that falls `max_queue` events behind (a
slow or stalled browser) loses its queued events and is sent a fresh snapshot instead when it reads
again, so it never misses a state change and never holds the calls up.

Events (JSON-ready dicts, each with a `type`):
  snapshot      {"calls": [call, …]}  every active call with its turns so far (sent first, and on resync)
  call_started  {"call": call}        call = {"id", "pipeline", "variant", "from", "to", "carrier",
                                               "started_at", "turns": [turn, …]}
  turn          {"call_id", "turn"}   turn = the call store's `turns` row (store.turn_row) as JSON
  call_ended    {"call_id", "summary"}    pipeline.metrics.call_summary() + has_recording

With several server processes (ops/live_bus.py), `relay` gets every event of this process's own calls to
pass on, and `apply` takes the other processes' events: the view is then every process's calls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from switchboard.core.metrics import TurnMetrics, stage_spans
from switchboard.store.calls import turn_row

log = logging.getLogger("switchboard.web")

RESYNC: dict[str, Any] = {"type": "resync"}  # queued for a subscriber that lagged: send a snapshot next


def jsonable(value: Any) -> Any:
    """Datetimes as ISO 8601 strings, recursively; everything else as is (store rows are JSON otherwise)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    return value


class Subscriber:
    """One browser's feed: a bounded queue of events, and whether it lagged (its events were dropped)."""

    def __init__(self, hub: LiveHub, max_queue: int) -> None:
        self.hub = hub
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(max_queue)
        self.lagged = False
        self.resyncs = 0

    def offer(self, event: dict[str, Any]) -> None:
        if self.lagged:
            return  # a snapshot is coming: it will include this
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.lagged = True
            self.resyncs += 1
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(RESYNC)

    async def next(self) -> dict[str, Any]:
        """The next event; a snapshot of the active calls after a lag."""
        event = await self.queue.get()
        if event is RESYNC:
            self.lagged = False
            return self.hub.snapshot()
        return event


class LiveHub:
    """The active calls as the dashboard sees them, and the browsers watching them."""

    def __init__(self, max_queue: int = 256) -> None:
        self.max_queue = max_queue
        self.calls: dict[str, dict[str, Any]] = {}
        self.subscribers: set[Subscriber] = set()
        self.closed = False
        self.relay: Callable[[dict[str, Any]], None] | None = None  # this process's events, to share

    # --- called from the call path: synchronous, never raise --------------------------------------------

    def call_started(self, call_id: str, pipeline: str, *, from_number: str = "", to_number: str = "",
                     carrier: str = "", variant: str | None = None) -> None:
        call = {"id": call_id, "pipeline": pipeline, "variant": variant, "from": from_number,
                "to": to_number, "carrier": carrier, "started_at": datetime.now(UTC).isoformat(),
                "turns": []}
        self.calls[call_id] = call
        self._publish({"type": "call_started", "call": call}, local=True)

    def turn(self, metrics: TurnMetrics) -> None:
        """A finished turn (fits `on_turn`)."""
        try:
            row = jsonable(turn_row(metrics))
            row["spans"] = stage_spans(row)  # the waterfall, drawn by the browser as the pages draw it
        except Exception:  # never raise into the call
            log.exception("live dashboard: could not read turn %s of call %s", metrics.index, metrics.call_id)
            return
        call = self.calls.get(metrics.call_id)
        if call is not None:
            call["turns"].append(row)
        self._publish({"type": "turn", "call_id": metrics.call_id, "turn": row}, local=True)

    def call_ended(self, call_id: str, summary: dict[str, Any] | None = None) -> None:
        """The call is over; `summary` is CallSession.close()'s (its recording's path is not passed on)."""
        self.calls.pop(call_id, None)
        summary = dict(summary or {})
        summary["has_recording"] = bool(summary.pop("recording", None))
        self._publish({"type": "call_ended", "call_id": call_id, "summary": jsonable(summary)}, local=True)

    def apply(self, event: dict[str, Any]) -> None:
        """Another process's event (call_started, turn, call_ended): into the picture and to the browsers."""
        kind = event.get("type")
        if kind == "call_started":
            call = dict(event["call"], turns=list(event["call"].get("turns", [])))
            self.calls[call["id"]] = call
            event = {"type": "call_started", "call": call}
        elif kind == "turn":
            call = self.calls.get(event["call_id"])
            if call is not None:
                call["turns"].append(event["turn"])
        elif kind == "call_ended":
            self.calls.pop(event["call_id"], None)
        else:
            return
        self._publish(event)

    def _publish(self, event: dict[str, Any], local: bool = False) -> None:
        if local and self.relay is not None:
            try:
                self.relay(event)
            except Exception:
                log.exception("live dashboard: could not relay an event")
        for subscriber in list(self.subscribers):
            try:
                subscriber.offer(event)
            except Exception:
                log.exception("live dashboard: could not queue an event")

    # --- the browsers' side --------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {"type": "snapshot", "calls": [dict(call, turns=list(call["turns"]))
                                              for call in self.calls.values()]}

    def subscribe(self) -> Subscriber:
        subscriber = Subscriber(self, self.max_queue)
        self.subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    def close(self) -> None:
        """End every event stream (the server is stopping: open streams would hold its shutdown up)."""
        self.closed = True
        self._publish({"type": "closed"})
