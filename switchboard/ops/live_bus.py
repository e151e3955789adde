"""The dashboard's live view across processes, through PostgreSQL itself (LISTEN/NOTIFY on the call store).

Every process with a PostgreSQL `database_url` keeps one asyncpg connection that LISTENs on `CHANNEL`,
and NOTIFYs there each event of its own calls (`LiveHub.relay`: call started, turn, call ended), tagged
with its `origin` (a random id per process). Each process applies the others' events to its `LiveHub`
(`LiveHub.apply`), so `/dashboard/live` and `/api/live` on any instance show the calls of all of them.

- A process that starts late says `hello`; the others announce their active calls (with their turns).
- Each process says `alive` every `HEARTBEAT_S`; the calls of one not heard from for `FORGET_AFTER_S`
  (killed without a drain) leave the view.
- Answering machine detection's verdicts go the same way (`verdict` events): a carrier may post one to
  any process, and the process holding that call's socket needs it (core/verdicts.py).
- NOTIFY payloads are limited to 8000 bytes: a turn's long texts are cut to fit (the store keeps them whole).
- Publishing never waits on the call path: events go into a bounded queue (`MAX_QUEUE`, then dropped and
  counted) that one task sends. A lost connection is retried every `RETRY_S`; events meanwhile are lost
  (the view catches up with the next call start; the store has everything).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from typing import Any

from switchboard.core.verdicts import MachineVerdicts
from switchboard.web.live import LiveHub

log = logging.getLogger("switchboard.ops")

CHANNEL = "switchboard_live"
HEARTBEAT_S = 10.0
FORGET_AFTER_S = 35.0
RETRY_S = 2.0
MAX_QUEUE = 1024
MAX_PAYLOAD = 7900  # bytes; PostgreSQL refuses NOTIFY payloads of 8000 and more
TEXT_FIELDS = ("transcript", "reply_text", "reply_heard", "failures", "error")


def asyncpg_url(database_url: str) -> str:
    """The call store's URL as asyncpg takes it (`postgresql+asyncpg://` → `postgresql://`)."""
    scheme, _, rest = database_url.partition("://")
    return f"postgresql://{rest}" if scheme.startswith(("postgresql", "postgres")) else database_url


def is_postgres(database_url: str | None) -> bool:
    return bool(database_url) and database_url.split("://", 1)[0].startswith(("postgresql", "postgres"))


def fit(message: dict[str, Any]) -> str | None:
    """The message as a NOTIFY payload under MAX_PAYLOAD bytes (a turn's texts cut), or None."""
    payload = json.dumps(message, separators=(",", ":"))
    event = message.get("event", {})
    if len(payload.encode()) <= MAX_PAYLOAD or event.get("type") != "turn":
        return payload if len(payload.encode()) <= MAX_PAYLOAD else None
    turn = dict(event["turn"])
    for field in TEXT_FIELDS:
        if isinstance(turn.get(field), str):
            turn[field] = turn[field][:200] + "…" if len(turn[field]) > 200 else turn[field]
        elif isinstance(turn.get(field), list):
            turn[field] = [str(item)[:200] for item in turn[field][:5]]
    payload = json.dumps({**message, "event": {**event, "turn": turn}}, separators=(",", ":"))
    return payload if len(payload.encode()) <= MAX_PAYLOAD else None


class LiveBus:
    def __init__(self, database_url: str, hub: LiveHub, verdicts: MachineVerdicts | None = None) -> None:
        self.url, self.hub, self.verdicts = asyncpg_url(database_url), hub, verdicts
        self.origin = secrets.token_hex(8)
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(MAX_QUEUE)
        self.dropped = 0  # events not shared: queue full, or too big for a NOTIFY
        self.owners: dict[str, str] = {}  # call id -> origin, for the other processes' calls
        self.heard: dict[str, float] = {}  # origin -> when we last heard from it (monotonic)
        self.connected = asyncio.Event()
        self._task: asyncio.Task | None = None

    # --- this process's side ----------------------------------------------------------------------------

    def start(self) -> None:
        self.hub.relay = self.share
        if self.verdicts is not None:
            self.verdicts.relay = self.share_verdict
        self._task = asyncio.create_task(self._run(), name="live-bus")

    async def aclose(self) -> None:
        self.hub.relay = None
        if self.verdicts is not None:
            self.verdicts.relay = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def share(self, event: dict[str, Any]) -> None:
        """One event of this process's calls (LiveHub.relay): never waits."""
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1

    def share_verdict(self, call_id: str, answered_by: str) -> None:
        """A carrier posted this process a machine detection verdict: the call may be another's."""
        self.share({"type": "verdict", "call_id": call_id[:200], "answered_by": answered_by[:32]})

    async def _run(self) -> None:
        import asyncpg

        while True:
            connection = None
            try:
                connection = await asyncpg.connect(self.url)
                await connection.add_listener(CHANNEL, self._heard)
                self.connected.set()
                await self._send(connection, {"type": "hello"})
                await self._pump(connection)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("live view: PostgreSQL LISTEN/NOTIFY connection failed (%s); retrying in %.0f s",
                            exc, RETRY_S)
            finally:
                self.connected.clear()
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(connection.close(), 2)
            await asyncio.sleep(RETRY_S)

    async def _pump(self, connection: Any) -> None:
        next_beat = time.monotonic() + HEARTBEAT_S
        while not connection.is_closed():
            try:
                event = await asyncio.wait_for(self.queue.get(), max(0.0, next_beat - time.monotonic()))
            except TimeoutError:
                await self._send(connection, {"type": "alive"})
                self._forget_silent()
                next_beat = time.monotonic() + HEARTBEAT_S
                continue
            await self._send(connection, event)

    async def _send(self, connection: Any, event: dict[str, Any]) -> None:
        payload = fit({"origin": self.origin, "event": event})
        if payload is None:
            self.dropped += 1
            log.warning("live view: an event of %d bytes is too big to share", len(json.dumps(event)))
            return
        await connection.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)

    # --- the other processes' side ------------------------------------------------------------------------

    def _heard(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        try:
            message = json.loads(payload)
            origin, event = message["origin"], message["event"]
        except (ValueError, KeyError, TypeError):
            log.warning("live view: a malformed message on %s", channel)
            return
        if origin == self.origin:
            return
        self.heard[origin] = time.monotonic()
        kind = event.get("type")
        if kind == "hello":
            self._announce()
        elif kind == "call_started":
            self.owners[event["call"]["id"]] = origin
            self.hub.apply(event)
        elif kind == "call_ended":
            self.owners.pop(event.get("call_id"), None)
            self.hub.apply(event)
        elif kind == "turn":
            self.hub.apply(event)
        elif kind == "verdict" and self.verdicts is not None:
            call_id, answered_by = event.get("call_id"), event.get("answered_by")
            if isinstance(call_id, str) and isinstance(answered_by, str):
                self.verdicts.record(call_id, answered_by, shared=True)

    def _announce(self) -> None:
        """A process joined: tell it about our active calls, with their turns so far."""
        for call_id, call in list(self.hub.calls.items()):
            if call_id not in self.owners:
                self.share({"type": "call_started", "call": call})

    def _forget_silent(self) -> None:
        now = time.monotonic()
        gone = {origin for origin, at in self.heard.items() if now - at > FORGET_AFTER_S}
        for call_id, origin in list(self.owners.items()):
            if origin in gone:
                log.warning("live view: process %s went silent: dropping its call %s from the view", origin,
                            call_id)
                self.owners.pop(call_id)
                self.hub.apply({"type": "call_ended", "call_id": call_id, "summary": {}})
        for origin in gone:
            self.heard.pop(origin)
