"""The Starlette app: Twilio's webhook, the media WebSockets, health; and `python server.py`.

POST /incoming-call   TwiML that connects the call to our /media-stream WebSocket, then hangs up
WS   /media-stream    Twilio Media Streams: one CallSession per connection
POST /api/calls       place an outbound call (Bearer $SWITCHBOARD_API_TOKEN)
WS   /exotel          Exotel's Voicebot applet (same loop, Exotel's wire format; optional Basic auth)
GET  /healthz         200 and the number of active calls
GET  /dashboard…, /api/calls, /api/calls/{id}, /api/report, /api/live, /login: web/dashboard.py
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import hmac
import logging
import os
import random
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
from pipeline.config import Config, ConfigError, default_config_path, load_config
from pipeline.metrics import TurnMetrics
from pipeline.player import CarrierLink
from pipeline.report import pricing_from_config
from pipeline.shadow import CallShadows, ShadowResult, ShadowRunner
from pipeline.variants import PipelineProviders
from providers.base import MissingCredential
from store import CallStore, StoreWriter
from telephony import exotel, twilio
from telephony.signature import SIGNATURE_HEADER, SignatureChecker, signed_url
from telephony.twilio_rest import AUTH_TOKEN_ENV, DialError, TwilioRest, dial
from web import Auth, Dashboard, LiveHub

log = logging.getLogger("switchboard.server")

YIELD_EVERY = 32  # messages handled before yielding, so a burst from one call can't starve the others
EXOTEL_AUTH_ENV = "EXOTEL_BASIC_AUTH"  # "key:token": /exotel then requires that HTTP Basic auth
API_TOKEN_ENV = "SWITCHBOARD_API_TOKEN"  # guards POST /api/calls (unset: off) and the dashboard (unset: open)

Parser = Callable[[str | bytes], twilio.InboundEvent]  # one connection's frame parser; raises BadFrame
LinkFactory = Callable[[twilio.Start], CarrierLink]  # the call's link, made once `start` arrives


class TwilioLink:
    """The call's way back to Twilio: our audio, marks, clear and hang-up as Media Streams messages."""

    def __init__(
        self, websocket: WebSocket, stream_sid: str, call_sid: str = "", rest: TwilioRest | None = None
    ) -> None:
        self.websocket = websocket
        self.stream_sid = stream_sid
        self.call_sid = call_sid
        self.rest = rest  # with credentials, hang-up goes through Twilio's REST API

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
        """End the call through the REST API when we can, then close the stream either way.

        Closing alone also ends it: Twilio continues with the TwiML after <Connect>, our <Hangup/>."""
        if self.rest is not None and self.call_sid:
            await self.rest.hang_up(self.call_sid)  # logs a failure; closing the stream is the fallback
        if self.websocket.application_state == WebSocketState.CONNECTED:
            try:
                await self.websocket.close()
            except (RuntimeError, OSError) as exc:
                log.debug("close after the caller left: %s", exc)


class ExotelLink(TwilioLink):
    """The call's way back to Exotel: PCM16 at the call's rate in chunks Exotel accepts, marks, clear.

    The player sends 20 ms frames; Exotel wants ≥ 200 ms per message, so up to `holds_ms` of audio
    waits here (the player runs that much further ahead to make up for it). A mark first sends what is
    held, padded with silence to a valid chunk. Hang-up (closing the socket) is Twilio's."""

    holds_ms = exotel.Chunker.HOLD_MS

    def __init__(self, websocket: WebSocket, stream_sid: str, sample_rate: int) -> None:
        super().__init__(websocket, stream_sid)
        self.chunker = exotel.Chunker(sample_rate)

    async def send_audio(self, pcm: np.ndarray) -> None:
        for payload in self.chunker.push(pcm):
            await self._send(exotel.media_message(self.stream_sid, payload))

    async def send_mark(self, name: str) -> None:
        for payload in self.chunker.flush():
            await self._send(exotel.media_message(self.stream_sid, payload))
        await self._send(exotel.mark_message(self.stream_sid, name))

    async def send_clear(self) -> None:
        self.chunker.clear()
        await self._send(exotel.clear_message(self.stream_sid))


def exotel_auth_ok(authorization: str | None, expected: str) -> bool:
    """Does an `Authorization: Basic …` header carry `expected` ("key:token")? Constant-time."""
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except ValueError:
        return False
    return hmac.compare_digest(given, expected.encode())


