"""The WebRTC carrier: a browser talks to a pipeline (the dashboard's "Talk to it"), on aiortc.

POST /webrtc/offer   {"sdp": "<the page's offer>", "type": "offer", "pipeline": "name", "arm": "name"?}
                     -> {"sdp": "<our answer>", "type": "answer", "call_id": "…"}; the call then runs
                     on the server's one call loop like a phone call (carrier `webrtc` in the store)
GET  /webrtc/ice     {"iceServers": [...]}: what the page's RTCPeerConnection needs (webrtc.ice_servers)

Both are guarded like the dashboard (SWITCHBOARD_API_TOKEN as a bearer header or the /login session;
open when the token is unset). `arm` picks one arm of a `kind: split` pipeline instead of drawing it.

Audio is Opus at 48 kHz both ways; the pipeline hears and speaks its usual 8 kHz (media.py). Keypad keys
and hang-up come over the page's data channel (wire.py). ICE: host candidates only unless
`webrtc: {ice_servers: [...]}` names STUN/TURN servers; a TURN credential is read from the environment
variable `credential_env` names. No TURN server is shipped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from pydantic import Field, field_validator, model_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from switchboard.core.carrier import Connection
from switchboard.core.errors import MissingCredential
from switchboard.core.settings import Strict
from switchboard.telephony.base import ServeStream

log = logging.getLogger("switchboard.webrtc")

MAX_OFFER_BYTES = 64 * 1024  # a browser's audio-and-data offer is a few KB
ICE_SCHEMES = ("stun:", "turn:", "turns:")


class IceServer(Strict):
    """One STUN or TURN server, as the browser's and the server's RTCPeerConnection take it."""

    urls: list[str] = Field(min_length=1)  # stun:host:3478, turn:host:3478?transport=udp, turns:host:5349
    username: str | None = None  # TURN only
    # the environment variable holding the TURN credential (never the credential itself here)
    credential_env: str | None = None
    credential: str | None = None  # refused: named only to say what to write instead

    @field_validator("urls", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("urls")
    @classmethod
    def _schemes(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(ICE_SCHEMES):
                raise ValueError(f"{url!r} is not a STUN or TURN URL: write stun:host:port, turn:host:port "
                                 "or turns:host:port")
        return urls

    @model_validator(mode="after")
    def _turn_credentials(self) -> IceServer:
        if self.credential is not None:
            raise ValueError("don't write the TURN credential in pipeline.yaml: set credential_env to the "
                             "name of the environment variable that holds it (e.g. credential_env: "
                             "SWITCHBOARD_TURN_CREDENTIAL)")
        turn = any(url.startswith(("turn:", "turns:")) for url in self.urls)
        if turn and not (self.username and self.credential_env):
            raise ValueError("a TURN server needs username and credential_env (the environment variable "
                             "holding its credential), e.g. {urls: [turn:turn.example.com:3478], username: "
                             "switchboard, credential_env: SWITCHBOARD_TURN_CREDENTIAL}")
        if not turn and (self.username or self.credential_env):
            raise ValueError("username and credential_env are for TURN servers (turn: or turns: URLs); "
                             "a STUN server takes only urls")
        return self

    def browser(self) -> dict[str, Any]:
        """As the page's RTCPeerConnection takes it, the credential read from the environment now."""
        entry: dict[str, Any] = {"urls": self.urls}
        if self.credential_env:
            credential = os.environ.get(self.credential_env)
            if not credential:
                raise MissingCredential(f"webrtc.ice_servers: set {self.credential_env} (the TURN credential "
                                        f"for {self.urls[0]})")
            entry.update(username=self.username, credential=credential)
        return entry


class WebRTCConfig(Strict):
    """`webrtc:` in pipeline.yaml: how browser calls find a way to this server."""

    # STUN/TURN for a browser that is not on this machine's network; empty: host candidates only
    ice_servers: list[IceServer] = Field(default_factory=list)


class Guard(Protocol):
    """Who may place a browser call: the dashboard's auth (web/auth.py)."""

    def allows(self, request: Request) -> bool: ...
    def denied(self, request: Request, page: bool) -> Response: ...


