"""`ReceiveDeadline`: give up on a connection that sent nothing for a while, at no cost per message.

`asyncio.timeout` around every receive arms and cancels a timer per message: at 50 frames a second per
call that was a tenth of a loaded server's CPU. Here one timer per connection is armed for the deadline
and, when it fires, moved to the latest message's deadline if one came meanwhile; a message only stamps
the time it arrived.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

BUSY_RECHECK_S = 0.1  # the deadline passed while a message was being handled: look again this soon


class ReceiveDeadline:
    """`receive(get)` raises TimeoutError once `wait_s` passed since the last message (or since the
    start) with the task waiting in it. Only the waiting is cut short: a message being handled when the
    deadline passes is not interrupted. Create it inside the task that receives; `close()` when done."""

    def __init__(self, wait_s: float) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None, "ReceiveDeadline needs a task"
        self._task = task
        self._wait_s = wait_s
        self._last = self._loop.time()
        self._waiting = False
        self._expired = False
        self._handle: asyncio.TimerHandle | None = self._loop.call_at(self._last + wait_s, self._check)

    @property
    def wait_s(self) -> float:
        return self._wait_s

    @wait_s.setter
    def wait_s(self, wait_s: float) -> None:
        """A new allowance, counted from the last message (an earlier deadline re-arms the timer)."""
        if wait_s == self._wait_s:
            return
        shorter = wait_s < self._wait_s
        self._wait_s = wait_s
        if shorter and self._handle is not None:
            self._handle.cancel()
            self._handle = self._loop.call_at(self._last + wait_s, self._check)

    async def receive(self, get: Callable[[], Awaitable[T]]) -> T:
        cancelling = self._task.cancelling()
        self._waiting = True
        try:
            message = await get()
        except asyncio.CancelledError:
            if self._expired and self._task.uncancel() <= cancelling:
                self._expired = False
                raise TimeoutError from None
            raise
        finally:
            self._waiting = False
        self._last = self._loop.time()
        return message

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        now, deadline = self._loop.time(), self._last + self._wait_s
        if now < deadline:  # a message came since the timer was armed
            self._handle = self._loop.call_at(deadline, self._check)
        elif not self._waiting:  # handling a message that came just now, or a slow one: not idle
            self._handle = self._loop.call_at(now + BUSY_RECHECK_S, self._check)
        else:
            self._handle = None
            self._expired = True
            self._task.cancel()
