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
import collections
import contextlib
import functools
import gc
import logging
import os
import random
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.websockets import WebSocket, WebSocketDisconnect

from switchboard import logs
from switchboard.audio import smart_turn
from switchboard.config import Config, PipelineConfig, default_config_path, load_config
from switchboard.config.loading import short_hash
from switchboard.config.schema import SplitPipelineConfig
from switchboard.config.tools import detection_mode
from switchboard.core.carrier import (
    NUMBER_CHARS,
    BadFrame,
    Connected,
    Connection,
    Dtmf,
    InboundEvent,
    Mark,
    Media,
    Start,
    Stop,
)
from switchboard.core.context import CALL_ID
from switchboard.core.deadline import ReceiveDeadline
from switchboard.core.errors import StartupError
from switchboard.core.metrics import ShadowResult, TurnMetrics
from switchboard.core.verdicts import HeldStart, MachineVerdicts
from switchboard.ops import Operations, Refused
from switchboard.ops.reload import Reloader, versions
from switchboard.ops.workers import STARTUP_FAILURE, check_workers, run_workers
from switchboard.pipeline.build import build_providers, build_tools, mcp_clients
from switchboard.pipeline.call import CallSession, Providers
from switchboard.pipeline.lines import LineCache, greeting_is_fixed
from switchboard.pipeline.realtime import RealtimeProviders, RealtimeSession
from switchboard.pipeline.shadow import CallShadows, ShadowRunner
from switchboard.pipeline.variants import PipelineProviders, draw_pipeline
from switchboard.report import pricing_from_config
from switchboard.store import CallStore, StoreWriter
from switchboard.telephony.base import Carrier
from switchboard.telephony.dialing import DEFAULT_CARRIER, DIALERS, DialError, dial
from switchboard.telephony.exotel import ExotelCarrier
from switchboard.telephony.plivo import PlivoCarrier
from switchboard.telephony.telnyx import TelnyxCarrier
from switchboard.telephony.twilio import TwilioCarrier
from switchboard.telephony.vonage.carrier import VonageCarrier
from switchboard.telephony.webrtc import WebRTCCarrier
from switchboard.web import Auth, Dashboard, LiveHub

if TYPE_CHECKING:
    from switchboard.pipeline.mcp import McpClients

log = logging.getLogger("switchboard.server")

START_TIMEOUT_S = 10.0  # a socket that sends no `start` this long is closed
IDLE_TIMEOUT_S = 300.0  # a call whose socket carries no frame at all this long is over (carriers that
# stop sending while the caller is silent are still endpointed by the tick loop; this only ends the dead)
DROP_WARNINGS = 20  # malformed frames logged one by one per connection; after that a count every 10 s
DROP_SUMMARY_S = 10.0
PROCESS_DROP_WARNINGS = 100  # ...and at most this many one by one per 10 s across all connections
YIELD_EVERY = 32  # messages handled before yielding, so a burst from one call can't starve the others
API_TOKEN_ENV = "SWITCHBOARD_API_TOKEN"  # guards POST /api/calls (unset: off) and the dashboard (unset: open)


REMEMBERED_CALL_IDS = 10_000  # ended calls' ids kept, so that a reused id is recorded apart


class DuplicateCall(Exception):
    """A second connection started a call whose id is already active."""


class WarningBudget:
    """At most `limit` warnings per `period_s`, shared by every connection of the process (many
    connections each sending a few bad frames must not flood the log either); what is held back is
    counted and said in one line when the next period begins."""

    def __init__(self, limit: int = PROCESS_DROP_WARNINGS, period_s: float = DROP_SUMMARY_S) -> None:
        self.limit, self.period_s = limit, period_s
        self._used, self._held_back, self._period_end = 0, 0, 0.0

    def take(self) -> bool:
        now = time.monotonic()
        if now >= self._period_end:
            if self._held_back:
                log.warning("%d log lines about malformed frames held back in the last %.0f s (at most %d "
                            "per %.0f s across all calls)", self._held_back, self.period_s, self.limit,
                            self.period_s)
            self._used, self._held_back, self._period_end = 0, 0, now + self.period_s
        self._used += 1
        if self._used > self.limit:
            self._held_back += 1
            return False
        return True


