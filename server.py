"""The Starlette app: Twilio's webhook, the media WebSocket, health; and `python server.py`.

POST /incoming-call   TwiML that connects the call to our /media-stream WebSocket, then hangs up
WS   /media-stream    Twilio Media Streams: one CallSession per connection
GET  /healthz         200 and the number of active calls
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from pipeline.call import CallSession, Providers
from pipeline.config import Config, default_config_path, load_config
from pipeline.metrics import TurnMetrics
from telephony import twilio

log = logging.getLogger("switchboard.server")

YIELD_EVERY = 32  # messages handled before yielding, so a burst from one call can't starve the others


class TwilioLink:
    """The call's way back to Twilio: our audio, marks, clear and hang-up as Media Streams messages."""

    def __init__(self, websocket: WebSocket, stream_sid: str) -> None:
        self.websocket = websocket
        self.stream_sid = stream_sid

    async def _send(self, text: str) -> None:
        if self.websocket.application_state == WebSocketState.CONNECTED:
            try:
                await self.websocket.send_text(text)
            except (WebSocketDisconnect, RuntimeError, OSError) as exc:
                log.debug("send after the caller left: %s", exc)

    async def send_audio(self, pcm: np.ndarray) -> None:
        await self._send(twilio.media_message(self.stream_sid, pcm))

    async def send_mark(self, name: str) -> None:
        await self._send(twilio.mark_message(self.stream_sid, name))

    async def send_clear(self) -> None:
        await self._send(twilio.clear_message(self.stream_sid))

    async def hang_up(self) -> None:
        """Closing the stream makes Twilio continue with the TwiML after <Connect>: our <Hangup/>."""
        if self.websocket.application_state == WebSocketState.CONNECTED:
            try:
                await self.websocket.close()
            except (RuntimeError, OSError) as exc:
                log.debug("close after the caller left: %s", exc)


def create_app(
    config: Config,
    on_turn: Callable[[TurnMetrics], None] | None = None,
    providers: dict[str, Providers] | None = None,
) -> Starlette:
    """Build the app. Providers are built here, so a bad provider setting fails at start-up.

    `providers` (pipeline name -> Providers) replaces the configured ones: tests and benchmarks."""
    if providers is None:
        from providers.registry import build_providers  # loads the provider modules the config names

        providers = {name: build_providers(pipeline) for name, pipeline in config.pipelines.items()}
    calls: dict[str, CallSession] = {}

    async def incoming_call(request: Request) -> Response:
        form = await request.form()
        host = request.headers.get("x-forwarded-host") or request.headers.get("host") or request.url.netloc
        proto = request.headers.get("x-forwarded-proto") or request.url.scheme
        url = twilio.stream_url(os.environ.get("PUBLIC_URL"), host, proto)
        parameters = {
            "pipeline": config.default_pipeline,
            "from": str(form.get("From") or ""),
            "to": str(form.get("To") or ""),
        }
        log.info("incoming call %s from %s to %s", form.get("CallSid"), parameters["from"], parameters["to"])
        return Response(twilio.connect_twiml(url, parameters), media_type="application/xml")

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "active_calls": len(calls)})

    async def media_stream(websocket: WebSocket) -> None:
        await websocket.accept()
        session: CallSession | None = None
        handled = 0
        try:
            while session is None or not session.closed.is_set():
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                raw = message.get("text")
                raw = message.get("bytes") if raw is None else raw
                try:
                    event = twilio.parse(raw)
                except twilio.BadFrame as exc:
                    log.warning("call %s: dropped a frame: %s", session.call_id if session else "-", exc)
                    continue
                if isinstance(event, twilio.Stop):
                    if session is None:
                        log.warning("dropped a frame: stop before start")
                        continue
                    log.info("call %s: caller hung up (stop)", session.call_id)
                    break
                session = await _dispatch(event, session, websocket)
                handled += 1
                if handled % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
        except (WebSocketDisconnect, RuntimeError) as exc:
            log.info("call %s: socket closed: %s", session.call_id if session else "-", exc)
        finally:
            if session is not None:
                calls.pop(session.call_id, None)
                await session.close()

    async def _dispatch(event: twilio.InboundEvent, session: CallSession | None, websocket: WebSocket):
        """Hand one event to its call. Returns the call's session (created by `start`)."""
        if isinstance(event, twilio.Start):
            if session is not None:
                log.warning("call %s: dropped a frame: second start", session.call_id)
                return session
            return await _start_call(event, websocket)
        if isinstance(event, twilio.Connected):
            return session
        if session is None:
            log.warning("dropped a frame: %s before start", type(event).__name__.lower())
            return None
        try:
            if isinstance(event, twilio.Media):
                await session.on_audio(event.pcm)
            elif isinstance(event, twilio.Mark):
                session.on_mark(event.name)
            elif isinstance(event, twilio.Dtmf):
                session.on_dtmf(event.digit)
        except Exception:  # one bad event must not end the call
            log.exception("call %s: failed to handle %s", session.call_id, type(event).__name__)
        return session

    async def _start_call(start: twilio.Start, websocket: WebSocket) -> CallSession:
        wanted = start.custom_parameters.get("pipeline")
        name = wanted if wanted in config.pipelines else config.default_pipeline
        if wanted and wanted != name:
            log.warning("call %s: unknown pipeline %r, using %r", start.call_sid, wanted, name)
        call_id = start.call_sid or start.stream_sid
        session = CallSession(
            call_id=call_id,
            config=config.pipelines[name],
            providers=providers[name],
            link=TwilioLink(websocket, start.stream_sid),
            on_turn=on_turn,
        )
        calls[call_id] = session
        log.info("call %s: stream %s started on pipeline %r", call_id, start.stream_sid, name)
        await session.start()
        return session

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Build heavy provider state (recogniser decoders) now, not on the first caller's first word.
        for pipeline_providers in providers.values():
            warm = getattr(pipeline_providers.stt, "warm", None)
            if warm is not None:
                await warm()
        yield

    app = Starlette(
        lifespan=lifespan,
        routes=[
            Route("/incoming-call", incoming_call, methods=["POST"]),
            Route("/healthz", healthz),
            WebSocketRoute("/media-stream", media_stream),
        ]
    )
    app.state.calls = calls
    app.state.config = config
    return app


@contextlib.asynccontextmanager
async def running(app: Starlette, host: str = "127.0.0.1") -> AsyncIterator[int]:
    """Serve `app` in this event loop on a free port (for the demo, tests and benchmarks)."""
    import uvicorn

    sock = socket.socket()
    sock.bind((host, 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", ws_ping_interval=None, lifespan="on"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if serving.done():
                serving.result()  # raises what stopped it
            await asyncio.sleep(0.01)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.gather(serving, return_exceptions=True)
        sock.close()


def serve(config_path: str | Path | None = None, host: str | None = None, port: int | None = None) -> None:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config(config_path or default_config_path())
    host = host or os.environ.get("HOST", "0.0.0.0")
    port = port or int(os.environ.get("PORT", "5050"))
    uvicorn.run(create_app(config), host=host, port=port, log_level="info", ws_ping_interval=None)


if __name__ == "__main__":
    serve()
