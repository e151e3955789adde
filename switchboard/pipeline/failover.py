"""Running one stage against its providers in order: timeouts, one retry, then the next fallback.

The rules, the same for STT, LLM and TTS:
- a provider with `timeouts` (cloud adapters) must produce its first result within `first_token_s`
  and finish within `total_s`; missing either is a retryable `ProviderError(kind="timeout")`;
- a retryable error before the first result is retried once on the same provider;
- any error before the first result moves on to the next provider in the chain;
- an error after the first result has been passed on cannot be undone (the caller may have heard it):
  it is raised, and the turn speaks its apology.
Every failure, recovered or not, is noted on the turn's metrics, with the provider that served.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import numpy as np

from switchboard.core.errors import ProviderError
from switchboard.core.messages import LLMEvent, Message, Tool, Transcript
from switchboard.core.metrics import TurnMetrics
from switchboard.core.protocols import LLM, STT, TTS

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


async def _stream_stage(
    stage: str,
    chain: list[Any],
    open_stream: Callable[[Any], AsyncIterator[T]],
    metrics: TurnMetrics,
) -> AsyncIterator[tuple[Any, T]]:
    """Yield (provider, item) from the first provider in `chain` that gets going."""
    last_error: ProviderError | None = None
    for provider in chain:
        for attempt in (1, 2):
            started = False
            try:
                async for item in _timed_stream(provider, open_stream(provider)):
                    if not started:
                        started = True
                        metrics.vendors[stage] = name(provider)
                    yield provider, item
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = _as_provider_error(provider, exc)
                _note_failure(metrics, stage, provider, error, attempt)
                if started:
                    raise error from exc
                last_error = error
                if not error.retryable:
                    break
    assert last_error is not None
    raise last_error


async def transcribe(
    chain: list[STT], pcm_for: Callable[[int], np.ndarray], metrics: TurnMetrics
) -> Transcript:
    """The first transcript any STT in the chain gives. `pcm_for(rate)` is the utterance at that rate."""

    async def one(stt: STT) -> AsyncIterator[Transcript]:
        yield await stt.transcribe(pcm_for(stt.sample_rate))

    async with contextlib.aclosing(_stream_stage("stt", chain, one, metrics)) as results:
        async for _, transcript in results:
            return transcript
    raise AssertionError("unreachable: _stream_stage yields or raises")


def stream_reply(
    chain: list[LLM], messages: list[Message], tools: list[Tool], metrics: TurnMetrics
) -> AsyncIterator[tuple[LLM, LLMEvent]]:
    return _stream_stage("llm", chain, lambda llm: llm.stream(messages, tools), metrics)


def synthesize(chain: list[TTS], text: str, metrics: TurnMetrics) -> AsyncIterator[tuple[TTS, np.ndarray]]:
    """(tts, pcm at tts.sample_rate) chunks: a fallback TTS may speak at another rate."""
    return _stream_stage("tts", chain, lambda tts: tts.stream(text), metrics)
