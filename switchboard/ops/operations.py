"""One process's operations: its admission, its busy line, its drain, its metrics, and their routes.

GET /readyz    200 while this process takes new calls, 503 (with why) when it is full or draining
GET /metrics   Prometheus text format; guarded like the dashboard (SWITCHBOARD_API_TOKEN as a bearer
               token, or the dashboard's login cookie; open without the token)
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.websockets import WebSocket

from switchboard.config import Config
from switchboard.core.carrier import Connection, Start
from switchboard.core.metrics import TurnMetrics
from switchboard.core.protocols import TTS
from switchboard.core.verdicts import MachineVerdicts
from switchboard.ops.admission import Admission, BusyLine, Refused
from switchboard.ops.drain import Drain
from switchboard.ops.live_bus import LiveBus, is_postgres
from switchboard.ops.metrics import Metrics
from switchboard.ops.tracing import Tracing
from switchboard.pipeline.call import CallSession
from switchboard.pipeline.lines import LineCache
from switchboard.store import StoreWriter
from switchboard.web import Auth, LiveHub

DRAINED, BOT_HUNG_UP, CALLER_HUNG_UP = "drained", "bot_hung_up", "caller_hung_up"


def outcome(session: CallSession) -> str:
    """How a call ended: our drain's goodbye, the bot's end_call, or the caller (or the line) going."""
    if any(turn.kind == "goodbye" for turn in session.turns):
        return DRAINED
    if any(turn.ended_call for turn in session.turns):
        return BOT_HUNG_UP
    return CALLER_HUNG_UP


class Operations:
    def __init__(self, config: Config, calls: Mapping[str, CallSession],
                 wait_idle: Callable[[], Awaitable[None]], writer: StoreWriter | None = None,
                 lines: LineCache | None = None) -> None:
        self.calls, self.writer = calls, writer
        self.admission = Admission(config.max_concurrent_calls, config.busy_message, lambda: len(calls))
        self.busy_line = BusyLine(config.busy_message, lines or LineCache())
        self.drain = Drain(self.admission, calls, wait_idle, config.drain_timeout_s, config.drain_message)
        self.metrics = Metrics()
        self.admission.on_refused.append(self.metrics.refused)
        self._calls_seen: dict[str, tuple[str, str]] = {}  # call id -> (carrier, pipeline)
        self.live_bus: LiveBus | None = None
        self.tracing = Tracing()  # off unless OTEL_EXPORTER_OTLP_ENDPOINT is set

    def share_live_view(self, hub: LiveHub, database_url: str | None,
                        verdicts: MachineVerdicts | None = None) -> None:
        """With a PostgreSQL store, the live view shows every process's calls, and a machine detection
        verdict posted to one process reaches the one holding its call (ops/live_bus.py)."""
        if database_url and is_postgres(database_url):
            self.live_bus = LiveBus(database_url, hub, verdicts)

    # --- the server tells us -------------------------------------------------------------------------------

    def call_started(self, call_id: str, carrier: str, pipeline: str) -> None:
        self._calls_seen[call_id] = (carrier, pipeline)
        self.metrics.call_started(carrier, pipeline)
        self.tracing.call_started(call_id, carrier, pipeline)

    def call_ended(self, session: CallSession) -> None:
        carrier, pipeline = self._calls_seen.pop(session.call_id, ("", ""))
        ended = outcome(session)
        self.metrics.call_ended(carrier, pipeline, ended)
        self.tracing.call_ended(session.call_id, ended, len(session.turns))

    def turn(self, metrics: TurnMetrics) -> None:
        self.metrics.turn(metrics)
        self.tracing.turn(metrics)

    async def start(self) -> None:
        writer = self.writer
        self.metrics.start((lambda: (writer.pending, writer.dropped)) if writer is not None else None)
        if self.live_bus is not None:
            self.live_bus.start()

    async def aclose(self) -> None:
        if self.live_bus is not None:
            await self.live_bus.aclose()
        await self.metrics.aclose()
        if self.writer is not None:  # the last count: records left unwritten at shutdown
            self.metrics.sample_store(self.writer.pending, self.writer.dropped)
        Metrics.process_exited(os.getpid())  # multiprocess mode: this worker's live gauges no longer count
        await asyncio.to_thread(self.tracing.shutdown)  # the exporter's last batch goes out over HTTP

    def check_admission(self, call_id: str, pipeline: str) -> None:
        """Raise `Refused` when a new call can't come in now."""
        reason = self.admission.refusal()
        if reason is not None:
            raise Refused(call_id, reason, pipeline)

    async def refuse_stream(self, websocket: WebSocket, connection: Connection, start: Start,
                            refused: Refused, voices: list[TTS]) -> None:
        """A media stream that started a call we can't take: count it, say the busy line, hang up."""
        self.admission.refuse(connection.carrier, "stream", refused.reason, refused.call_id)
        audio = await self.busy_line.audio(refused.pipeline, voices)
        await self.busy_line.play(websocket, connection, start, audio)

    async def readyz(self, request: Request) -> Response:
        """200 while this process takes new calls; 503 when it is full or draining (take it out of the
        load balancer). Liveness is /healthz."""
        reason = self.admission.refusal()
        body = {"status": reason or "ready", "active_calls": len(self.calls),
                "max_concurrent_calls": self.admission.max_calls, "pid": os.getpid()}
        return JSONResponse(body, status_code=503 if reason else 200)

    def routes(self, auth: Auth) -> list[Route]:
        async def metrics(request: Request) -> Response:
            if not auth.allows(request):
                return auth.denied(request, page=False)
            return self.metrics.response(request)

        return [Route("/readyz", self.readyz), Route("/metrics", metrics)]
