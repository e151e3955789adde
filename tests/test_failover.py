"""Timeouts, one retry, and fallbacks in order (pipeline/failover.py), with providers that misbehave."""

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from switchboard.core.errors import ProviderError
from switchboard.core.messages import Message, TextDelta, Transcript
from switchboard.core.metrics import TurnMetrics
from switchboard.core.settings import Timeouts
from switchboard.pipeline import failover


class FlakySTT:
    sample_rate = 16000
    wideband = False
    timeouts = None

    def __init__(self, name: str, errors: list[ProviderError | None]) -> None:
        self.vendor, self.model = name, "m"
        self.errors = errors  # one per call; None = succeed
        self.calls = 0

    async def transcribe(self, pcm: np.ndarray) -> Transcript:
        error = self.errors[min(self.calls, len(self.errors) - 1)]
        self.calls += 1
        if error:
            raise error
        return Transcript(f"{self.vendor} heard {len(pcm)} samples")


class SlowLLM:
    """Waits `first_token_s` before its first word; counts streams closed before their end."""

    def __init__(
        self,
        name: str,
        first_token_s: float,
        words: list[str],
        fail_after: int | None = None,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.vendor, self.model = name, "m"
        self.first_token_s, self.words, self.fail_after = first_token_s, words, fail_after
        self.timeouts = timeouts
        self.opened = self.closed_early = 0

    async def stream(self, messages, tools) -> AsyncIterator[TextDelta]:
        self.opened += 1
        done = False
        try:
            await asyncio.sleep(self.first_token_s)
            for n, word in enumerate(self.words):
                if self.fail_after is not None and n == self.fail_after:
                    raise ProviderError(self.vendor, "connection", "stream cut", retryable=True)
                yield TextDelta(word)
            done = True
        finally:
            self.closed_early += not done


class RateTTS:
    timeouts = None

    def __init__(self, name: str, sample_rate: int, error: ProviderError | None = None) -> None:
        self.vendor, self.model, self.sample_rate, self.error = name, "m", sample_rate, error

    async def stream(self, text: str) -> AsyncIterator[np.ndarray]:
        if self.error:
            raise self.error
        yield np.zeros(self.sample_rate // 10, dtype=np.int16)


def turn() -> TurnMetrics:
    return TurnMetrics(call_id="CA1", index=1)


def pcm_for(stt: FlakySTT) -> np.ndarray:
    return np.zeros(stt.sample_rate, dtype=np.int16)  # one second at its rate


async def test_retryable_stt_error_is_retried_once_then_the_fallback_serves():
    busy = ProviderError("primary", "rate_limit", "429", retryable=True)
    primary, backup = FlakySTT("primary", [busy]), FlakySTT("backup", [None])
    metrics = turn()
    transcript = await failover.transcribe([primary, backup], pcm_for, metrics)
    assert transcript.text == "backup heard 16000 samples"
    assert primary.calls == 2 and backup.calls == 1
    assert metrics.vendors["stt"] == "backup/m"
    assert len(metrics.failures) == 2 and "rate_limit" in metrics.failures[0]


async def test_retry_that_succeeds_stays_on_the_primary():
    blip = ProviderError("primary", "server", "500", retryable=True)
    primary, backup = FlakySTT("primary", [blip, None]), FlakySTT("backup", [None])
    metrics = turn()
    assert (await failover.transcribe([primary, backup], pcm_for, metrics)).text.startswith("primary")
    assert backup.calls == 0 and metrics.vendors["stt"] == "primary/m"


async def test_non_retryable_error_goes_straight_to_the_fallback():
    denied = ProviderError("primary", "auth", "401")
    primary, backup = FlakySTT("primary", [denied]), FlakySTT("backup", [None])
    await failover.transcribe([primary, backup], pcm_for, turn())
    assert primary.calls == 1 and backup.calls == 1


async def test_all_failing_raises_the_last_error():
    primary = FlakySTT("primary", [ProviderError("primary", "auth", "401")])
    backup = FlakySTT("backup", [ProviderError("backup", "server", "500", retryable=True)])
    with pytest.raises(ProviderError, match="backup"):
        await failover.transcribe([primary, backup], pcm_for, turn())


async def collect(stream) -> list:
    return [item async for item in stream]


async def test_first_token_timeout_closes_the_slow_stream_and_falls_back():
    slow = SlowLLM("slow", 5.0, ["never"], timeouts=Timeouts(first_token_s=0.1))
    fast = SlowLLM("fast", 0.0, ["Hello", " there."])
    metrics = turn()
    events = await collect(failover.stream_reply([slow, fast], [Message("user", "hi")], [], metrics))
    assert [e.text for _, e in events] == ["Hello", " there."]
    assert slow.opened == 2 and slow.closed_early == 2  # timed out, retried once, both streams closed
    assert metrics.vendors["llm"] == "fast/m"
    assert "no first result within 0.1 s" in metrics.failures[0]


async def test_total_timeout_after_the_first_token_is_not_failed_over():
    class Dribble(SlowLLM):
        async def stream(self, messages, tools):
            yield TextDelta("One.")
            await asyncio.sleep(5)
            yield TextDelta("Two.")

    dribble = Dribble("dribble", 0, [], timeouts=Timeouts(first_token_s=1, total_s=0.2))
    backup = SlowLLM("backup", 0, ["unused"])
    got = []
    with pytest.raises(ProviderError, match=r"not done within 0\.2 s"):
        async for _, event in failover.stream_reply([dribble, backup], [], [], turn()):
            got.append(event.text)
    assert got == ["One."] and backup.opened == 0  # the caller may have heard "One.": no switch


async def test_stream_cut_after_the_first_token_is_raised_not_retried():
    cut = SlowLLM("cut", 0, ["A", "B", "C"], fail_after=2)
    with pytest.raises(ProviderError, match="stream cut"):
        await collect(failover.stream_reply([cut], [], [], turn()))
    assert cut.opened == 1


async def test_cancelling_the_consumer_closes_the_vendor_stream():
    slow = SlowLLM("slow", 5.0, ["never"])
    task = asyncio.create_task(collect(failover.stream_reply([slow], [], [], turn())))
    async with asyncio.timeout(5):  # until the vendor stream is open, then cancel its consumer
        while not slow.opened:  # noqa: ASYNC110 (the fake's counter, no event to wait on)
            await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert slow.closed_early == 1


async def test_tts_fallback_may_speak_at_another_rate():
    broken = RateTTS("openai", 24000, ProviderError("openai", "server", "500", retryable=True))
    local = RateTTS("espeak", 22050)
    chunks = await collect(failover.synthesize([broken, local], "Hello.", turn()))
    assert [(tts.sample_rate, len(pcm)) for tts, pcm in chunks] == [(22050, 2205)]
