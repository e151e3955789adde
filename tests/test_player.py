"""The outbound player (pipeline/player.py): pacing, marks, clear and pause, as the carrier sees them."""

from __future__ import annotations

import asyncio
import types

import numpy as np
import pytest

from switchboard.pipeline import player as player_module
from switchboard.pipeline.player import FRAMES_PER_MESSAGE, Player


class Link:
    """A carrier link that records what went out: each message's 20 ms frames, one by one."""

    def __init__(self) -> None:
        self.wire: list[object] = []  # frames (as arrays), ("mark", name), "clear"
        self.messages: list[int] = []  # the frames each audio message carried

    async def send_audio(self, pcm: np.ndarray) -> None:
        assert len(pcm) and len(pcm) % 160 == 0, "a whole number of 20 ms frames"
        self.messages.append(len(pcm) // 160)
        self.wire.extend(pcm[at:at + 160].copy() for at in range(0, len(pcm), 160))

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
    assert len(before) - first_resent <= 100 // 20 + FRAMES_PER_MESSAGE + 1  # ...and no more than that
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



class SimTime:
    """The player's clock and pacing sleep, simulated: time moves only when the test says."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 100.0
        self._sleeping: list[tuple[float, asyncio.Future[None]]] = []
        monkeypatch.setattr(player_module, "time", self)
        paced = types.SimpleNamespace(**{**vars(asyncio), "sleep": self.sleep})
        monkeypatch.setattr(player_module, "asyncio", paced)

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        self._sleeping.append((self.now + seconds, future))
        await future

    async def run_until(self, until: float) -> None:
        """Let the sender run, waking its sleeps in order, up to simulated time `until`."""
        for _ in range(5):
            await asyncio.sleep(0)
        while self._sleeping and min(at for at, _ in self._sleeping) <= until:
            at, future = min(self._sleeping, key=lambda item: item[0])
            self._sleeping.remove((at, future))
            self.now = at
            future.set_result(None)
            for _ in range(5):
                await asyncio.sleep(0)
        self.now = until


async def test_messages_of_several_frames_keep_marks_and_a_pause_inside_one_resends_from_the_unheard_frame(
        monkeypatch: pytest.MonkeyPatch):
    """Several frames a message: frames and marks reach the carrier in order, no message runs past a mark,
    and a pause that cuts a message after its first frame played resends from the first frame the caller
    did not hear (not from the message's start, not after it)."""
    clock = SimTime(monkeypatch)
    link = Link()
    player = Player(link, lead_ms=0)  # nothing ahead: a message goes when the one before has played
    player.start()
    audio = np.arange(160 * 10, dtype=np.int16)  # each frame distinct
    player.enqueue(audio[: 160 * 4])
    mark = player.enqueue_mark()
    player.enqueue(audio[160 * 4:])
    start = clock.now
    await clock.run_until(start + 0.070)  # frames 0-2 (0-60 ms), then frame 3 (60-80 ms) and its mark
    assert link.messages == [3, 1] and link.wire[4] == ("mark", mark)
    assert player.plays_out_at(mark) == pytest.approx(start + 0.080)
    player.on_mark(mark)
    assert player.heard(mark)
    await clock.run_until(start + 0.100)  # frames 4-6 went at 80 ms; frame 4 has played (80-100 ms)
    assert link.messages == [3, 1, 3]
    await player.pause()
    assert player.paused and link.wire[-1] == "clear"
    player.resume()
    await clock.run_until(start + 0.300)
    clear_at = next(n for n, item in enumerate(link.wire) if isinstance(item, str))
    sent = [int(item[0]) // 160 for item in link.wire if isinstance(item, np.ndarray)]
    after = [int(item[0]) // 160 for item in link.wire[clear_at + 1:] if isinstance(item, np.ndarray)]
    assert sent[:7] == list(range(7))
    assert after == [5, 6, 7, 8, 9]  # frame 4 was heard; 5 and 6 were cut by the pause: sent again
    assert link.messages[3:] == [3, 2]
    await player.close()
