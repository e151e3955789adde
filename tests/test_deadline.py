"""ReceiveDeadline: a connection that sends nothing for its allowance is given up on; one that keeps
sending is not, and a message being handled is never cut short."""

from __future__ import annotations

import asyncio

import pytest

from switchboard.core.deadline import ReceiveDeadline


async def test_a_silent_connection_times_out_and_a_talking_one_does_not() -> None:
    inbox: asyncio.Queue[str] = asyncio.Queue()

    async def talk() -> None:
        for n in range(8):
            await asyncio.sleep(0.1)
            inbox.put_nowait(f"m{n}")

    talker = asyncio.create_task(talk())
    deadline = ReceiveDeadline(0.5)
    got = [await deadline.receive(inbox.get) for _ in range(8)]  # 0.8 s in all, never 0.5 s apart
    assert got == [f"m{n}" for n in range(8)]
    with pytest.raises(TimeoutError):
        await deadline.receive(inbox.get)
    deadline.close()
    await talker


async def test_handling_a_message_past_the_deadline_is_not_interrupted() -> None:
    inbox: asyncio.Queue[str] = asyncio.Queue()
    inbox.put_nowait("slow")
    deadline = ReceiveDeadline(0.2)
    assert await deadline.receive(inbox.get) == "slow"
    await asyncio.sleep(0.4)  # handling it takes longer than the allowance: not cut short
    inbox.put_nowait("next")
    assert await deadline.receive(inbox.get) == "next"
    deadline.close()


async def test_a_shorter_allowance_applies_from_the_last_message() -> None:
    inbox: asyncio.Queue[str] = asyncio.Queue()

    async def receive() -> str:
        deadline = ReceiveDeadline(60)
        deadline.wait_s = 0.2  # the call started: its (here shorter) allowance replaces the first one
        try:
            return await deadline.receive(inbox.get)
        finally:
            deadline.close()

    task = asyncio.create_task(receive())
    done, _ = await asyncio.wait({task}, timeout=30)  # not the first allowance's 60 s
    assert task in done and isinstance(task.exception(), TimeoutError)


async def test_a_cancellation_from_outside_is_not_taken_for_a_timeout() -> None:
    inbox: asyncio.Queue[str] = asyncio.Queue()

    async def receive() -> str:
        deadline = ReceiveDeadline(60)
        try:
            return await deadline.receive(inbox.get)
        finally:
            deadline.close()

    task = asyncio.create_task(receive())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