def signature_checker(config: Config, insecure_dev: bool = False) -> SignatureChecker | None:
    """The Twilio signature check, or None (with a loud warning) when it is off."""
    token = os.environ.get(AUTH_TOKEN_ENV)
    why_off = (
        "--insecure-dev" if insecure_dev
        else "twilio.validate_signatures is false in the config" if not config.twilio.validate_signatures
        else f"{AUTH_TOKEN_ENV} is not set" if not token
        else None
    )
    if why_off is None and token:
        return SignatureChecker(token)
    log.warning("!!! INSECURE: Twilio request signatures are NOT checked (%s): anyone who finds this "
                "server can place calls into it. Set %s and drop --insecure-dev in production. !!!",
                why_off, AUTH_TOKEN_ENV)
    return None


def create_app(
    config: Config,
    on_turn: Callable[[TurnMetrics], None] | None = None,
    providers: dict[str, Providers] | dict[str, PipelineProviders] | None = None,
    insecure_dev: bool = False,
    store_url: str | None = None,
    on_shadow: Callable[[ShadowResult], None] | None = None,
    rng: random.Random | None = None,
) -> Starlette:
    """Build the app. Providers are built here, so a bad provider setting fails at start-up.

    `providers` (pipeline name -> Providers, or PipelineProviders with variants and shadows) replaces the
    configured ones: tests and benchmarks. `rng` draws each call's A/B variant (seed it for tests).
    `on_shadow` gets every shadow LLM's result (they are also stored, with `store_url`).
    `insecure_dev` turns off Twilio signature checks (otherwise on whenever TWILIO_AUTH_TOKEN is set).
    Twilio credentials, PUBLIC_URL and SWITCHBOARD_API_TOKEN are read from the environment here.
    `store_url` records every call and turn in the call store (off the audio path); None = no store."""
    if providers is None:
        from providers.registry import build_providers  # loads the provider modules the config names

        providers = {name: build_providers(pipeline) for name, pipeline in config.pipelines.items()}
    pipelines = {name: PipelineProviders.of(given) for name, given in providers.items()}
    rng = rng or random.Random()
    calls: dict[str, CallSession] = {}
    writer = StoreWriter(CallStore(store_url)) if store_url else None
    if writer is not None:
        on_turn = _also(writer.turn, on_turn)
    shadow_sinks = [sink for sink in (writer.shadow if writer else None, on_shadow) if sink is not None]

    def shadow_result(result: ShadowResult) -> None:
        for sink in shadow_sinks:
            sink(result)

    shadow_runner = ShadowRunner(config.shadow_max_concurrent, on_result=shadow_result)
    hub = LiveHub()  # the dashboard's view of the active calls
    on_turn = _also(hub.turn, on_turn)
    checker = signature_checker(config, insecure_dev)
    rest = TwilioRest.from_env()
    api_token = os.environ.get(API_TOKEN_ENV)
    auth = Auth(api_token, API_TOKEN_ENV)
    auth.warn_if_open()

    async def incoming_call(request: Request) -> Response:
        form = await request.form()
        if checker is not None:
            signed = signed_url(request.url.path, request.url.query, request.headers, request.url.scheme,
                                os.environ.get("PUBLIC_URL"))
            problem = checker.problem(signed, form, request.headers.get(SIGNATURE_HEADER))
            if problem:
                log.warning("incoming-call: rejected a request from %s: %s", _peer(request), problem)
                return Response("invalid Twilio signature", status_code=403, media_type="text/plain")
        host = request.headers.get("x-forwarded-host") or request.headers.get("host") or request.url.netloc
        proto = request.headers.get("x-forwarded-proto") or request.url.scheme
        url = twilio.stream_url(os.environ.get("PUBLIC_URL"), host, proto)
        called = str(form.get("To") or "")
        pipeline = config.pipeline_for_number(called)
        if pipeline is None:
            log.log(logging.WARNING if config.numbers else logging.INFO,
                    "incoming call %s: no route for the called number %r in numbers:, using pipeline %r",
                    form.get("CallSid"), called, config.default_pipeline)
        parameters = {
            "pipeline": pipeline or config.default_pipeline,
            "from": str(form.get("From") or ""),
            "to": str(form.get("To") or ""),
        }
        log.info("incoming call %s from %s to %s", form.get("CallSid"), parameters["from"], parameters["to"])
        return Response(twilio.connect_twiml(url, parameters), media_type="application/xml")

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "active_calls": len(calls)})

    async def media_stream(websocket: WebSocket) -> None:
        await websocket.accept()
        if checker is not None:
            signed = signed_url(websocket.url.path, websocket.url.query, websocket.headers,
                                websocket.url.scheme, os.environ.get("PUBLIC_URL"), websocket=True)
            problem = checker.problem(signed, {}, websocket.headers.get(SIGNATURE_HEADER))
            if problem:
                log.warning("media-stream: rejected a connection from %s: %s", _peer(websocket), problem)
                await websocket.close(code=1008, reason="invalid Twilio signature")
                return
        await _serve_stream(
            websocket, twilio.parse,
            lambda start: TwilioLink(websocket, start.stream_sid, start.call_sid, rest),
        )

    async def api_calls(request: Request) -> Response:
        """POST /api/calls {"to", "pipeline"?, "from"?}: place an outbound call."""
        if not api_token:
            return JSONResponse({"error": f"the call API is off: set {API_TOKEN_ENV} on the server and "
                                          "send it as 'Authorization: Bearer <token>'"}, status_code=403)
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), api_token.encode()):
            log.warning("api/calls: rejected a request from %s: no or wrong bearer token", _peer(request))
            return JSONResponse({"error": "missing or wrong 'Authorization: Bearer <token>'"},
                                status_code=401, headers={"WWW-Authenticate": "Bearer"})
        try:
            body = await request.json()
        except ValueError:
            body = None
        fields = ("to", "pipeline", "from")
        if not isinstance(body, dict) or not all(isinstance(body.get(k) or "", str) for k in fields):
            return JSONResponse({"error": 'expected a JSON object {"to": "+1…", "pipeline": "name", '
                                          '"from": "+1…"} with string values ("pipeline", "from" optional)'},
                                status_code=400)
        try:
            placed = await asyncio.to_thread(
                dial, config, body.get("to", ""), body.get("pipeline"), body.get("from")
            )
        except DialError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        return JSONResponse({"call_sid": placed.call_sid, "to": placed.to, "from": placed.from_,
                             "pipeline": placed.pipeline}, status_code=201)

    async def exotel_stream(websocket: WebSocket) -> None:
        expected = os.environ.get(EXOTEL_AUTH_ENV)
        if expected and not exotel_auth_ok(websocket.headers.get("authorization"), expected):
            log.warning("exotel: rejected a connection from %s: missing or wrong Basic auth",
                        websocket.client.host if websocket.client else "?")
            await websocket.close(code=1008)  # before accept: the upgrade is refused (HTTP 403)
            return
        await websocket.accept()

        def link(start: twilio.Start) -> CarrierLink:
            rate = start.sample_rate if isinstance(start, exotel.Start) else exotel.LINE_RATE
            return ExotelLink(websocket, start.stream_sid, rate)

        await _serve_stream(websocket, exotel.Decoder().parse, link)

    async def _serve_stream(websocket: WebSocket, parse: Parser, make_link: LinkFactory) -> None:
        """One carrier connection: parse each frame, hand it to the call; the same for every carrier."""
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
                    event = parse(raw)
                except twilio.BadFrame as exc:
                    log.warning("call %s: dropped a frame: %s", session.call_id if session else "-", exc)
                    continue
                if isinstance(event, twilio.Stop):
                    if session is None:
                        log.warning("dropped a frame: stop before start")
                        continue
                    reason = getattr(event, "reason", "")  # Exotel says why
                    log.info("call %s: caller hung up (stop%s)", session.call_id, reason and f": {reason}")
                    break
                session = await _dispatch(event, session, make_link)
                handled += 1
                if handled % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
        except (WebSocketDisconnect, RuntimeError) as exc:
            log.info("call %s: socket closed: %s", session.call_id if session else "-", exc)
        finally:
            if session is not None:
                summary: dict = {}
                try:
                    summary = await session.close()
                    if writer is not None:
                        writer.call_ended(session.call_id, summary)
                finally:  # only once the call's record is final does it leave the active calls
                    calls.pop(session.call_id, None)
                    hub.call_ended(session.call_id, summary)

    async def _dispatch(event: twilio.InboundEvent, session: CallSession | None, make_link: LinkFactory):
        """Hand one event to its call. Returns the call's session (created by `start`)."""
        if isinstance(event, twilio.Start):
            if session is not None:
                log.warning("call %s: dropped a frame: second start", session.call_id)
                return session
            return await _start_call(event, make_link)
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

    async def _start_call(start: twilio.Start, make_link: LinkFactory) -> CallSession:
        wanted = start.custom_parameters.get("pipeline")
        if not wanted and isinstance(start, exotel.Start):  # Exotel routes by the number called
            wanted = config.pipeline_for_number(start.to_number)
        name = wanted if wanted in config.pipelines else config.default_pipeline
        if wanted and wanted != name:
            log.warning("call %s: unknown pipeline %r, using %r", start.call_sid, wanted, name)
        call_id = start.call_sid or start.stream_sid
        variant, call_providers = pipelines[name].pick(rng)  # A/B: drawn once, kept for the whole call
        shadows = pipelines[name].shadows
        session = CallSession(
            call_id=call_id,
            config=config.pipelines[name],
            providers=call_providers,
            link=make_link(start),
            on_turn=on_turn,
            shadows=CallShadows(shadow_runner, shadows, call_id) if shadows else None,
            variant=variant,
        )
        if variant is not None:
            log.info("call %s: variant %s", call_id, variant)
        calls[call_id] = session
        hub.call_started(call_id, name, from_number=start.custom_parameters.get("from", ""),
                         to_number=start.custom_parameters.get("to", getattr(start, "to_number", "")),
                         carrier="exotel" if isinstance(start, exotel.Start) else "twilio", variant=variant)
        if writer is not None:
            writer.call_started(call_id, name, from_number=start.custom_parameters.get("from", ""),
                                to_number=start.custom_parameters.get("to", getattr(start, "to_number", "")),
                                carrier="exotel" if isinstance(start, exotel.Start) else "twilio",
                                variant=variant)
        log.info("call %s: stream %s started on pipeline %r", call_id, start.stream_sid, name)
        await session.start()
        return session

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Build heavy provider state (recogniser decoders) now, not on the first caller's first word.
        for stt in dict.fromkeys(stt for each in pipelines.values() for stt in each.all_stt()):
            warm = getattr(stt, "warm", None)
            if warm is not None:
                await warm()
        # Start-up objects (SDKs, models, config) live for the whole process: keep them out of the
        # collector's full passes, which otherwise stall every call's audio for tens of ms.
        gc.collect()
        gc.freeze()
        if writer is None:
            try:
                yield
            finally:
                await shadow_runner.aclose()
            return
        await writer.start()  # opens the store itself, retrying while the database is down
        try:
            yield
        finally:
            await shadow_runner.aclose()  # shadows still asking are not recorded
            await writer.aclose()
            await writer.store.close()

    app = Starlette(
        lifespan=lifespan,
        routes=[
            Route("/incoming-call", incoming_call, methods=["POST"]),
            Route("/api/calls", api_calls, methods=["POST"]),
            Route("/healthz", healthz),
            WebSocketRoute("/media-stream", media_stream),
            WebSocketRoute("/exotel", exotel_stream),
            *Dashboard(hub, auth, writer.store if writer else None, list(config.pipelines),
                       pricing_from_config(config)).routes(),
        ]
    )
    app.state.calls = calls
    app.state.shadows = shadow_runner
    app.state.config = config
    app.state.live_hub = hub
    return app


