"""What every fake vendor server shares: fault injection and a record of what happened.

A fake is a Starlette app (served on 127.0.0.1 with `server.running`) speaking one vendor's real wire
format. Tests steer it through a `Faults` object and read back the requests it got and whether the
client hung up mid-stream.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import JSONResponse, Response, StreamingResponse

QUOTED = re.compile(r'"([^"]+)"')
# a realtime fake's script: words to say, or a tool call (name, arguments[, words said before it])
Reply = str | tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], str]


def next_reply(instructions: str | None, replies: list[Reply], output: str | None = None) -> Reply:
    """What a realtime fake says next: a line quoted in the instructions, as is; else the script's next
    reply (the last one repeats), its `{output}` the latest tool output."""
    quoted = QUOTED.search(instructions or "")
    if quoted:
        return quoted.group(1)
    reply = replies.pop(0) if len(replies) > 1 else (replies[0] if replies else "")
    if isinstance(reply, str) and output is not None:
        reply = reply.replace("{output}", output)
    return reply


@dataclass
class Faults:
    """How the fake misbehaves. Reset between tests by making a new one."""

    first_byte_delay_s: float = 0.0  # before the response starts (status line included)
    event_delay_s: float = 0.0  # between streamed events
    status: int | None = None  # answer every request with this HTTP error instead (e.g. 429, 500)
    fail_times: int | None = None  # with `status`: only the first N requests fail, then normal service
    cut_after_events: int | None = None  # drop the connection after this many streamed events
    # a mix of faults at load (bench/calls.py --faults): request n (1-based) answers `status` (500 when
    # unset) when n is a multiple of `fail_every`; it stalls `stall_s` before its response starts when n
    # is a multiple of `stall_every` or n <= `stall_first`
    fail_every: int | None = None
    stall_every: int | None = None
    stall_first: int = 0
    stall_s: float = 20.0
    # what happened
    requests: list[dict[str, Any]] = field(default_factory=list)  # parsed JSON bodies (or form fields)
    paths: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    disconnects: int = 0  # streams the client closed before the end
    completed: int = 0  # streams sent to the end

    def should_fail(self, n: int | None = None) -> bool:
        """Does request `n` (1-based; default: the one just recorded) fail?"""
        n = len(self.requests) if n is None else n
        if self.fail_every is not None:
            return n % self.fail_every == 0
        if self.status is None:
            return False
        if self.fail_times is None:
            return True
        return n - 1 < self.fail_times


    def delay_s(self, n: int | None = None) -> float:
        """How long request `n` (default: the one just recorded) waits before its response starts."""
        n = len(self.requests) if n is None else n
        if n <= self.stall_first or (self.stall_every is not None and n % self.stall_every == 0):
            return self.stall_s
        return self.first_byte_delay_s


def error_response(status: int, body: dict[str, Any]) -> Response:
    headers = {"retry-after": "0"} if status == 429 else {}
    return JSONResponse(body, status_code=status, headers=headers)


class StreamCut(Exception):
    """Raised inside a fake's stream to drop the connection abruptly (a stream cut midway)."""


def stream(
    faults: Faults,
    events: list[bytes],
    media_type: str = "text/event-stream",
    on_done: Callable[[], None] | None = None,
) -> StreamingResponse:
    """Send pre-encoded chunks with the injected delays; count disconnects; cut when told to."""

    async def body() -> AsyncIterator[bytes]:
        finished = False
        try:
            for n, event in enumerate(events):
                if faults.cut_after_events is not None and n >= faults.cut_after_events:
                    raise StreamCut(f"cut after {n} events")
                if n and faults.event_delay_s:
                    await asyncio.sleep(faults.event_delay_s)
                yield event
            finished = True
            faults.completed += 1
            if on_done:
                on_done()
        except asyncio.CancelledError:
            raise
        finally:
            if not finished and faults.cut_after_events is None:
                faults.disconnects += 1

    return StreamingResponse(body(), media_type=media_type)


def sse(data: Any, event: str | None = None) -> bytes:
    """One Server-Sent Event carrying JSON (or a raw string such as `[DONE]`)."""
    payload = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()
