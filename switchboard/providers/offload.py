"""Running an embedded engine's inference off the event loop, a bounded number at a time; and cutting an
utterance longer than a recogniser's window into pieces.

A neural model's inference (onnxruntime, CTranslate2) releases the GIL, so it runs in a worker thread
while the loop keeps every call's audio moving. One executor per loaded model bounds how many
inferences run at once (each already uses the machine's cores); more wait their turn in its queue.
A cancelled turn does not stop an inference already running: its result is dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from switchboard.core.errors import ProviderError
from switchboard.core.messages import Transcript

T = TypeVar("T")

log = logging.getLogger("switchboard.providers")


class Offload:
    def __init__(self, name: str, workers: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)

    async def run(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    async def transcribe(self, vendor: str, recognize: Callable[[np.ndarray], str], pcm: np.ndarray,
                         rate: int, window_s: float) -> Transcript:
        """A recogniser's `recognize` (blocking, text of at most `window_s` of audio) over a whole
        utterance, piece by piece in this executor; any failure a ProviderError."""
        try:
            texts = [await self.run(lambda piece=piece: recognize(piece))
                     for piece in windows(pcm, rate, window_s, vendor)]
        except Exception as exc:
            raise ProviderError(vendor, "internal", f"{type(exc).__name__}: {exc}") from exc
        return Transcript(" ".join(text for text in texts if text))


def windows(pcm: np.ndarray, rate: int, window_s: float, engine: str) -> list[np.ndarray]:
    """`pcm` in pieces of at most `window_s` (one piece, and no warning, when it fits)."""
    size = int(window_s * rate)
    if len(pcm) <= size:
        return [pcm]
    log.warning("%s: a %.1f s utterance is longer than the %.0f s window: recognised in %d pieces",
                engine, len(pcm) / rate, window_s, -(-len(pcm) // size))
    return [pcm[start:start + size] for start in range(0, len(pcm), size)]