class FrameDrops:
    """A connection's malformed frames, logged without letting a flood of them flood the log: one by one
    up to `DROP_WARNINGS`, then a count every `DROP_SUMMARY_S`; every line within the process's budget."""

    def __init__(self, budget: WarningBudget) -> None:
        self.count = 0
        self.budget = budget
        self._unlogged = 0
        self._next_summary = 0.0

    def drop(self, call_id: str, reason: object) -> None:
        self.count += 1
        self._unlogged += 1
        now = time.monotonic()
        if (self.count > DROP_WARNINGS and now < self._next_summary) or not self.budget.take():
            return  # counted: the connection's next line (or its last) says how many
        if self._unlogged == 1:
            log.warning("call %s: dropped a frame: %s", call_id, reason)
        else:
            log.warning("call %s: dropped %d malformed frames since the last message (%d in all; latest: %s)",
                        call_id, self._unlogged, self.count, reason)
        self._unlogged, self._next_summary = 0, now + DROP_SUMMARY_S

    def close(self, call_id: str) -> None:
        if self._unlogged and self.budget.take():
            log.warning("call %s: dropped %d malformed frames not logged one by one (%d in all)", call_id,
                        self._unlogged, self.count)


EVAL_TAGS = ("eval_run", "eval_scenario")  # start parameters of a call `switchboard eval` placed (not live)


