"""Prometheus metrics (`GET /metrics`): calls, turns, latencies by vendor, failures, loop lag, the store.

Fed like the store and the dashboard: `turn` is chained into `on_turn` (each finished turn's
`TurnMetrics`), `call_started` / `call_ended` come from the server's `CallHost`, refusals from
`Admission.on_refused`, and a sampler task reads the event loop's lag and the call store's queue every
`SAMPLE_S`. Nothing here runs on the audio path but a few counter increments.

With `PROMETHEUS_MULTIPROC_DIR` set (`switchboard serve --workers N` sets it), every worker writes its
values to files there and `/metrics` on any worker answers the sum over all of them (prometheus_client's
multiprocess mode: the directory must be empty at start, gauges count live processes only).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest as render
from starlette.requests import Request
from starlette.responses import Response

from switchboard.core.metrics import HEDGE, TurnMetrics

log = logging.getLogger("switchboard.ops")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SAMPLE_S = 0.25  # how often the loop lag and the store's queue are sampled
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 1.0)
# "stt openai/gpt-4o-transcribe attempt 1: timeout: no first result within 5 s" (pipeline/failover.py)
FAILURE = re.compile(r"^(?P<stage>\w+) (?P<vendor>\S+) attempt \d+: (?P<kind>[\w-]+):")


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def stage_seconds(turn: TurnMetrics) -> dict[str, float]:
    """Each stage's own latency in seconds, where the turn has it: endpointing (the caller's speech end →
    the turn committed), STT (its request), LLM (request → first token), TTS (first chunk → first byte)."""
    llm_from = turn.stt_done if turn.stt_done is not None else turn.endpoint
    spans = {"endpoint": (turn.speech_end, turn.endpoint), "stt": (turn.stt_start, turn.stt_done),
             "llm": (llm_from, turn.llm_first_token), "tts": (turn.first_chunk, turn.tts_first_byte)}
    return {stage: end - start for stage, (start, end) in spans.items()
            if start is not None and end is not None and end >= start}


class Metrics:
    def __init__(self) -> None:
        # per app (tests build many apps in one process); in multiprocess mode the values live in files
        self.registry = CollectorRegistry()
        r = {"registry": self.registry}
        self.active = Gauge("switchboard_calls_active", "Calls in progress in this process",
                            multiprocess_mode="livesum", **r)
        self.started = Counter("switchboard_calls_started_total", "Calls taken", ["carrier", "pipeline"], **r)
        self.ended = Counter("switchboard_calls_ended_total", "Calls ended, by how they ended",
                             ["carrier", "pipeline", "outcome"], **r)
        self.turns = Counter("switchboard_turns_total", "Turns finished, by kind", ["kind"], **r)
        self.turn_errors = Counter("switchboard_turn_errors_total",
                                   "Turns that failed (the caller heard the apology)", **r)
        self.barge_ins = Counter("switchboard_barge_ins_total", "Turns the caller interrupted", **r)
        self.v2v = Histogram("switchboard_voice_to_voice_seconds",
                             "Caller's speech end to the reply's first audio sent, by the turn's vendors",
                             ["stt", "llm", "tts"], buckets=LATENCY_BUCKETS, **r)
        self.stage = Histogram("switchboard_stage_seconds", "Each stage's own latency, by vendor/model",
                               ["stage", "vendor"], buckets=LATENCY_BUCKETS, **r)
        self.failures = Counter("switchboard_provider_failures_total",
                                "Provider failures, recovered or not", ["stage", "vendor", "kind"], **r)
        self.fallbacks = Counter("switchboard_fallbacks_total", "Stages served by a fallback provider",
                                 ["stage", "vendor"], **r)
        self.hedges = Counter("switchboard_hedges_total",
                              "Stalled requests hedged (asked again beside them), by the late vendor and "
                              "outcome: won (the hedge answered first), lost, failed, cancelled",
                              ["stage", "vendor", "outcome"], **r)
        self.refusals = Counter("switchboard_admission_refusals_total", "Calls refused (full or draining)",
                                ["carrier", "where", "reason"], **r)
        self.loop_lag = Histogram("switchboard_event_loop_lag_seconds",
                                  "How late the event loop ran a timer (sampled)", buckets=LAG_BUCKETS, **r)
        self.store_queue = Gauge("switchboard_store_queue_depth", "Call-store records waiting to be written",
                                 multiprocess_mode="livesum", **r)
        self.store_dropped = Counter("switchboard_store_dropped_writes_total",
                                     "Call-store records lost (queue full, refused, unwritten at exit)", **r)
        self._store_dropped_seen = 0
        self._sampler: asyncio.Task | None = None

    # --- fed by the server ---------------------------------------------------------------------------------

    def call_started(self, carrier: str, pipeline: str) -> None:
        self.started.labels(carrier, pipeline).inc()
        self.active.inc()

    def call_ended(self, carrier: str, pipeline: str, outcome: str) -> None:
        self.ended.labels(carrier, pipeline, outcome).inc()
        self.active.dec()

    def refused(self, carrier: str, where: str, reason: str) -> None:
        self.refusals.labels(carrier, where, reason).inc()

    def turn(self, turn: TurnMetrics) -> None:
        self.turns.labels(turn.kind).inc()
        if turn.interrupted:
            self.barge_ins.inc()
        if turn.error is not None:
            self.turn_errors.inc()
        vendors = turn.vendors
        v2v = turn.voice_to_voice_ms
        if v2v is not None and turn.kind == "reply":
            self.v2v.labels(vendors.get("stt", ""), vendors.get("llm", ""), vendors.get("tts", "")).observe(
                v2v / 1000)
        for stage, seconds in stage_seconds(turn).items():
            self.stage.labels(stage, vendors.get(stage, "") if stage != "endpoint" else "").observe(seconds)
        failed: dict[str, set[str]] = {}
        for line in turn.failures:
            match = FAILURE.match(line)
            if match is None:
                continue
            self.failures.labels(match["stage"], match["vendor"], match["kind"]).inc()
            failed.setdefault(match["stage"], set()).add(match["vendor"])
        for line in turn.hedges:
            if (hedge := HEDGE.match(line)) is not None:
                self.hedges.labels(hedge["stage"], hedge["vendor"], hedge["outcome"]).inc()
        for stage, vendors_failed in failed.items():
            served = vendors.get(stage)
            if served and served not in vendors_failed:
                self.fallbacks.labels(stage, served).inc()

    # --- sampled ------------------------------------------------------------------------------------------

    def start(self, store_counts: Callable[[], tuple[int, int]] | None) -> None:
        """Sample the loop's lag and `store_counts()` ((queued, dropped so far)) in the background."""
        if self._sampler is None:
            self._sampler = asyncio.create_task(self._sample(store_counts), name="metrics-sampler")

    async def aclose(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
            self._sampler = None

    async def _sample(self, store_counts: Callable[[], tuple[int, int]] | None) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + SAMPLE_S
            await asyncio.sleep(SAMPLE_S)
            self.loop_lag.observe(max(0.0, loop.time() - due))
            if store_counts is not None:
                self.sample_store(*store_counts())

    def sample_store(self, queued: int, dropped: int) -> None:
        self.store_queue.set(queued)
        if dropped > self._store_dropped_seen:
            self.store_dropped.inc(dropped - self._store_dropped_seen)
            self._store_dropped_seen = dropped

    # --- exposition ---------------------------------------------------------------------------------------

    def exposition(self) -> bytes:
        if multiprocess():
            from prometheus_client import multiprocess as mp

            registry = CollectorRegistry()
            mp.MultiProcessCollector(registry)
            return render(registry)
        return render(self.registry)

    def response(self, request: Request) -> Response:
        return Response(self.exposition(), media_type=CONTENT_TYPE_LATEST)

    @staticmethod
    def process_exited(pid: int) -> None:
        """In multiprocess mode: drop a gone worker's live gauges (its counters stay in the totals)."""
        if multiprocess():
            from prometheus_client import multiprocess as mp

            mp.mark_process_dead(pid)
