"""One process's operations: its admission, its busy line, its drain, and the routes that expose them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.websockets import WebSocket

from switchboard.config import Config
from switchboard.core.carrier import Connection, Start
from switchboard.core.protocols import TTS
from switchboard.ops.admission import Admission, BusyLine, Refused
from switchboard.ops.drain import Drain
from switchboard.pipeline.call import CallSession


class Operations:
    def __init__(self, config: Config, calls: Mapping[str, CallSession],
                 wait_idle: Callable[[], Awaitable[None]]) -> None:
        self.calls = calls
        self.admission = Admission(config.max_concurrent_calls, config.busy_message, lambda: len(calls))
        self.busy_line = BusyLine(config.busy_message)
        self.drain = Drain(self.admission, calls, wait_idle, config.drain_timeout_s, config.drain_message)

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
                "max_concurrent_calls": self.admission.max_calls}
        return JSONResponse(body, status_code=503 if reason else 200)

    def routes(self) -> list[Route]:
        return [Route("/readyz", self.readyz)]
