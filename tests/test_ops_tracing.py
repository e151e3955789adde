"""OpenTelemetry traces through the real app: off without OTEL_EXPORTER_OTLP_ENDPOINT; with it, a call's
spans reach an OTLP/HTTP collector (a fake one on 127.0.0.1) in OTLP's protobuf: a call span, turn spans
under it, each turn's stages as children with their vendors and the LLM's first token as an event."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchboard.caller import CallerLine, run_call
from switchboard.config import parse_config
from switchboard.pipeline.call import Providers
from switchboard.server import create_app, running
from tests.fakes.instant import InstantLLM, InstantSTT, InstantTTS

CONFIG = """
pipelines:
  default:
    greeting: "Hi."
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
"""


def an_app():
    providers = Providers(InstantSTT("what time is it"), InstantLLM("It is noon."),
                          InstantTTS(ms_per_char=10))
    return create_app(parse_config(CONFIG), providers={"default": providers})


async def one_call(app, speech_wav: str) -> str:
    async with running(app) as port:
        result = await run_call(f"ws://127.0.0.1:{port}/media-stream", [CallerLine(wav=speech_wav)],
                                hangup_timeout_s=1, on_event=lambda event: None)
        await asyncio.wait_for(app.state.host.wait_idle(), 5)
    return result.call_sid


def test_off_without_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    assert not an_app().state.ops.tracing.enabled


async def test_a_call_is_one_trace_sent_to_the_otlp_collector(speech_wav: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    received: list[ExportTraceServiceRequest] = []

    async def traces(request: Request) -> Response:
        assert request.headers["content-type"] == "application/x-protobuf"
        received.append(ExportTraceServiceRequest.FromString(await request.body()))
        return Response(b"", media_type="application/x-protobuf")

    collector = Starlette(routes=[Route("/v1/traces", traces, methods=["POST"])])
    exporter = InMemorySpanExporter()  # the same spans, as the SDK holds them, to check their shape
    async with running(collector) as collector_port:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{collector_port}")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "switchboard-test")
        app = an_app()
        assert app.state.ops.tracing.enabled
        app.state.ops.tracing.provider.add_span_processor(SimpleSpanProcessor(exporter))
        call_id = await one_call(app, speech_wav)  # the server's shutdown flushes the batch

    # on the wire: OTLP protobuf, every span, our service, the call id on each
    sent = [span for request in received for resource in request.resource_spans
            for scope in resource.scope_spans for span in scope.spans]
    assert sorted({span.name for span in sent}) == ["call", "endpointing", "llm", "playout", "stt", "tts",
                                                   "turn"]
    service = {attr.value.string_value for request in received for resource in request.resource_spans
               for attr in resource.resource.attributes if attr.key == "service.name"}
    assert service == {"switchboard-test"}
    call_ids = {attr.value.string_value for span in sent for attr in span.attributes
                if attr.key == "switchboard.call_id"}
    assert call_ids == {call_id}

    # the trace's shape
    spans = exporter.get_finished_spans()
    assert len(spans) == len(sent)
    call = next(span for span in spans if span.name == "call")
    assert call.attributes["switchboard.outcome"] == "caller_hung_up"
    assert all(span.context.trace_id == call.context.trace_id for span in spans)  # one trace
    turns = [span for span in spans if span.name == "turn"]
    assert [t.attributes["switchboard.turn.kind"] for t in turns] == ["greeting", "reply"]
    assert all(t.parent.span_id == call.context.span_id for t in turns)
    reply = turns[1]
    assert reply.attributes["switchboard.llm.vendor"] == "instant/echo"
    assert reply.attributes["switchboard.llm.tokens_out"] == 3
    assert reply.attributes["switchboard.voice_to_voice_ms"] > 0
    stages = {span.name: span for span in spans
              if span.parent and span.parent.span_id == reply.context.span_id}
    assert set(stages) == {"endpointing", "stt", "llm", "tts", "playout"}
    assert stages["stt"].attributes["switchboard.vendor"] == "instant/fixed"
    assert [event.name for event in stages["llm"].events] == ["first_token"]
    for stage in stages.values():  # inside their turn, in order of the clock
        assert reply.start_time <= stage.start_time <= stage.end_time <= reply.end_time
    # the LLM is asked once the STT is done; STT, LLM and TTS may all finish before the endpoint (a turn
    # prepared at a pause), but the caller hears it only after the endpoint and the first TTS audio
    assert stages["stt"].end_time == stages["llm"].start_time
    assert max(stages[name].end_time for name in ("endpointing", "tts")) <= stages["playout"].start_time