class WebRTCCarrier:
    """Browser calls. `pipelines` maps each pipeline a browser may call to its arms (empty unless a split)."""

    name = "webrtc"

    def __init__(self, config: WebRTCConfig, guard: Guard, pipelines: Mapping[str, Sequence[str]]) -> None:
        self.open_routes: list[str] = []  # guarded like the dashboard (its own warning when open)
        self.config, self.guard, self.pipelines = config, guard, pipelines
        for server in config.ice_servers:
            server.browser()  # a TURN credential missing from the environment fails at start-up
        self.calls: set[Any] = set()  # peer.BrowserCall, live
        self._tasks: set[asyncio.Task] = set()

    def routes(self, serve: ServeStream) -> list[BaseRoute]:
        async def offer(request: Request) -> Response:
            if not self.guard.allows(request):
                return self.guard.denied(request, page=False)
            body, problem = await self._offer_body(request)
            if problem:
                return JSONResponse({"error": problem}, status_code=400)
            return await self._answer(request, body, serve)

        async def ice(request: Request) -> Response:
            if not self.guard.allows(request):
                return self.guard.denied(request, page=False)
            return JSONResponse({"iceServers": [server.browser() for server in self.config.ice_servers]},
                                headers={"Cache-Control": "no-store"})

        return [Route("/webrtc/offer", offer, methods=["POST"]), Route("/webrtc/ice", ice, methods=["GET"])]

    async def _offer_body(self, request: Request) -> tuple[dict[str, Any], str]:
        expected = ('expected a JSON object {"sdp": "<offer>", "type": "offer", "pipeline": "name", '
                    '"arm": "name"} ("arm" only for a split)')
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return {}, f"send Content-Type: application/json; {expected}"  # no cross-site form posts
        raw = await request.body()
        if len(raw) > MAX_OFFER_BYTES:
            return {}, f"the offer is {len(raw)} bytes (at most {MAX_OFFER_BYTES})"
        try:
            body = json.loads(raw)
        except ValueError:
            return {}, expected
        if (not isinstance(body, dict) or body.get("type", "offer") != "offer"
                or not isinstance(body.get("sdp"), str) or not body["sdp"].startswith("v=0")
                or not all(isinstance(body.get(key) or "", str) for key in ("pipeline", "arm"))):
            return {}, expected
        pipeline = body.get("pipeline") or ""
        if pipeline not in self.pipelines:
            return {}, f"pipeline {pipeline!r} is not in pipeline.yaml; known: {', '.join(self.pipelines)}"
        arm = body.get("arm") or None
        if arm is not None and arm not in self.pipelines[pipeline]:
            arms = ", ".join(self.pipelines[pipeline]) or "none (it is not a split)"
            return {}, f"{arm!r} is not an arm of {pipeline!r}; its arms: {arms}"
        return body, ""

    async def _answer(self, request: Request, body: dict[str, Any], serve: ServeStream) -> Response:
        from aiortc import RTCIceServer  # aiortc is imported by the first browser call, not at start-up

        from switchboard.telephony.webrtc import peer, wire

        call_id = "RTC" + secrets.token_hex(16)
        caller = f"browser {request.client.host}" if request.client else "browser"
        ice = [RTCIceServer(**server.browser()) for server in self.config.ice_servers]
        call = peer.BrowserCall(call_id, wire.start_frame(call_id, body["pipeline"], body.get("arm"), caller),
                                ice)
        try:
            answer = await call.answer(body["sdp"])
        except Exception as exc:  # an offer aiortc can't take (no audio, bad SDP): say why, keep serving
            await call.close()
            log.warning("webrtc: refused an offer: %s", exc)
            return JSONResponse({"error": f"could not answer the offer: {exc}"}, status_code=400)
        self.calls.add(call)
        task = asyncio.create_task(self._serve(call, serve), name=f"webrtc {call_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        log.info("call %s: browser call from %s to pipeline %r", call_id, caller, body["pipeline"])
        return JSONResponse({"sdp": answer.sdp, "type": answer.type, "call_id": call_id})

    async def _serve(self, call: Any, serve: ServeStream) -> None:
        def link(start: Any) -> Any:
            return call.link

        from switchboard.telephony.webrtc import wire

        try:
            await serve(call, Connection(self.name, wire.parse, link))
        finally:
            self.calls.discard(call)
            await call.close()

    async def aclose(self) -> None:
        """Shutdown: hang up every browser call still open and wait for its loop to end."""
        for call in list(self.calls):
            await call.close()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