class CallHost:
    """The calls of one server process: one `CallSession` per carrier connection, on the pipeline the
    call is routed to, with its A/B variant drawn, its shadows, and its turns recorded."""

    def __init__(self, config: Config, pipelines: dict[str, PipelineProviders], rng: random.Random,
                 on_turn: Callable[[TurnMetrics], None], writer: StoreWriter | None, hub: LiveHub,
                 shadow_runner: ShadowRunner) -> None:
        self.config, self.pipelines, self.rng = config, pipelines, rng
        self.on_turn, self.writer, self.hub, self.shadow_runner = on_turn, writer, hub, shadow_runner
        self.calls: dict[str, CallSession] = {}
        self.drop_warnings = WarningBudget()
        self._ended_ids: collections.OrderedDict[str, int] = collections.OrderedDict()  # id -> times used
        self.start_timeout_s, self.idle_timeout_s = START_TIMEOUT_S, IDLE_TIMEOUT_S
        self._idle = asyncio.Event()  # set whenever no call is active
        self._idle.set()
        self.lines = LineCache()  # fixed lines (greetings, apologies...) from memory (pipeline/lines.py)
        self._background: set[asyncio.Task] = set()
        self.ops = Operations(config, self.calls, self.wait_idle, writer, self.lines)  # admission, drain...
        self.mcp: McpClients | None = None  # the MCP servers' sessions, when a pipeline lists one
        # each call records which configuration answered it (ops/reload.py swaps these with the pipelines)
        self.versions, self.config_file = versions(config), ""
        self.verdicts = MachineVerdicts()  # machine detection's verdicts posted apart (core/verdicts.py)

    async def serve_stream(self, websocket: WebSocket, connection: Connection) -> None:
        """One carrier connection: parse each frame, hand it to the call; the same for every carrier."""
        session: CallSession | None = None
        held: HeldStart | None = None  # a start waiting for its machine detection's verdict
        handled = 0
        drops = FrameDrops(self.drop_warnings)
        deadline = ReceiveDeadline(self.start_timeout_s)  # then idle_timeout_s, once the call started
        try:
            while session is None or not session.closed.is_set():
                try:
                    message = await deadline.receive(websocket.receive)
                except TimeoutError:
                    log.warning("call %s: no %s for %.0f s: closing the socket",
                                session.call_id if session else "-", "frame" if session else "start",
                                deadline.wait_s)
                    await websocket.close(code=1000 if session else 1008)
                    break
                if message["type"] == "websocket.disconnect":
                    break
                raw = message.get("text")
                raw = message.get("bytes") if raw is None else raw
                try:
                    event = connection.parse(raw)
                except BadFrame as exc:
                    drops.drop(session.call_id if session else "-", exc)
                    continue
                if isinstance(event, Stop):
                    if session is None:
                        drops.drop("-", "stop before start")
                        continue
                    reason = event.reason  # Exotel says why
                    log.info("call %s: caller hung up (stop%s)", session.call_id, reason and f": {reason}")
                    break
                if held is not None:  # what the line carries before the verdict is not the call's
                    if not held.ready():
                        continue
                    event, held = held.release(), None
                elif session is None and isinstance(event, Start):
                    held = self.verdicts.hold(event)
                    if held is not None:
                        continue
                try:
                    session = await self._dispatch(event, session, connection, drops)
                except DuplicateCall as exc:
                    log.warning("%s", exc)
                    await websocket.close(code=1008, reason="this call is already connected")
                    return
                except Refused as refused:  # full or draining: the caller hears the busy line
                    assert isinstance(event, Start)
                    pipeline = self.pipelines[refused.pipeline]
                    voices = [pipeline.tts[0].provider, *pipeline.fallback_tts]
                    await self.ops.refuse_stream(websocket, connection, event, refused, voices)
                    return
                if session is not None:
                    deadline.wait_s = self.idle_timeout_s
                handled += 1
                if handled % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
        except (WebSocketDisconnect, RuntimeError) as exc:
            log.info("call %s: socket closed: %s", session.call_id if session else "-", exc)
        finally:
            if held is not None:
                held.cancel()
            deadline.close()
            drops.close(session.call_id if session else "-")
            if session is not None:
                await self._end(session)

    async def _dispatch(self, event: InboundEvent, session: CallSession | None,
                        connection: Connection, drops: FrameDrops) -> CallSession | None:
        """Hand one event to its call. Returns the call's session (created by `start`)."""
        if isinstance(event, Start):
            if session is not None:
                drops.drop(session.call_id, "second start")
                return session
            return await self._start_call(event, connection)
        if isinstance(event, Connected):
            return session
        if session is None:
            drops.drop("-", f"{type(event).__name__.lower()} before start")
            return None
        try:
            if isinstance(event, Media):
                await session.on_audio(event.pcm, wide=event.wide)
            elif isinstance(event, Mark):
                session.on_mark(event.name)
            elif isinstance(event, Dtmf):
                session.on_dtmf(event.digit)
        except Exception:  # one bad event must not end the call
            log.exception("call %s: failed to handle %s", session.call_id, type(event).__name__)
        return session

    async def _start_call(self, start: Start, connection: Connection) -> CallSession | RealtimeSession:
        config = self.config
        # the webhook names the pipeline (Twilio); otherwise the number called routes it (Exotel)
        wanted = start.custom_parameters.get("pipeline") or config.pipeline_for_number(start.to_number)
        name = wanted if wanted in config.pipelines else config.default_pipeline
        if wanted and wanted != name:
            log.warning("call %s: unknown pipeline %r, using %r", start.call_sid, wanted, name)
        call_id = start.call_sid or start.stream_sid
        reused = call_id in self._ended_ids  # a carrier never reuses one: keep the calls' records apart
        if reused:
            call_id = f"{call_id}#{self._ended_ids[call_id] + 1}"
        if call_id in self.calls:  # one active call per id: a second connection must not merge into it
            raise DuplicateCall(f"call {call_id}: refused a second connection for a call already active")
        self.ops.check_admission(call_id, name)
        CALL_ID.set(call_id)  # this connection's task and every task the call starts: log lines name it
        if reused:
            log.warning("call %s: this id was used by an earlier call of this process; recorded as %s",
                        call_id.partition("#")[0], call_id)
        answering, arm = name, None
        split = config.pipelines[name]
        if isinstance(split, SplitPipelineConfig):  # A/B across pipelines (kinds): the call is drawn to one
            arm, answering = draw_pipeline(split, self.rng)
            chosen = {each.name: each.pipeline for each in split.variants}  # a browser call may pick its arm
            if start.custom_parameters.get("arm") in chosen:
                arm = start.custom_parameters["arm"]
                answering = chosen[arm]
        variant, call_providers = self.pipelines[answering].pick(self.rng)  # A/B: drawn once, for the call
        variant = "+".join(each for each in (arm, variant) if each) or None
        shadows = self.pipelines[answering].shadows
        session: CallSession | RealtimeSession
        if isinstance(call_providers, RealtimeProviders):  # kind: realtime (pipeline/realtime.py)
            session = RealtimeSession(call_id, config.pipelines[answering], call_providers,
                                      connection.link(start), on_turn=self.on_turn, variant=variant)
        else:
            session = CallSession(
                call_id=call_id,
                config=config.pipelines[answering],
                providers=call_providers,
                link=connection.link(start),
                on_turn=self.on_turn,
                shadows=CallShadows(self.shadow_runner, shadows, call_id) if shadows else None,
                variant=variant,
                lines=self.lines,
            )
        if variant is not None:
            log.info("call %s: variant %s", call_id, variant)
        self.calls[call_id] = session
        self._idle.clear()
        numbers = {"from_number": (start.custom_parameters.get("from") or start.from_number)[:NUMBER_CHARS],
                   "to_number": start.custom_parameters.get("to", start.to_number)[:NUMBER_CHARS]}
        self.hub.call_started(call_id, name, **numbers, carrier=connection.carrier, variant=variant)
        self.ops.call_started(call_id, connection.carrier, name)
        if self.writer is not None:
            params = start.custom_parameters
            evals = {key: params[key] for key in EVAL_TAGS if params.get(key)}
            self.writer.call_started(call_id, name, **numbers, carrier=connection.carrier, variant=variant,
                                     eval_tags=evals or None,  # a call `switchboard eval` placed
                                     config_version=(self.versions.get(answering, ""), self.config_file))
        log.info("call %s: stream %s started on pipeline %r", call_id, start.stream_sid, name)
        session.call_info.update(  # for the context webhook (both engines)
            {"from": numbers["from_number"], "to": numbers["to_number"], "pipeline": answering,
             "carrier": connection.carrier})
        session.answered_by = start.custom_parameters.get("answered_by") or None  # machine detection
        await session.start()
        return session

    def _remember_ended(self, call_id: str) -> None:
        base, _, reuse = call_id.partition("#")
        self._ended_ids[base] = int(reuse) if reuse.isdigit() else 1
        self._ended_ids.move_to_end(base)
        while len(self._ended_ids) > REMEMBERED_CALL_IDS:
            self._ended_ids.popitem(last=False)

    async def _end(self, session: CallSession) -> None:
        summary: dict = {}
        try:
            summary = await session.close()
            if self.writer is not None:
                self.writer.call_ended(session.call_id, summary)
        finally:  # only once the call's record is final does it leave the active calls
            self.calls.pop(session.call_id, None)
            self._remember_ended(session.call_id)
            self.hub.call_ended(session.call_id, summary)
            self.ops.call_ended(session)
            if not self.calls:
                self._idle.set()

    async def wait_idle(self) -> None:
        """Until no call is active: every call that started has ended and its last turn is recorded."""
        await self._idle.wait()

    async def start_tools(self) -> None:
        """Connect to the MCP servers and list their tools: one that can't be reached (unless optional)
        or a listed name that is another tool's is a StartupError naming it."""
        if self.mcp is None:
            return
        try:
            await self.mcp.start()
            boxes = [each.tools for each in self.pipelines.values() if each.tools is not None]
            clashes = [line for box in boxes for line in box.clashes()]
            if clashes:
                raise StartupError("; ".join(dict.fromkeys(clashes)))
        except BaseException:
            await self.mcp.aclose()
            raise

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "active_calls": len(self.calls)})

    async def warm(self) -> None:
        """Build heavy provider state (recogniser decoders) now, not on the first caller's first word."""
        for stt in dict.fromkeys(stt for each in self.pipelines.values() for stt in each.all_stt()):
            await stt.warm()
        if any(isinstance(p, PipelineConfig) and p.kind == "cascade" and p.turn.audio_model == "smart-turn-v3"
               for p in self.config.pipelines.values()):  # a realtime model does its own turn-taking
            await asyncio.to_thread(smart_turn.warm)  # a missing model fails here, at start-up
        self.warm_lines()

    def warm_lines(self) -> None:
        """Embedded voices say every pipeline's greeting into memory now, in the background (cloud voices
        fill at the first call that needs a line: pipeline/lines.py)."""
        for name, pipeline in self.pipelines.items():
            config = self.config.pipelines.get(name)
            if isinstance(config, PipelineConfig) and config.kind == "cascade" and greeting_is_fixed(config):
                chains = [[arm.provider, *pipeline.fallback_tts] for arm in pipeline.tts]
                if (task := self.lines.warm(chains, [config.greeting])) is not None:
                    self._background.add(task)
                    task.add_done_callback(self._background.discard)


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
# openai --server-ws websockets-sansio,websockets`; figures in bench/README.md) the two cost the same
# within the noise, so the supported one. (wsproto, the third, is not installed.)
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
