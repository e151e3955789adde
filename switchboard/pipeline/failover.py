"""Running one stage against its providers in order: timeouts, one retry, then the next fallback.

The rules, the same for STT, LLM and TTS:
- a provider with `timeouts` (cloud adapters) must produce its first result within `first_token_s`
  and finish within `total_s`; missing either is a retryable `ProviderError(kind="timeout")`;
- a retryable error before the first result is retried once on the same provider;
- any error before the first result moves on to the next provider in the chain;
- an error after the first result has been passed on cannot be undone (the caller may have heard it):
  it is raised, and the turn speaks its apology;
- a request whose first result is late (pipeline/hedging.py: `hedging.hedge_after_ms`, or twice the
  provider's p95 so far) is hedged: the next cloud provider in the chain, else the same one, is asked
  beside it; whichever gives its first result first is used and the others are cancelled. A hedge that is
  late in turn is hedged once more (a stalled vendor stalls a second request too, now and then), this time
  with the embedded last resort when the chain has one; at most `hedging.MAX_HEDGES` extra requests.
  While hedged, two requests stay in flight: one that fails is replaced by the next in the chain's order.
Every failure, recovered or not, is noted on the turn's metrics, with the provider that served, and
every hedge with its outcome (`TurnMetrics.hedges`: "tts openai/tts-1 -> openai/tts-1: won").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from switchboard.core.errors import ProviderError
from switchboard.core.messages import LLMEvent, Message, Tool, Transcript
from switchboard.core.metrics import TurnMetrics
from switchboard.core.protocols import LLM, STT, TTS
from switchboard.pipeline import hedging
from switchboard.pipeline.hedging import Hedging

log = logging.getLogger("switchboard.failover")

T = TypeVar("T")


def name(provider: Any) -> str:
    return f"{provider.vendor}/{provider.model}"


def _as_provider_error(provider: Any, exc: Exception) -> ProviderError:
    if isinstance(exc, ProviderError):
        return exc
    return ProviderError(provider.vendor, "internal", f"{type(exc).__name__}: {exc}")


def _limits(provider: Any) -> tuple[float | None, float | None]:
    timeouts = provider.timeouts
    return (timeouts.first_token_s, timeouts.total_s) if timeouts is not None else (None, None)


def _note_failure(
    metrics: TurnMetrics, stage: str, provider: Any, error: ProviderError, attempt: int
) -> None:
    metrics.failures.append(f"{stage} {name(provider)} attempt {attempt}: {error.kind}: {error}")
    log.warning(
        "call %s turn %d: %s %s failed (attempt %d): %s",
        metrics.call_id,
        metrics.index,
        stage,
        name(provider),
        attempt,
        error,
    )


async def _timed_stream(provider: Any, stream: AsyncIterator[T]) -> AsyncIterator[T]:
    """`stream` with the provider's first-result and total deadlines; always closed on exit."""
    first_s, total_s = _limits(provider)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + total_s if total_s is not None else None
    started = False
    async with contextlib.aclosing(stream):  # closes the vendor's HTTP stream on cancel or error
        while True:
            waits = [
                w
                for w in (None if started else first_s, deadline - loop.time() if deadline else None)
                if w is not None
            ]
            try:
                async with asyncio.timeout(min(waits) if waits else None):
                    item = await anext(stream)
            except StopAsyncIteration:
                return
            except TimeoutError:
                what = (
                    f"no first result within {first_s} s" if not started else f"not done within {total_s} s"
                )
                raise ProviderError(provider.vendor, "timeout", what, retryable=True) from None
            started = True
            yield item


_NOTHING = object()  # a stream that ended before its first item


async def _first_outcome(stream: AsyncIterator[Any]) -> tuple[Any, Exception | None]:
    """The stream's first item (`_NOTHING`: it ended without one), or the error that came instead."""
    try:
        return await anext(stream), None
    except StopAsyncIteration:
        return _NOTHING, None
    except Exception as exc:
        return None, exc


