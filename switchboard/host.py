"""One server process's calls: `CallHost` runs the call loop every carrier's routes share.

`CallHost.serve_stream` is the loop over one carrier connection (receive with a deadline, the carrier's
parse, dispatch to the call; a malformed frame logged within a budget and dropped, the call going on); a
`start` opens a `CallSession` (or `RealtimeSession`) on the pipeline the call is routed to, with its A/B
variant drawn and its shadows, held first for a machine detection verdict when the start asks for one;
the end records it. `server.create_app` builds one host and composes the carriers' routes around it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from switchboard.audio import smart_turn
from switchboard.config import Config, PipelineConfig
from switchboard.config.schema import SplitPipelineConfig
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
from switchboard.core.metrics import TurnMetrics
from switchboard.core.verdicts import HeldStart, MachineVerdicts
from switchboard.ops import Operations, Refused
from switchboard.ops.reload import versions
from switchboard.pipeline.call import CallSession
from switchboard.pipeline.lines import LineCache, greeting_is_fixed
from switchboard.pipeline.realtime import RealtimeProviders, RealtimeSession
from switchboard.pipeline.shadow import CallShadows, ShadowRunner
from switchboard.pipeline.variants import PipelineProviders, draw_pipeline
from switchboard.store import StoreWriter
from switchboard.web import LiveHub

if TYPE_CHECKING:
    from switchboard.pipeline.mcp import McpClients

log = logging.getLogger("switchboard.server")  # the call loop's lines, as operators know them

START_TIMEOUT_S = 10.0  # a socket that sends no `start` this long is closed
IDLE_TIMEOUT_S = 300.0  # a call whose socket carries no frame at all this long is over (carriers that
# stop sending while the caller is silent are still endpointed by the tick loop; this only ends the dead)
DROP_WARNINGS = 20  # malformed frames logged one by one per connection; after that a count every 10 s
DROP_SUMMARY_S = 10.0
PROCESS_DROP_WARNINGS = 100  # ...and at most this many one by one per 10 s across all connections
YIELD_EVERY = 32  # messages handled before yielding, so a burst from one call can't starve the others


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
