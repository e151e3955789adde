"""Hedging a stalled vendor request: when a stage's first result is late, ask again beside it.

A vendor that stalls (no first token, no first audio byte, no transcript) is the common failure in
production, and waiting out `timeouts.first_token_s` costs the caller seconds of silence. A pipeline's
`Hedging` says, per stage and provider, when a request is late enough to hedge:

- `hedging.hedge_after_ms.<stage>` in pipeline.yaml, when set; else
- `FACTOR` × the provider's own p95 first-result latency so far (of its last `WINDOW` answers in this
  process), once it has answered `MIN_SAMPLES` times, and never under `FLOOR_S`. Before that, no hedge
  (a request waiting then looks again every `RECHECK_S`, and is hedged once the figures say it is late).

Only a cloud provider (one with `timeouts`) is hedged: an embedded engine's slowness is our own CPU, and a
second run would only add to it. The hedge goes to the next cloud provider in the chain (a configured
fallback), else to the same provider again; failover.py races the two, takes whichever answers first and
cancels the other. A hedge that is late too is hedged once more, from its own start, and this second hedge
may go to the chain's embedded last resort: under a stalling vendor a second request stalls now and then
(bench/calls.py's fault mix, 40 calls: 3 of 56 hedged turns waited out the whole 5 s first-result timeout
when a request was hedged only once; and a third request to the same vendor stalled as well). With healthy
vendors nothing is late by that much, so hedging sends no extra request.
"""

from __future__ import annotations

import collections
from typing import Any

from switchboard.config.schema import HedgingConfig

FACTOR = 2.0  # late = this many times the provider's p95 first-result latency
FLOOR_S = 0.25  # ... and never less than this (a fast local fake's p95 is a few ms)
MIN_SAMPLES = 20  # answers before its own p95 is trusted
WINDOW = 200  # the last answers it is computed over
RECOMPUTE_EVERY = 10  # answers between recomputing the p95 (a sort of WINDOW floats)
MAX_HEDGES = 2  # extra requests at most for one stage request: a hedge, and a hedge of a late hedge
RECHECK_S = 0.25  # a request waiting while its provider has no figures yet looks again this often


class _Latencies:
    """One provider's recent first-result latencies and their p95."""

    def __init__(self) -> None:
        self.seconds: collections.deque[float] = collections.deque(maxlen=WINDOW)
        self.count = 0
        self.p95: float | None = None

    def add(self, seconds: float) -> None:
        self.seconds.append(seconds)
        self.count += 1
        if self.count >= MIN_SAMPLES and (self.p95 is None or self.count % RECOMPUTE_EVERY == 0):
            ordered = sorted(self.seconds)
            self.p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


class Hedging:
    """A pipeline's hedging policy and its providers' first-result latencies (one per pipeline, per
    process: shared by its calls)."""

    def __init__(self, config: HedgingConfig | None = None) -> None:
        config = config or HedgingConfig()
        self.enabled = config.enabled
        after = config.hedge_after_ms
        self.after_s: dict[str, float | None] = {
            stage: (ms / 1000 if ms is not None else None)
            for stage, ms in (("stt", after.stt), ("llm", after.llm), ("tts", after.tts))}
        self._latencies: dict[int, tuple[Any, _Latencies]] = {}  # id(provider) -> (provider, latencies)

    def delay_s(self, stage: str, provider: Any) -> float | None:
        """How long a request of `provider` may go without its first result before it is hedged; None:
        never (hedging off, an embedded engine, or no configured time and too few answers yet)."""
        if not self.enabled or provider.timeouts is None:
            return None
        configured = self.after_s.get(stage)
        if configured is not None:
            return configured
        entry = self._latencies.get(id(provider))
        p95 = entry[1].p95 if entry is not None else None
        return None if p95 is None else max(FACTOR * p95, FLOOR_S)

    def learning(self, stage: str, provider: Any) -> bool:
        """Would `provider` be hedged once it has its figures (its p95 is not known yet)? Then a request
        already waiting looks again every `RECHECK_S`: in a cold process's first burst of calls, a request
        that stalls before the first 20 answers are in is still hedged once they are."""
        return (self.enabled and provider.timeouts is not None and self.after_s.get(stage) is None
                and self.p95_s(provider) is None)

    def record(self, provider: Any, seconds: float) -> None:
        """`provider` gave its first result `seconds` after the request went out."""
        entry = self._latencies.get(id(provider))
        if entry is None:
            entry = self._latencies[id(provider)] = (provider, _Latencies())  # holds it: ids stay unique
        entry[1].add(seconds)

    def p95_s(self, provider: Any) -> float | None:
        entry = self._latencies.get(id(provider))
        return entry[1].p95 if entry is not None else None


def partner(chain: list[Any], index: int, *, second: bool = False) -> int:
    """Where a late request of `chain[index]` is hedged: the next cloud provider in the chain (a fallback
    the operator chose; not the last-resort embedded engine, which would always win), else itself. The
    `second` hedge (the first one is late too: the vendor is stalling now, not one request) may go to the
    embedded engine: a voice from this machine beats waiting out the cloud's timeout."""
    for later in range(index + 1, len(chain)):
        if second or chain[later].timeouts is not None:
            return later
    return index