@dataclass(eq=False)
class _Attempt:
    """One request of the stage: its provider's place in the chain, its stream and, once it has to run
    beside another (it may be hedged), the task awaiting its first item."""

    index: int
    number: int  # 1, 2... on this provider
    provider: Any
    stream: AsyncIterator[Any]
    started_at: float
    first: asyncio.Task[None] | None = None
    outcome: tuple[Any, Exception | None] = (_NOTHING, None)  # its first item, or why it has none

    async def close(self) -> None:
        if self.first is not None:
            self.first.cancel()
            await asyncio.gather(self.first, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.stream.aclose()  # type: ignore[attr-defined]  # closes the vendor's stream


class _Race:
    """The attempts of one stage request: the primary, its retry and fallbacks in order, and up to
    `hedging.MAX_HEDGES` hedges, each beside the newest attempt once it is late (pipeline/hedging.py).
    Whichever attempt gives its first item wins."""

    def __init__(self, stage: str, chain: list[Any], open_stream: Callable[[Any], AsyncIterator[Any]],
                 metrics: TurnMetrics, hedging: Hedging | None) -> None:
        self.stage, self.chain, self.open_stream = stage, chain, open_stream
        self.metrics, self.hedging = metrics, hedging
        self.running: list[_Attempt] = []
        self.latest: tuple[int, int] = (0, 0)  # (index, number) of the attempt started last
        self.hedges: list[tuple[_Attempt, str]] = []  # each hedge and its "stage late -> partner"
        self.settled = False
        self.loop = asyncio.get_running_loop()
        self.answered: list[_Attempt] = []  # attempts running beside others that have their outcome
        self.news: asyncio.Future[None] | None = None  # what winner() waits on while they run

    def start(self, index: int, number: int) -> _Attempt:
        provider = self.chain[index]
        stream = _timed_stream(provider, self.open_stream(provider))
        attempt = _Attempt(index, number, provider, stream, self.loop.time())
        self.running.append(attempt)
        self.latest = (index, number)
        return attempt

    def next_after(self, failed: _Attempt, error: ProviderError) -> tuple[int, int] | None:
        """What to try after `failed`: its retry (a retryable error of the latest attempt's first try), else
        the next provider after the latest attempt's."""
        index, number = self.latest
        if (failed.index, failed.number) == self.latest and number == 1 and error.retryable:
            return index, 2
        return (index + 1, 1) if index + 1 < len(self.chain) else None

    def _newest(self) -> _Attempt | None:
        """The attempt a hedge would go beside: the newest one running (None: no more hedges)."""
        if self.hedging is None or len(self.hedges) >= hedging.MAX_HEDGES or not self.running:
            return None
        newest = max(self.running, key=lambda attempt: attempt.started_at)
        if self.hedges and newest.started_at < self.hedges[-1][0].started_at:
            return None  # the last hedge failed outright: the late request it was beside is not hedged again
        return newest

    def hedge_wait(self) -> float | None:
        """Seconds until the newest running attempt is late (None: it is never hedged)."""
        attempt = self._newest()
        if attempt is None:
            return None
        assert self.hedging is not None
        delay = self.hedging.delay_s(self.stage, attempt.provider)
        if delay is None:  # no figures yet: look again soon, or never
            return hedging.RECHECK_S if self.hedging.learning(self.stage, attempt.provider) else None
        return max(0.0, attempt.started_at + delay - self.loop.time())

    def _late(self) -> _Attempt | None:
        """The newest running attempt, if it is late now (its provider's figures may have come in)."""
        attempt = self._newest()
        if attempt is None:
            return None
        assert self.hedging is not None
        delay = self.hedging.delay_s(self.stage, attempt.provider)
        return attempt if delay is not None and self.loop.time() - attempt.started_at >= delay else None

    def start_hedge(self, late: _Attempt) -> None:
        index = hedging.partner(self.chain, late.index, second=bool(self.hedges))
        number = max(a.number for a in self.running if a.index == index) + 1 if index == late.index else 1
        label = f"{self.stage} {name(late.provider)} -> {name(self.chain[index])}"
        log.warning("call %s turn %d: %s %s has no first result after %.0f ms: hedging with %s",
                    self.metrics.call_id, self.metrics.index, self.stage, name(late.provider),
                    (self.loop.time() - late.started_at) * 1000, name(self.chain[index]))
        self.hedges.append((self.start(index, number), label))

    async def winner(self) -> tuple[_Attempt, Any] | None:
        """The first attempt to give a first item, and that item (None: one ended with none: done)."""
        while True:
            hedge_wait = self.hedge_wait()
            if hedge_wait is None and len(self.running) == 1 and self.running[0].first is None:
                # nothing can run beside it (hedging off, an embedded engine, no hedges left): awaited
                # here, with no task to start and no wait to wake from, each a turn of a busy event loop
                attempt = self.running[0]
                attempt.outcome = await _first_outcome(attempt.stream)
                answered = [attempt]
            else:
                for attempt in self.running:
                    if attempt.first is None:
                        attempt.first = asyncio.create_task(self._first(attempt))
                if not self.answered:
                    self.news = self.loop.create_future()
                    try:
                        async with asyncio.timeout(hedge_wait):
                            await self.news
                    except TimeoutError:
                        late = self._late()
                        if late is not None:
                            self.start_hedge(late)
                        continue
                answered, self.answered = self.answered, []
            for attempt in answered:
                if attempt in self.running:
                    item, exc = attempt.outcome
                    if exc is None:
                        return self._ended_first(attempt, item)
                    await self._failed(attempt, exc)

    async def _first(self, attempt: _Attempt) -> None:
        """Await `attempt`'s first item beside the others, and tell winner() (its own future, set from
        here: one turn of the event loop to wake it, where a wait on the tasks takes two)."""
        attempt.outcome = await _first_outcome(attempt.stream)
        self.answered.append(attempt)
        if self.news is not None and not self.news.done():
            self.news.set_result(None)

    def _ended_first(self, attempt: _Attempt, item: Any) -> tuple[_Attempt, Any] | None:
        """`attempt` won: it gave its first `item` (`_NOTHING`: it ended without one)."""
        self.running.remove(attempt)
        self._won(attempt)
        return None if item is _NOTHING else (attempt, item)

    async def _failed(self, attempt: _Attempt, exc: Exception) -> None:
        """`attempt` failed before its first item: noted, and the next one started (raised: none left)."""
        self.running.remove(attempt)
        await attempt.close()
        error = _as_provider_error(attempt.provider, exc)
        _note_failure(self.metrics, self.stage, attempt.provider, error, attempt.number)
        # a hedged request keeps two going; otherwise one at a time, in the chain's order
        if len(self.running) < (2 if self.hedges else 1):
            following = self.next_after(attempt, error)
            if following is not None:
                self.start(*following)
        if not self.running:
            self._settle(lambda _: "failed")
            raise error

    def _won(self, attempt: _Attempt) -> None:
        self.metrics.vendors[self.stage] = name(attempt.provider)
        if self.hedging is not None:
            self.hedging.record(attempt.provider, self.loop.time() - attempt.started_at)
        self._settle(lambda hedge: "won" if hedge is attempt else "lost")

    def _settle(self, outcome: Callable[[_Attempt], str]) -> None:
        """Each hedge's outcome on the turn: won (that hedge answered first), lost (another request did),
        failed (none did) or cancelled."""
        if self.settled:
            return
        self.settled = True
        self.metrics.hedges.extend(f"{label}: {outcome(hedge)}" for hedge, label in self.hedges)

    async def aclose(self) -> None:
        attempts, self.running = self.running, []
        await asyncio.gather(*(attempt.close() for attempt in attempts))
        self._settle(lambda _: "cancelled")


async def _stream_stage(
    stage: str,
    chain: list[Any],
    open_stream: Callable[[Any], AsyncIterator[T]],
    metrics: TurnMetrics,
    hedging: Hedging | None = None,
) -> AsyncIterator[tuple[Any, T]]:
    """Yield (provider, item) from the first provider in `chain` that gets going (hedged when late)."""
    race = _Race(stage, chain, open_stream, metrics, hedging)
    race.start(0, 1)
    try:
        won = await race.winner()
    finally:
        await race.aclose()  # the losers, or every attempt when cancelled
    if won is None:
        return
    attempt, first = won
    async with contextlib.aclosing(attempt.stream) as stream:  # type: ignore[type-var]
        try:
            yield attempt.provider, first
            async for item in stream:
                yield attempt.provider, item
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:  # after the first result: can't be undone, the turn apologises
            error = _as_provider_error(attempt.provider, exc)
            _note_failure(metrics, stage, attempt.provider, error, attempt.number)
            raise error from exc


async def transcribe(
    chain: list[STT], pcm_for: Callable[[STT], np.ndarray], metrics: TurnMetrics,
    hedging: Hedging | None = None,
) -> Transcript:
    """The first transcript any STT in the chain gives. `pcm_for(stt)` is the utterance as that STT
    takes it (at its `sample_rate`; wideband or not: pipeline/wideband.py)."""

    async def one(stt: STT) -> AsyncIterator[Transcript]:
        yield await stt.transcribe(pcm_for(stt))

    async with contextlib.aclosing(_stream_stage("stt", chain, one, metrics, hedging)) as results:
        async for _, transcript in results:
            return transcript
    raise AssertionError("unreachable: _stream_stage yields or raises")


def stream_reply(
    chain: list[LLM], messages: list[Message], tools: list[Tool], metrics: TurnMetrics,
    hedging: Hedging | None = None,
) -> AsyncIterator[tuple[LLM, LLMEvent]]:
    return _stream_stage("llm", chain, lambda llm: llm.stream(messages, tools), metrics, hedging)


def synthesize(chain: list[TTS], text: str, metrics: TurnMetrics,
               hedging: Hedging | None = None) -> AsyncIterator[tuple[TTS, np.ndarray]]:
    """(tts, pcm at tts.sample_rate) chunks: a fallback TTS may speak at another rate."""
    return _stream_stage("tts", chain, lambda tts: tts.stream(text), metrics, hedging)
