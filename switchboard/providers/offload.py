"""Running an embedded engine's inference off the event loop, a bounded number at a time.

A neural model's inference (onnxruntime, CTranslate2) releases the GIL, so it runs in a worker thread
while the loop keeps every call's audio moving. One executor per loaded model bounds how many
inferences run at once (each already uses the machine's cores); more wait their turn in its queue.
A cancelled turn does not stop an inference already running: its result is dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class Offload:
    def __init__(self, name: str, workers: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)

    async def run(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)
