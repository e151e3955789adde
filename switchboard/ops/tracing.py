"""OpenTelemetry traces: a span per call, a span per turn, and the turn's stages as its child spans.

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set (then spans go out over OTLP/HTTP, batched, from a
background thread; `OTEL_SERVICE_NAME` and the other standard `OTEL_*` variables apply). Off, nothing
is imported and nothing is recorded.

Spans are built from what a turn records anyway (`TurnMetrics`: monotonic clock readings, vendors,
tokens, outcome), when the turn finishes, with their real start and end times: nothing is timed twice and
nothing runs on the audio path. Each turn's children are the stages as the latency table measures them:
`endpointing` (the caller's speech end → the turn committed), `stt` (the request), `llm` (request → first
token, with a `first_token` event), `tts` (first chunk → first byte) and `playout` (first audio sent →
the turn done). Every span carries `switchboard.call_id`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from switchboard.core.metrics import TurnMetrics

log = logging.getLogger("switchboard.ops")

ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
CALL_ID = "switchboard.call_id"


def epoch_clock() -> Callable[[float], int]:
    """`time.monotonic()` readings as epoch nanoseconds (what spans carry), all with one offset, so the
    spans of a turn keep the order and gaps of its readings exactly."""
    offset = time.time_ns() - time.monotonic_ns()
    return lambda monotonic: offset + int(monotonic * 1e9)


class Tracing:
    def __init__(self, provider: Any | None = None) -> None:
        """`provider`: an SDK TracerProvider (tests); None: OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set."""
        if provider is None and os.environ.get(ENDPOINT_ENV):
            provider = _otlp_provider()
        self.provider = provider
        self.tracer = provider.get_tracer("switchboard") if provider is not None else None
        self.calls: dict[str, Any] = {}  # call id -> its open span

    @property
    def enabled(self) -> bool:
        return self.tracer is not None

    def call_started(self, call_id: str, carrier: str, pipeline: str) -> None:
        if self.tracer is None:
            return
        self.calls[call_id] = self.tracer.start_span(
            "call", attributes={CALL_ID: call_id, "switchboard.carrier": carrier,
                                "switchboard.pipeline": pipeline})

    def call_ended(self, call_id: str, outcome: str, turns: int) -> None:
        span = self.calls.pop(call_id, None)
        if span is not None:
            span.set_attribute("switchboard.outcome", outcome)
            span.set_attribute("switchboard.turns", turns)
            span.end()

    def turn(self, turn: TurnMetrics) -> None:
        if self.tracer is None:
            return
        try:
            self._turn(turn)
        except Exception:  # never into the call
            log.exception("tracing: could not record turn %s of call %s", turn.index, turn.call_id)

    def _turn(self, turn: TurnMetrics) -> None:
        from opentelemetry import trace

        assert self.tracer is not None
        _ns = epoch_clock()
        call = self.calls.get(turn.call_id)
        context = trace.set_span_in_context(call) if call is not None else None
        readings = [r for r in (turn.speech_start, turn.speech_end, turn.stt_start, turn.endpoint,
                                turn.first_chunk) if r is not None]
        end = turn.turn_done if turn.turn_done is not None else time.monotonic()
        start = min(readings) if readings else end
        attributes = {CALL_ID: turn.call_id, "switchboard.turn.index": turn.index,
                      "switchboard.turn.kind": turn.kind, "switchboard.turn.interrupted": turn.interrupted,
                      "switchboard.turn.ended_call": turn.ended_call,
                      **{f"switchboard.{stage}.vendor": name for stage, name in turn.vendors.items()}}
        optional = {"switchboard.turn.error": turn.error, "switchboard.variant": turn.variant,
                    "switchboard.llm.tokens_in": turn.tokens_in,
                    "switchboard.llm.tokens_out": turn.tokens_out,
                    "switchboard.voice_to_voice_ms": turn.voice_to_voice_ms}
        attributes.update({key: value for key, value in optional.items() if value is not None})
        span = self.tracer.start_span("turn", context=context, start_time=_ns(start), attributes=attributes)
        if turn.error is not None:
            span.set_status(trace.Status(trace.StatusCode.ERROR, turn.error))
        inside = trace.set_span_in_context(span)
        llm_from = turn.stt_done if turn.stt_done is not None else turn.endpoint
        stages = (("endpointing", turn.speech_end, turn.endpoint, None),
                  ("stt", turn.stt_start, turn.stt_done, "stt"),
                  ("llm", llm_from, turn.llm_first_token, "llm"),
                  ("tts", turn.first_chunk, turn.tts_first_byte, "tts"),
                  ("playout", turn.first_audio_sent, turn.turn_done, None))
        for name, begin, finish, stage in stages:
            if begin is None or finish is None or finish < begin:
                continue
            vendor = {"switchboard.vendor": turn.vendors.get(stage, "")} if stage else {}
            child = self.tracer.start_span(name, context=inside, start_time=_ns(begin),
                                           attributes={CALL_ID: turn.call_id, **vendor})
            if name == "llm":
                child.add_event("first_token", timestamp=_ns(finish))
            child.end(end_time=_ns(finish))
        span.end(end_time=_ns(end))

    def shutdown(self) -> None:
        """End the calls still open and flush the batch (blocking: call it off the event loop)."""
        for call_id in list(self.calls):
            self.call_ended(call_id, "server_stopped", 0)
        if self.provider is not None:
            self.provider.shutdown()  # flushes the batch


def _otlp_provider() -> Any:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES apply; otherwise the service is "switchboard"
    named = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": "switchboard"}
    provider = TracerProvider(resource=Resource.create(named))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # reads the OTEL_* variables
    log.info("tracing: OpenTelemetry spans to %s", os.environ.get(ENDPOINT_ENV))
    return provider
