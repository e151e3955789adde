"""The dashboard's routes: pages, the read-only JSON API and the live event stream.

GET  /login, POST /login, POST /logout     the token form (web/auth.py)
GET  /dashboard                            live calls (Server-Sent Events) and the recent calls
GET  /dashboard/calls/{id}                 one call: turns, timings, vendors, errors, its recording
GET  /dashboard/report                     the vendor comparison for a time range / pipeline / variant
GET  /dashboard/static/{name}              the page's CSS and JS (no CDN)
GET  /api/calls?since=&pipeline=&limit=    recent calls, newest first; active ones first, flagged live
GET  /api/calls/{id}                       a call with its turns and shadow results
GET  /api/calls/{id}/recording             the call's WAV, if the store recorded one and it still exists
GET  /api/report?since=&pipeline=&variant= `switchboard report --json` for those filters
GET  /api/live                             text/event-stream: a snapshot, then call_started/turn/call_ended
GET  /dashboard/evals[/{run}], /api/evals[/{run}]   eval runs and one run per arm (web/evals.py)

Every page and API route goes through `Auth` (SWITCHBOARD_API_TOKEN); the static files do not.
Without a call store (store_url None) the live view works and the store's pages say the store is off.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from switchboard.report import Pricing, build_report, parse_since, report_json
from switchboard.store.calls import CallStore
from switchboard.web import pages
from switchboard.web.auth import Auth
from switchboard.web.evals import EvalViews
from switchboard.web.live import LiveHub, jsonable

log = logging.getLogger("switchboard.web")

STATIC = Path(__file__).parent / "static"
STATIC_TYPES = {"dashboard.css": "text/css; charset=utf-8", "dashboard.js": "text/javascript; charset=utf-8",
                "talk.js": "text/javascript; charset=utf-8"}
SECURITY_HEADERS = {
    # Scripts only from this server (no inline script); styles may be inline (the waterfall's bar widths);
    # images inline (the report's PNG charts are data: URLs).
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data:; media-src 'self'; connect-src 'self'; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
MAX_LIMIT = 500
STORE_OFF = "The call store is off (no database_url / store_url): only live calls are shown."
Endpoint = Callable[[Request], Awaitable[Response]]
# places an outbound call: (to, pipeline or None, from or None) -> (HTTP status, the JSON answer); 201: placed
# (to, pipeline, from, carrier) -> (HTTP status, the placed call or the error)
Dialer = Callable[[str, str | None, str | None, str], Awaitable[tuple[int, dict[str, Any]]]]


class BadQuery(ValueError):
    """A query parameter the API cannot use; its message says which and what is expected."""


def _since(request: Request) -> datetime | None:
    text = (request.query_params.get("since") or "").strip()
    if not text or text == "all":
        return None
    try:
        return parse_since(text)
    except ValueError as exc:
        raise BadQuery(str(exc).replace("--since", "since")) from None


def _limit(request: Request, default: int = 50) -> int:
    text = request.query_params.get("limit")
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadQuery(f"limit: expected a whole number from 1 to {MAX_LIMIT}, got {text!r}") from None
    if not 1 <= value <= MAX_LIMIT:
        raise BadQuery(f"limit: expected a whole number from 1 to {MAX_LIMIT}, got {value}")
    return value


def _param(request: Request, name: str) -> str | None:
    return (request.query_params.get(name) or "").strip() or None


def _sse(event: dict[str, Any]) -> str:
    return "data: " + json.dumps(event, default=str, separators=(",", ":")) + "\n\n"


class Dashboard:
    """The routes, bound to the app's live hub, auth and (optional) call store."""

    def __init__(
        self,
        hub: LiveHub,
        auth: Auth,
        store: CallStore | None,
        pipelines: Sequence[str] = (),
        pricing: Pricing | None = None,
        heartbeat_s: float = 15.0,
        max_stream_s: float = 60.0,
        dialer: Dialer | None = None,
        talk: Mapping[str, Sequence[str]] | None = None,
        carriers: Sequence[str] = ("twilio",),
    ) -> None:
        self.hub = hub
        self.auth = auth
        self.store = store
        self.pipelines = list(pipelines)
        self.pricing = pricing
        self.heartbeat_s = heartbeat_s
        self.max_stream_s = max_stream_s  # each event stream ends after this; the browser reconnects
        self.dialer = dialer  # places an outbound call, as POST /api/calls does (None: no form)
        self.talk = talk  # pipeline -> its split's arms: "Talk to it" buttons (telephony/webrtc); None: off
        self.carriers = list(carriers)  # those that can place calls, the default first

    def routes(self) -> list[Route]:
        page, api = self._page, self._api
        return [
            Route("/login", self._headers(self.auth.login), methods=["GET", "POST"]),
            Route("/logout", self.auth.logout, methods=["POST"]),
            Route("/dashboard", page(self.dashboard)),
            Route("/dashboard/", page(self.dashboard)),
            Route("/dashboard/calls/{call_id:path}", page(self.call_page)),
            Route("/dashboard/report", page(self.report_page)),
            Route("/dashboard/dial", page(self.dial), methods=["POST"]),
            Route("/dashboard/static/{name}", self.static),
            Route("/api/calls", api(self.api_calls), methods=["GET"]),
            Route("/api/calls/{call_id}/recording", api(self.api_recording), methods=["GET"]),
            Route("/api/calls/{call_id}", api(self.api_call), methods=["GET"]),
            Route("/api/report", api(self.api_report), methods=["GET"]),
            Route("/api/live", api(self.api_live), methods=["GET"]),
            *EvalViews(self).routes(),
        ]

    # --- guards --------------------------------------------------------------------------------------------

    def _headers(self, endpoint: Endpoint) -> Endpoint:
        async def with_headers(request: Request) -> Response:
            response = await endpoint(request)
            response.headers.update(SECURITY_HEADERS)
            return response

        return with_headers

    def _page(self, endpoint: Endpoint) -> Endpoint:
        async def guarded(request: Request) -> Response:
            if not self.auth.allows(request):
                return self.auth.denied(request, page=True)
            try:
                response = await endpoint(request)
            except Exception as exc:  # the database failed under us: say so, the calls go on
                log.exception("%s: failed", request.url.path)
                response = HTMLResponse(pages.message_page(
                    "Unavailable", f"Could not build this page ({type(exc).__name__}); the server log says "
                    "why.", not self.auth.open), status_code=503)
            response.headers.update(SECURITY_HEADERS)
            return response

        return guarded

    def _api(self, endpoint: Endpoint) -> Endpoint:
        async def guarded(request: Request) -> Response:
            if not self.auth.allows(request):
                return self.auth.denied(request, page=False)
            try:
                response = await endpoint(request)
            except BadQuery as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            except Exception as exc:  # the database failed under us: say so, the calls go on
                log.exception("%s: failed", request.url.path)
                return JSONResponse({"error": f"could not read the call store: {type(exc).__name__}"},
                                    status_code=503)
            response.headers.setdefault("Cache-Control", "no-store")
            return response

        return guarded

    def _store_problem(self) -> str | None:
        if self.store is None:
            return STORE_OFF
        if not self.store.is_open:
            return "The call store is not open yet (is the database reachable?); try again shortly."
        return None

    def _live_calls(self, since: datetime | None = None, pipeline: str | None = None) -> list[dict[str, Any]]:
        out = []
        for call in self.hub.calls.values():
            if pipeline is not None and call["pipeline"] != pipeline:
                continue
            if since is not None and datetime.fromisoformat(call["started_at"]) < since:
                continue
            out.append({"id": call["id"], "pipeline": call["pipeline"], "variant": call["variant"],
                        "from_number": call["from"], "to_number": call["to"], "carrier": call["carrier"],
                        "started_at": call["started_at"], "ended_at": None, "live": True,
                        "summary": {"turns": len(call["turns"])}, "has_recording": False})
        return out

    async def _has_recording(self, call: dict[str, Any]) -> bool:
        path = call.get("recording")
        return bool(path) and await asyncio.to_thread(Path(path).is_file)  # a stat: off the event loop

    async def _public(self, call: dict[str, Any], live: bool) -> dict[str, Any]:
        """A stored call for the API: whether it has a recording (served by /recording), not its path."""
        out = {k: v for k, v in call.items() if k != "recording"}
        if isinstance(out.get("summary"), dict):
            out["summary"] = {k: v for k, v in out["summary"].items() if k != "recording"}
        out.update(live=live, has_recording=await self._has_recording(call))
        return out

    # --- pages ---------------------------------------------------------------------------------------------

    async def dashboard(self, request: Request) -> Response:
        problem = self._store_problem()
        recent = None
        if problem is None:
            try:
                recent = [c for c in await self.store.recent_calls(limit=20)  # type: ignore[union-attr]
                          if c["id"] not in self.hub.calls]
            except Exception as exc:
                log.error("dashboard: could not read recent calls: %s: %s", type(exc).__name__, exc)
                problem = f"Could not read the call store: {type(exc).__name__}."
        placed = request.query_params.get("placed", "")
        dial = pages.dial_form(self.pipelines, note=placed, carriers=self.carriers) if self.dialer else ""
        talk = pages.talk_section(self.talk) if self.talk else ""
        return HTMLResponse(pages.dashboard_page(recent, problem or "", logout=not self.auth.open,
                                                 dial=dial, talk=talk))

    async def dial(self, request: Request) -> Response:
        """The "place a call" form: the same token and rules as POST /api/calls; errors shown on the page."""
        form = await request.form()
        fields = {key: str(form.get(key) or "").strip()
                  for key in ("to", "pipeline", "from", "token", "carrier")}
        if self.dialer is None:
            status, answer = 404, {"error": "placing calls is not available on this server"}
        elif not self.auth.token_ok(fields["token"]):
            status, answer = (403 if self.auth.open else 401), {"error": (
                f"the call API is off: set {self.auth.env_name} on the server" if self.auth.open
                else "wrong API token")}
        else:
            status, answer = await self.dialer(fields["to"], fields["pipeline"] or None,
                                               fields["from"] or None, fields["carrier"] or self.carriers[0])
        if status == 201:
            placed = (f"Placed call {answer['call_sid']} to {answer['to']} on pipeline {answer['pipeline']}: "
                      "it appears under Live calls once it is answered.")
            return RedirectResponse(f"/dashboard?placed={quote(placed)}#dial", status_code=303)
        dial = pages.dial_form(self.pipelines, error=answer.get("error", "could not place the call"),
                               to=fields["to"], carriers=self.carriers)
        return HTMLResponse(pages.dashboard_page(None, "", logout=not self.auth.open, dial=dial),
                            status_code=status)

    async def call_page(self, request: Request) -> Response:
        call_id = request.path_params["call_id"]
        live = self.hub.calls.get(call_id)
        call = None
        problem = self._store_problem()
        if problem is None:
            call = await self.store.get_call(call_id)  # type: ignore[union-attr]
        if call is None and live is not None:
            call = {**live, "turns": list(live["turns"])}
        if call is None:
            message = problem or "No such call in the call store."
            return HTMLResponse(pages.message_page(f"Call {call_id}", message, not self.auth.open),
                                status_code=404)
        page = pages.call_page(call, live is not None, await self._has_recording(call),
                               logout=not self.auth.open)
        return HTMLResponse(page)

    async def report_page(self, request: Request) -> Response:
        since_text = request.query_params.get("since") or "24h"
        pipeline = _param(request, "pipeline")
        variant = _param(request, "variant")
        form = pages.report_form(since_text, pipeline or "", variant or "", self.pipelines)
        problem = self._store_problem()
        if problem is not None:
            return HTMLResponse(pages.report_page(form, f'<p class="note">{pages.esc(problem)}</p>',
                                                  not self.auth.open))
        try:
            since = None if since_text == "all" else parse_since(since_text)
        except ValueError as exc:
            return HTMLResponse(pages.report_page(form, f'<p class="error">{pages.esc(exc)}</p>',
                                                  not self.auth.open), status_code=400)
        turns = await self.store.query_turns(since, pipeline, variant)  # type: ignore[union-attr]
        shadows = await self.store.query_shadows(since, pipeline, variant)  # type: ignore[union-attr]
        filters = {"since": since.isoformat() if since else None, "pipeline": pipeline, "variant": variant}
        report = build_report(turns, shadows, self.pricing, filters=filters)
        from switchboard.report.html import report_fragment

        content = await asyncio.to_thread(report_fragment, report, turns, shadows)
        return HTMLResponse(pages.report_page(form, content, not self.auth.open))

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name == "report.css":  # the report's own styles (pipeline/report_html.py)
            from switchboard.report.html import REPORT_CSS

            return Response(REPORT_CSS, media_type="text/css; charset=utf-8",
                            headers={"Cache-Control": "no-cache"})
        if name == "evals.css":  # an eval run's styles (report/evals_html.py)
            from switchboard.report.evals_html import EVALS_CSS

            return Response(EVALS_CSS, media_type="text/css; charset=utf-8",
                            headers={"Cache-Control": "no-cache"})
        if name not in STATIC_TYPES:
            return Response("not found", status_code=404, media_type="text/plain")
        return FileResponse(STATIC / name, media_type=STATIC_TYPES[name],
                            headers={"Cache-Control": "no-cache"})

    # --- the JSON API --------------------------------------------------------------------------------------

    async def api_calls(self, request: Request) -> Response:
        since, pipeline, limit = _since(request), _param(request, "pipeline"), _limit(request)
        live = self._live_calls(since, pipeline)
        problem = self._store_problem()
        stored: list[dict[str, Any]] = []
        if problem is None:
            live_ids = {call["id"] for call in live}
            for call in await self.store.recent_calls(limit, since, pipeline):  # type: ignore[union-attr]
                if call["id"] in live_ids or call["id"] in self.hub.calls:
                    continue
                stored.append(await self._public(call, live=False))
        calls = (live + stored)[:limit]
        return JSONResponse(jsonable({"calls": calls, "store": "off" if self.store is None else "on",
                                      **({"note": problem} if problem else {})}))

    async def api_call(self, request: Request) -> Response:
        call_id = request.path_params["call_id"]
        live = self.hub.calls.get(call_id)
        call = None
        if self._store_problem() is None:
            call = await self.store.get_call(call_id)  # type: ignore[union-attr]
        if call is None and live is not None:
            call = {"id": call_id, "pipeline": live["pipeline"], "variant": live["variant"],
                    "from_number": live["from"], "to_number": live["to"], "carrier": live["carrier"],
                    "started_at": live["started_at"], "ended_at": None, "summary": None,
                    "turns": list(live["turns"]), "shadows": []}
        if call is None:
            return JSONResponse({"error": f"no call {call_id!r}"}, status_code=404)
        return JSONResponse(jsonable(await self._public(call, live=live is not None)))

    async def api_recording(self, request: Request) -> Response:
        """Only a path the store recorded for this call is ever served."""
        call_id = request.path_params["call_id"]
        call = None
        if self._store_problem() is None:
            call = await self.store.get_call(call_id)  # type: ignore[union-attr]
        if call is None or not await self._has_recording(call):
            return JSONResponse({"error": f"no recording for call {call_id!r}"}, status_code=404)
        return FileResponse(call["recording"], media_type="audio/wav",
                            filename=f"{call_id}.wav", content_disposition_type="inline")

    async def api_report(self, request: Request) -> Response:
        since, pipeline, variant = _since(request), _param(request, "pipeline"), _param(request, "variant")
        problem = self._store_problem()
        if problem is not None:
            return JSONResponse({"error": problem}, status_code=503)
        turns = await self.store.query_turns(since, pipeline, variant)  # type: ignore[union-attr]
        shadows = await self.store.query_shadows(since, pipeline, variant)  # type: ignore[union-attr]
        filters = {"since": since.isoformat() if since else None, "pipeline": pipeline, "variant": variant}
        return JSONResponse(report_json(build_report(turns, shadows, self.pricing, filters=filters)))

    async def api_live(self, request: Request) -> Response:
        return StreamingResponse(self._events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def _events(self) -> AsyncIterator[str]:
        # subscribe and snapshot with no await in between: no event is both in the snapshot and queued
        subscriber = self.hub.subscribe()
        try:
            yield "retry: 2000\n" + _sse(self.hub.snapshot())
            ends = time.monotonic() + self.max_stream_s
            beat = time.monotonic() + self.heartbeat_s
            while not self.hub.closed and (now := time.monotonic()) < ends:
                try:
                    event = await asyncio.wait_for(subscriber.next(), max(0.0, min(beat, ends) - now))
                except TimeoutError:
                    if time.monotonic() >= beat:
                        yield ": heartbeat\n\n"
                        beat = time.monotonic() + self.heartbeat_s
                    continue
                if event.get("type") == "closed":
                    return
                yield _sse(event)
        finally:
            self.hub.unsubscribe(subscriber)
