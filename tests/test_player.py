"""The outbound player (pipeline/player.py): pacing, marks, clear and pause, as the carrier sees them."""

from __future__ import annotations

import asyncio

import numpy as np

from switchboard.pipeline.player import Player


class Link:
    """A carrier link that records what went out."""

    def __init__(self) -> None:
        self.wire: list[object] = []  # frames (as arrays), ("mark", name), "clear"

    async def send_audio(self, pcm: np.ndarray) -> None:
        self.wire.append(pcm.copy())

    async def send_mark(self, name: str) -> None:
        self.wire.append(("mark", name))

    async def send_clear(self) -> None:
        self.wire.append("clear")

    async def hang_up(self) -> None:
        pass


async def test_pause_then_resume_sends_every_unheard_frame_again_in_order_with_its_mark():
    link = Link()
    player = Player(link, lead_ms=100)
    player.start()
    audio = np.arange(160 * 50, dtype=np.int16)  # 1 s, each frame distinct
    player.enqueue(audio[: 160 * 25])
    mark = player.enqueue_mark()  # after 0.5 s: sent ~0.1 s before it plays
    player.enqueue(audio[160 * 25:])
    await asyncio.sleep(0.45)
    assert [item for item in link.wire if isinstance(item, tuple)] == [("mark", mark)]  # sent, not played
    await player.pause()
    assert player.paused and player.audible and isinstance(link.wire[-1], str)
    before = [item for item in link.wire if isinstance(item, np.ndarray)]
    await asyncio.sleep(0.2)  # nothing goes out while paused
    assert isinstance(link.wire[-1], str)
    player.on_mark(mark)  # the carrier echoes the marks it dropped on clear: not heard
    assert not await player.wait_mark(mark, within_s=0.05)
    player.resume()
    await asyncio.sleep(1.0)
    clear_at = next(n for n, item in enumerate(link.wire) if isinstance(item, str))
    after = link.wire[clear_at + 1:]
    resent = [item for item in after if isinstance(item, tuple)]
    assert len(resent) == 1 and resent[0][1] != mark  # sent again, under a new name
    player.on_mark(resent[0][1])
    assert await player.wait_mark(mark, within_s=0.1)  # ...and its echo counts for the original
    frames = [int(item[0]) // 160 for item in after if isinstance(item, np.ndarray)]
    first_resent = frames[0]
    assert first_resent <= len(before)  # the lead sent ahead (unheard) is sent again
    assert len(before) - first_resent <= 100 // 20 + 2  # ...and no more than that
    assert frames == list(range(first_resent, 50))  # then every frame, in order, once
    mark_at = next(n for n, item in enumerate(after) if isinstance(item, tuple))
    assert mark_at == frames.index(25)  # the mark right after the audio before it
    await player.close()


async def test_a_clear_before_the_sender_wakes_does_not_silence_the_rest_of_the_call():
    """Audio queued, then cleared in the same tick (a keypad entry or a barge-in as the first audio comes),
    before the sender task runs: what is queued next still reaches the caller."""
    link = Link()
    player = Player(link, lead_ms=100)
    player.start()
    await asyncio.sleep(0)  # the sender waits for audio
    player.enqueue(np.ones(160 * 5, dtype=np.int16))  # wakes the sender...
    await player.clear()  # ...which has not run yet
    await asyncio.sleep(0.05)  # it runs now, with nothing left to send
    player.enqueue(np.full(160 * 3, 2, dtype=np.int16))
    mark = player.enqueue_mark()
    await asyncio.sleep(0.2)
    frames = [item for item in link.wire if isinstance(item, np.ndarray)]
    assert [int(frame[0]) for frame in frames] == [2, 2, 2]
    assert link.wire[-1] == ("mark", mark)
    await player.close()


async def test_a_pause_before_the_sender_wakes_sends_nothing_until_resumed():
    link = Link()
    player = Player(link, lead_ms=100)
    player.start()
    await asyncio.sleep(0)
    player.enqueue(np.ones(160 * 3, dtype=np.int16))
    await player.pause()
    await asyncio.sleep(0.1)
    assert not any(isinstance(item, np.ndarray) for item in link.wire)  # paused: nothing goes out
    player.resume()
    await asyncio.sleep(0.1)
    assert len([item for item in link.wire if isinstance(item, np.ndarray)]) == 3
    await player.close()
