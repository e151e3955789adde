"""The Starlette app: every carrier's routes, the call API, health and the dashboard; `serve()`.

POST /incoming-call   Twilio's webhook (telephony/twilio): TwiML that connects the call to /media-stream
WS   /media-stream    Twilio Media Streams: one call per connection
WS   /exotel          Exotel's Voicebot applet (telephony/exotel): the same call loop, Exotel's wire
POST /webrtc/offer    a browser call (telephony/webrtc): the dashboard's "Talk to it", the same call loop
POST /api/calls       place an outbound call through Twilio (Bearer $SWITCHBOARD_API_TOKEN)
GET  /healthz         200 and the number of active calls (liveness)
GET  /readyz          200 while this process takes calls, 503 when full or draining (ops/)
GET  /metrics         Prometheus metrics (ops/metrics.py; Bearer $SWITCHBOARD_API_TOKEN when set)
GET  /dashboard…, /api/calls, /api/calls/{id}, /api/report, /api/live, /login: web/dashboard.py

`create_app` only composes: the carriers' routes run their calls through one `CallHost`, which starts a
`CallSession` per connection on the pipeline the call is routed to and feeds it the carrier's events.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import random
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from switchboard import logs
from switchboard.config import Config, default_config_path, load_config
from switchboard.config.loading import short_hash
from switchboard.config.schema import SplitPipelineConfig
from switchboard.config.tools import detection_mode
from switchboard.core.metrics import ShadowResult, TurnMetrics
from switchboard.host import CallHost
from switchboard.ops.reload import Reloader
from switchboard.ops.workers import STARTUP_FAILURE, check_workers, run_workers
from switchboard.pipeline.build import build_providers, build_tools, mcp_clients
from switchboard.pipeline.call import Providers
from switchboard.pipeline.realtime import RealtimeProviders
from switchboard.pipeline.shadow import ShadowRunner
from switchboard.pipeline.variants import PipelineProviders
from switchboard.report import pricing_from_config
from switchboard.store import CallStore, StoreWriter
from switchboard.telephony.base import Carrier, warn_open
from switchboard.telephony.dialing import DEFAULT_CARRIER, DIALERS, DialError, dial
from switchboard.telephony.exotel import ExotelCarrier
from switchboard.telephony.plivo import PlivoCarrier
from switchboard.telephony.telnyx import TelnyxCarrier
from switchboard.telephony.twilio import TwilioCarrier
from switchboard.telephony.vonage.carrier import VonageCarrier
from switchboard.telephony.webrtc import WebRTCCarrier
from switchboard.web import Auth, Dashboard, LiveHub

if TYPE_CHECKING:
    pass

log = logging.getLogger("switchboard.server")

API_TOKEN_ENV = "SWITCHBOARD_API_TOKEN"  # guards POST /api/calls (unset: off) and the dashboard (unset: open)


def call_api(config: Config, auth: Auth) -> Route:
    """POST /api/calls {"to", "pipeline"?, "from"?, "carrier"?}: place an outbound call (Twilio unless
    `carrier` names another)."""

    async def api_calls(request: Request) -> Response:
        if auth.open:
            return JSONResponse({"error": f"the call API is off: set {API_TOKEN_ENV} on the server and "
                                          "send it as 'Authorization: Bearer <token>'"}, status_code=403)
        if not auth.bearer_ok(request):
            client = request.client.host if request.client else "?"
            log.warning("api/calls: rejected a request from %s: no or wrong bearer token", client)
            return JSONResponse({"error": "missing or wrong 'Authorization: Bearer <token>'"},
                                status_code=401, headers={"WWW-Authenticate": "Bearer"})
        try:
            body = await request.json()
        except ValueError:
            body = None
        fields = ("to", "pipeline", "from", "carrier")
        if (not isinstance(body, dict) or not all(isinstance(body.get(k) or "", str) for k in fields)
                or not isinstance(body.get("machine_detection", False), bool)):
            return JSONResponse({"error": 'expected a JSON object {"to": "+1…", "pipeline": "name", '
                                          '"from": "+1…", "carrier": "twilio", "machine_detection": true} '
                                          'with string values (all but "to" optional)'}, status_code=400)
        status, answer = await place_call(config, body.get("to", ""), body.get("pipeline"), body.get("from"),
                                          machine_detection=body.get("machine_detection", False),
                                          carrier=body.get("carrier") or DEFAULT_CARRIER)
        return JSONResponse(answer, status_code=status)

    return Route("/api/calls", api_calls, methods=["POST"])


async def place_call(config: Config, to: str, pipeline: str | None, from_: str | None,
                     machine_detection: bool = False, carrier: str = DEFAULT_CARRIER) -> tuple[int, dict]:
    """An outbound call through `carrier` (off the event loop): (201, the call) or (status, the error).
    `machine_detection`: the carrier's answering machine detection, in the mode the pipeline's
    `voicemail:` needs."""
    name = pipeline or config.default_pipeline
    mode = detection_mode(config.pipelines, name, machine_detection)
    try:
        placed = await asyncio.to_thread(dial, carrier, to, name, list(config.pipelines), from_,
                                         machine_detection=mode)
    except DialError as exc:
        return exc.status, {"error": str(exc)}
    return 201, {"call_sid": placed.call_sid, "to": placed.to, "from": placed.from_,
                 "pipeline": placed.pipeline, "carrier": placed.carrier}


def create_app(
    config: Config,
    on_turn: Callable[[TurnMetrics], None] | None = None,
    providers: dict[str, Providers] | dict[str, PipelineProviders] | None = None,
    insecure_dev: bool = False,
    store_url: str | None = None,
    on_shadow: Callable[[ShadowResult], None] | None = None,
    rng: random.Random | None = None,
    config_path: str | Path | None = None,
    watch: bool = False,
    reload_on_sighup: bool = False,
) -> Starlette:
    """Build the app. Providers are built here, so a bad provider setting fails at start-up.

    `providers` (pipeline name -> Providers, or PipelineProviders with variants and shadows) replaces the
    configured ones: tests and benchmarks. `rng` draws each call's A/B variant (seed it for tests).
    `on_shadow` gets every shadow LLM's result (they are also stored, with `store_url`).
    `insecure_dev` turns off Twilio signature checks (otherwise on whenever TWILIO_AUTH_TOKEN is set).
    Twilio credentials, PUBLIC_URL and SWITCHBOARD_API_TOKEN are read from the environment here.
    `store_url` records every call and turn in the call store (off the audio path); None = no store.
    `config_path`: the file `config` was read from, which `POST /api/config/reload` (and SIGHUP with
    `reload_on_sighup`, a change with `watch`) reads again (ops/reload.py)."""
    if providers is None:
        providers = {name: build_providers(pipeline) for name, pipeline in config.pipelines.items()
                     if not isinstance(pipeline, SplitPipelineConfig)}  # a split only draws the others
    pipelines = {name: given if isinstance(given, RealtimeProviders) else PipelineProviders.of(given)
                 for name, given in providers.items()}
    mcp = mcp_clients(config.pipelines.values())  # one session per MCP server, shared by the pipelines
    for name, each in pipelines.items():
        each.tools = each.tools or build_tools(config.pipelines[name], mcp)
    writer = StoreWriter(CallStore(store_url)) if store_url else None
    if writer is not None:
        on_turn = _also(writer.turn, on_turn)
    shadow_sinks = [sink for sink in (writer.shadow if writer else None, on_shadow) if sink is not None]

    def shadow_result(result: ShadowResult) -> None:
        for sink in shadow_sinks:
            sink(result)

    shadow_runner = ShadowRunner(config.shadow_max_concurrent, on_result=shadow_result)
    hub = LiveHub()  # the dashboard's view of the active calls
    host = CallHost(config, pipelines, rng or random.Random(), _also(hub.turn, on_turn), writer, hub,
                    shadow_runner)
    host.mcp = mcp
    reloader = Reloader(host, config_path) if config_path is not None else None
    if config_path is not None:
        host.config_file = short_hash(Path(config_path).read_text(encoding="utf-8"))
    host.on_turn = _also(host.ops.turn, host.on_turn)  # Prometheus (ops/metrics.py)
    host.ops.share_live_view(hub, store_url, host.verdicts)  # PostgreSQL: every process's calls and verdicts
    auth = Auth(os.environ.get(API_TOKEN_ENV), API_TOKEN_ENV)
    auth.warn_if_open()
    carriers: list[Carrier] = [
        TwilioCarrier(config.twilio, config.numbers, config.default_pipeline, insecure_dev,
                      busy=host.ops.admission.busy_at_webhook),
        ExotelCarrier(),
        TelnyxCarrier(config.telnyx, config.numbers, config.default_pipeline,
                      busy=host.ops.admission.busy_at_webhook, verdicts=host.verdicts),
        webrtc := WebRTCCarrier(config.webrtc, auth, config.arms()),
        PlivoCarrier(config.numbers, config.default_pipeline, insecure_dev,
                     busy=host.ops.admission.busy_at_webhook, verdicts=host.verdicts),
        VonageCarrier(config.vonage, config.numbers, config.default_pipeline, insecure_dev,
                      busy=host.ops.admission.busy_at_webhook, verdicts=host.verdicts),
    ]

    warn_open(carriers)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await host.warm()
        await host.start_tools()
        # Start-up objects (SDKs, models, config) live for the whole process: keep them out of the
        # collector's full passes, which otherwise stall every call's audio for tens of ms.
        gc.collect()
        gc.freeze()
        if writer is not None:
            writer.close_lost_calls()
            await writer.start()  # opens the store itself, retrying while the database is down
        await host.ops.start()
        if reloader is not None and reload_on_sighup:
            reloader.on_sighup(asyncio.get_running_loop())
        if reloader is not None and watch:
            reloader.watch()
        try:
            yield
        finally:
            if reloader is not None:
                await reloader.aclose()
            await webrtc.aclose()  # browser calls still open are hung up
            await shadow_runner.aclose()  # shadows still asking are not recorded
            await host.lines.aclose()
            if writer is not None:
                await writer.aclose()
                await writer.store.close()
            await host.ops.aclose()
            if host.mcp is not None:
                await host.mcp.aclose()

    app = Starlette(
        lifespan=lifespan,
        routes=[
            *(route for carrier in carriers for route in carrier.routes(host.serve_stream)),
            call_api(config, auth),
            Route("/healthz", host.healthz),
            *([reloader.route(auth)] if reloader is not None else []),
            *host.ops.routes(auth),
            *Dashboard(hub, auth, writer.store if writer else None, list(config.pipelines),
                       pricing_from_config(config), talk=config.arms(),
                       dialer=lambda to, pipeline, from_, carrier=DEFAULT_CARRIER: place_call(
                           config, to, pipeline, from_, carrier=carrier), carriers=list(DIALERS)).routes(),
        ],
    )
    app.state.calls = host.calls
    app.state.host = host
    app.state.ops = host.ops
    app.state.shadows = shadow_runner
    app.state.config = config
    app.state.live_hub = hub
    return app


# uvicorn's WebSocket implementation, named rather than left to "auto" (which picks it today, while
# websockets is installed, and could pick another): of the two installed, the sans-I/O one parses a frame
# in the protocol's data_received and hands it to the app, where the legacy `websockets` one runs a reader
# task per connection and is deprecated. Side by side on the same load (`python -m bench.calls --vendors
# openai --server-ws websockets-sansio,websockets`, bench/README.md) the sans-I/O one used 0.93x the
# legacy one's server CPU at 50 calls on a quiet machine. (wsproto, the third, is not installed.)
WS_PROTOCOL = "websockets-sansio"


@contextlib.asynccontextmanager
async def running(app: Starlette, host: str = "127.0.0.1", ws: str = WS_PROTOCOL) -> AsyncIterator[int]:
    """Serve `app` in this event loop on a free port (for the demo, tests and benchmarks)."""
    import uvicorn

    sock = socket.socket()
    sock.bind((host, 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", ws_ping_interval=None, lifespan="on",
                                           ws=ws))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if serving.done():
                serving.result()  # raises what stopped it
                raise RuntimeError("the server did not start (its lifespan failed: see the log)")
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
    workers: int = 1,
    watch: bool = False,
) -> int:
    """`switchboard serve`: one process, or `workers` processes on one socket (ops/workers.py). SIGHUP
    reloads the file (every worker's); `watch`: so does a change to it (ops/reload.py)."""
    logs.configure(logging.INFO)  # every line, uvicorn's too, through the secret redaction
    host = host or os.environ.get("HOST", "0.0.0.0")
    port = port or int(os.environ.get("PORT", "5050"))
    # a ConfigError or MissingCredential goes up to the command line, which says what to fix
    path = str(config_path or default_config_path())
    config = load_config(path)
    check_workers(config, workers)
    if workers > 1:
        return run_workers(workers, host, port, functools.partial(_worker, path, insecure_dev, watch))
    return 0 if _serve_one(config, path, insecure_dev, watch, host=host, port=port) else STARTUP_FAILURE


def _worker(config_path: str, insecure_dev: bool, watch: bool, sock: socket.socket) -> None:
    """One of `serve --workers N`'s processes (spawned: it builds its own app)."""
    logs.configure(logging.INFO)
    if not _serve_one(load_config(config_path), config_path, insecure_dev, watch, sock=sock):
        sys.exit(STARTUP_FAILURE)


def _serve_one(config: Config, config_path: str, insecure_dev: bool, watch: bool, host: str = "",
               port: int = 0, sock: socket.socket | None = None) -> bool:
    """Serve until stopped (SIGTERM drains); False if it never started (the port taken, start-up failed)."""
    import uvicorn

    from switchboard.ops.serving import DrainingServer

    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the app's lifespan reloads on it: not a kill
    app = create_app(config, insecure_dev=insecure_dev, store_url=config.database_url or None,
                     config_path=config_path, watch=watch, reload_on_sighup=True)

    async def drain() -> None:  # SIGTERM: ops/drain.py
        await app.state.ops.drain.run()
        app.state.live_hub.close()  # end the dashboards' event streams, which would hold the exit up

    server = DrainingServer(uvicorn.Config(app, host=host, port=port, log_level="info", ws_ping_interval=None,
                                           log_config=None, ws=WS_PROTOCOL), drain)
    server.run(sockets=[sock] if sock is not None else None)
    return server.started
