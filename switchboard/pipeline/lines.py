"""Fixed lines from memory: a line that is the same on every call is synthesised once per voice and kept.

A greeting no context webhook personalises, the apology, the unheard reply, idle reminders and goodbyes,
the time-limit, drain and busy messages, the transfer lines, the tool filler: none of them depends on the
call, so asking the TTS for them on every call only adds its latency (and its stalls) to the moments a
caller is most likely to hang up. `LineCache` keeps each such line as 8 kHz audio, per voice (the TTS
chain's primary provider) and text, in one process-wide, byte-bounded LRU.

- A line not in memory is synthesised by one *fill*: a background task running the stage's failover
  (timeouts, retry, fallbacks, hedging) that every call wanting the same line meanwhile reads from as it
  streams in; a call that hangs up does not cancel it. The first reader's turn records its failures.
- Only audio in the primary's voice is kept: a line a fallback voice had to say is played once and asked
  for again next time, so one bad moment of the vendor doesn't leave every later call on the backup voice.
- Cloud voices fill lazily, at the first call that needs a line (start-up asks no vendor: no key is spent,
  no vendor outage fails or slows a start), and every later call shares it. An embedded voice that
  declares `warm_lines` (Piper) says each pipeline's greeting into memory at start-up, in the background
  (`CallHost.warm`), so even the first caller hears it from memory; its other fixed lines fill at their
  first use (warming them all would hold Piper's one worker for seconds as the first calls come in).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

import numpy as np

from switchboard.audio.resample import StreamResampler
from switchboard.config import PipelineConfig
from switchboard.config.tools import PLACEHOLDER
from switchboard.core.errors import ProviderError
from switchboard.core.metrics import TurnMetrics
from switchboard.core.protocols import TTS
from switchboard.pipeline import failover
from switchboard.pipeline.hedging import Hedging
from switchboard.pipeline.text import speakable

log = logging.getLogger("switchboard.lines")

MAX_BYTES = 16 * 2**20  # ≈ 17 minutes of 8 kHz audio per process; least recently played lines go first
LINE_RATE = 8000


def greeting_is_fixed(config: PipelineConfig) -> bool:
    """The greeting is the same on every call: no context webhook fills placeholders in it."""
    return config.context_webhook is None or not PLACEHOLDER.search(config.greeting)


@dataclass(eq=False)
class _Fill:
    """One line being synthesised: the 8 kHz pieces so far, read by every call that wants the line."""

    pieces: list[np.ndarray] = field(default_factory=list)
    done: bool = False
    error: BaseException | None = None
    served_by: TTS | None = None  # the TTS that spoke it
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    task: asyncio.Task[None] | None = None

    async def read(self) -> AsyncIterator[np.ndarray]:
        at = 0
        while True:
            while at < len(self.pieces):
                at += 1
                yield self.pieces[at - 1]
            if self.done:
                if self.error is not None:
                    raise self.error
                return
            async with self.changed:
                await self.changed.wait_for(lambda seen=at: self.done or len(self.pieces) > seen)


class LineCache:
    """Fixed lines as 8 kHz audio per (primary TTS, text), bounded to `max_bytes` (LRU)."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._kept: collections.OrderedDict[tuple[int, str], tuple[TTS, np.ndarray]]
        self._kept = collections.OrderedDict()
        self._fills: dict[tuple[int, str], _Fill] = {}
        self.bytes = 0
        self.hits = self.fills = 0

    def __contains__(self, key: tuple[TTS, str]) -> bool:
        return (id(key[0]), key[1]) in self._kept

    async def speak(self, chain: list[TTS], text: str, metrics: TurnMetrics,
                    hedging: Hedging | None = None) -> AsyncIterator[np.ndarray]:
        """`text` in `chain`'s voice at 8 kHz: from memory, or from the fill synthesising it."""
        key = (id(chain[0]), text)
        kept = self._kept.get(key)
        if kept is not None:
            self._kept.move_to_end(key)
            self.hits += 1
            metrics.vendors["tts"] = failover.name(chain[0])
            yield kept[1]
            return
        fill = self._fills.get(key)
        if fill is None:
            fill = self._start_fill(key, chain, text, metrics, hedging)
            metrics.tts_chars += len(text)  # this turn's request pays for it
        async for piece in fill.read():
            if fill.served_by is not None:
                metrics.vendors["tts"] = failover.name(fill.served_by)
            yield piece

    async def whole(self, chain: list[TTS], text: str, metrics: TurnMetrics) -> np.ndarray:
        """The whole line at once (the busy line, the warm-up)."""
        pieces = [piece async for piece in self.speak(chain, text, metrics)]
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int16)

    def warm(self, chains: Iterable[list[TTS]], texts: list[str]) -> asyncio.Task[None] | None:
        """Fill `texts` in the background for every primary voice of `chains` that declares `warm_lines`
        (an embedded engine: Piper)."""
        embedded = [chain for chain in chains if chain and getattr(chain[0], "warm_lines", False)]
        texts = [text for text in (speakable(each) for each in texts) if text]
        if not embedded or not texts:
            return None

        async def run() -> None:
            for chain in embedded:
                for text in texts:
                    try:
                        await self.whole(chain, text, TurnMetrics(call_id="-", index=0, kind="warm-up"))
                    except Exception as exc:  # a call asking for it later tries again
                        log.warning("could not synthesise %r at start-up: %s", text, exc)

        return asyncio.create_task(run(), name="warm-lines")

    def _start_fill(self, key: tuple[int, str], chain: list[TTS], text: str, metrics: TurnMetrics,
                    hedging: Hedging | None) -> _Fill:
        fill = _Fill()
        self._fills[key] = fill
        self.fills += 1
        fill.task = asyncio.create_task(self._fill(key, fill, chain, text, metrics, hedging),
                                        name="fill-line")
        return fill

    async def _fill(self, key: tuple[int, str], fill: _Fill, chain: list[TTS], text: str,
                    metrics: TurnMetrics, hedging: Hedging | None) -> None:
        resamplers: dict[int, StreamResampler] = {}
        try:
            async for tts, pcm in failover.synthesize(chain, text, metrics, hedging):
                fill.served_by = tts
                if tts.sample_rate not in resamplers:
                    resamplers[tts.sample_rate] = StreamResampler(tts.sample_rate, LINE_RATE)
                await self._add(fill, resamplers[tts.sample_rate].process(pcm))
            for resampler in resamplers.values():
                await self._add(fill, resampler.flush())
        except asyncio.CancelledError:
            fill.error = ProviderError("lines", "cancelled", "the server is shutting down")
            raise
        except Exception as exc:  # raised to every reader: their turn speaks around it
            fill.error = exc
        finally:
            fill.done = True
            self._fills.pop(key, None)
            async with fill.changed:
                fill.changed.notify_all()
        if fill.served_by is chain[0] and fill.error is None:
            self._keep(key, chain[0], np.concatenate(fill.pieces) if fill.pieces else np.zeros(0, np.int16))

    async def _add(self, fill: _Fill, piece: np.ndarray) -> None:
        if len(piece):
            fill.pieces.append(piece)
            async with fill.changed:
                fill.changed.notify_all()

    def _keep(self, key: tuple[int, str], tts: TTS, audio: np.ndarray) -> None:
        if audio.nbytes > self.max_bytes or not len(audio):
            return
        if key in self._kept:
            self.bytes -= self._kept.pop(key)[1].nbytes
        self._kept[key] = (tts, audio)
        self.bytes += audio.nbytes
        while self.bytes > self.max_bytes:
            _, (_, dropped) = self._kept.popitem(last=False)
            self.bytes -= dropped.nbytes

    async def aclose(self) -> None:
        """Stop the fills still running (shutdown)."""
        tasks = [fill.task for fill in self._fills.values() if fill.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