def _peer(connection: Request | WebSocket) -> str:
    return connection.client.host if connection.client else "?"


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
        hub = getattr(app.state, "live_hub", None)
        if hub is not None:
            hub.close()  # end the dashboards' event streams, which would hold the shutdown up
        server.should_exit = True
        await asyncio.gather(serving, return_exceptions=True)
        sock.close()


def _also(first: Callable[[TurnMetrics], None], then: Callable[[TurnMetrics], None] | None):
    """One on_turn callback calling `first` and then `then` (if any)."""
    if then is None:
        return first

    def both(metrics: TurnMetrics) -> None:
        first(metrics)
        then(metrics)

    return both


def serve(
    config_path: str | Path | None = None,
    host: str | None = None,
    port: int | None = None,
    insecure_dev: bool = False,
) -> None:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host = host or os.environ.get("HOST", "0.0.0.0")
    port = port or int(os.environ.get("PORT", "5050"))
    try:
        config = load_config(config_path or default_config_path())
        app = create_app(config, insecure_dev=insecure_dev, store_url=config.database_url or None)
    except (ConfigError, MissingCredential) as exc:  # start-up errors: say what to fix, no traceback
        raise SystemExit(f"switchboard: {exc}") from None
    uvicorn.run(app, host=host, port=port, log_level="info", ws_ping_interval=None)


if __name__ == "__main__":
    serve()
