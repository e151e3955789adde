"""`switchboard demo`'s booking service: the small HTTP endpoint the bundled pipeline's `book_table` tool
calls, served on 127.0.0.1 for the demo's duration, so the demo shows a tool call end to end offline.

The bundled pipeline.yaml reads the tool's URL from `SWITCHBOARD_BOOKINGS_URL` (its default points at
nothing, so `switchboard serve` with the bundled file still runs: a booking then gets the rule's `failed`
line). The demo starts this service and sets the variable while its call runs. A booking is a POST of
`{party_size, time}` (strings: the recogniser writes "four" or "4"); the answer is the booking with a
reference and a sentence the bot can say (`summary`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

BOOKINGS_ENV = "SWITCHBOARD_BOOKINGS_URL"
FIRST_REFERENCE = 1042


@dataclass
class Bookings:
    """The service's state: the bookings made, in order."""

    made: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    on_booking: Callable[[dict[str, Any]], None] | None = None

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/bookings", self._book, methods=["POST"])])

    async def _book(self, request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "the body must be JSON"}, status_code=400)
        if not isinstance(body, dict) or not str(body.get("party_size") or "").strip():
            return JSONResponse({"error": "party_size is required"}, status_code=422)
        party, time = str(body["party_size"]).strip(), str(body.get("time") or "").strip()
        booking = {
            "reference": str(FIRST_REFERENCE + len(self.made)),
            "party_size": party,
            "time": time or "this evening",
            "summary": f"a table for {party} at {time}" if time else f"a table for {party} this evening",
        }
        self.made.append(booking)
        if self.on_booking is not None:
            self.on_booking(booking)
        return JSONResponse({"status": "confirmed", "booking": booking})


@contextlib.asynccontextmanager
async def booking_service(on_booking: Callable[[dict[str, Any]], None] | None = None
                          ) -> AsyncIterator[Bookings]:
    """Serve the booking service on a free port of 127.0.0.1, with SWITCHBOARD_BOOKINGS_URL pointing at
    it while it runs."""
    from switchboard.server import running

    bookings = Bookings(on_booking=on_booking)
    async with running(bookings.app()) as port:
        bookings.url = f"http://127.0.0.1:{port}/bookings"
        with _env(BOOKINGS_ENV, bookings.url):
            yield bookings


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before
