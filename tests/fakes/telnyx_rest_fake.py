"""A fake Telnyx REST API (v2): the Call Control hang-up and other commands (answer, streaming_start,
reject), TeXML call update and TeXML outbound call, as
Telnyx's API reference describes them (developers.telnyx.com/api-reference): bearer auth, JSON bodies,
`{"data": …}` answers (the TeXML ones flat), errors as `{"errors": [{"code", "title", "detail"}]}`.

Serve `FakeTelnyx().app()` with `server.running` and point Switchboard at it with
`TELNYX_API_BASE=http://127.0.0.1:<port>`. It records every request; `status`/`error_code` make every
request fail that way (e.g. 422 / "90018": the call has already ended).

An outbound call placed with `MachineDetection` and `AsyncAmd` runs its TeXML while Telnyx listens;
`machine_detected` then posts the verdict as TeXML's AMD callback does ("TexmlCallAmdWebhook": a form
with `AccountSid`, `AnsweredBy` human | machine_start | machine_end_beep | machine_end_silence |
machine_end_other | fax | unknown, `CallSid` = the call_control_id, `ConnectionId`,
`MachineDetectionDuration`), to the call's `AsyncAmdStatusCallback`, signed like every Telnyx webhook.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.fakes.telnyx_side import signed_headers


@dataclass
class Recorded:
    path: str
    body: dict[str, Any]
    bearer: str


@dataclass
class FakeTelnyx:
    status: int | None = None
    error_code: str = "90018"
    requests: list[Recorded] = field(default_factory=list)
    placed: list[str] = field(default_factory=list)  # the call_sid of each call placed

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/calls/{call_control_id}/actions/hangup", self._hangup, methods=["POST"]),
            Route("/calls/{call_control_id}/actions/{action:str}", self._command, methods=["POST"]),
            Route("/texml/Accounts/{account_sid}/Calls/{call_sid}", self._update, methods=["POST"]),
            Route("/texml/calls/{connection_id}", self._create, methods=["POST"]),
        ])

    async def _record(self, request: Request) -> JSONResponse | None:
        raw = await request.body()
        self.requests.append(Recorded(request.url.path, json.loads(raw) if raw else {},
                                      request.headers.get("authorization", "").removeprefix("Bearer ")))
        if self.status is not None:
            error = {"code": self.error_code, "title": "Call has already ended" if self.error_code == "90018"
                     else "Invalid parameter", "detail": "from the fake"}
            return JSONResponse({"errors": [error]}, status_code=self.status)
        return None

    async def _command(self, request: Request) -> JSONResponse:
        """Call Control's answer, streaming_start, reject…: `{"data": {"result": "ok"}}`."""
        return await self._record(request) or JSONResponse({"data": {"result": "ok"}})

    async def _hangup(self, request: Request) -> JSONResponse:
        return await self._record(request) or JSONResponse({"data": {"result": "ok"}})

    async def _update(self, request: Request) -> JSONResponse:
        failed = await self._record(request)
        return failed or JSONResponse({"account_sid": request.path_params["account_sid"],
                                       "call_sid": request.path_params["call_sid"], "status": "in-progress"})

    async def _create(self, request: Request) -> JSONResponse:
        failed = await self._record(request)
        body = self.requests[-1].body
        placed = {"call_sid": "v3:" + secrets.token_urlsafe(16), "from": body.get("From"),
                  "to": body.get("To"), "status": "queued"}
        self.placed.append(placed["call_sid"])
        return failed or JSONResponse(placed)

    async def machine_detected(self, answered_by: str, key: Ed25519PrivateKey) -> int:
        """Post the verdict on the last call placed to its `AsyncAmdStatusCallback`; returns the status the
        application answered."""
        placed = next(each for each in reversed(self.requests) if each.path.startswith("/texml/calls/"))
        call_sid = self.placed[-1]
        fields = {"AccountSid": "f5586561-8ff0-4291-a51b-c7dfe4139ff9", "AnsweredBy": answered_by,
                  "CallSid": call_sid, "CallSidLegacy": call_sid,
                  "ConnectionId": placed.path.rpartition("/")[2], "MachineDetectionDuration": "2500"}
        body = urlencode(fields).encode()
        async with httpx.AsyncClient() as http:
            response = await http.post(placed.body["AsyncAmdStatusCallback"], content=body,
                                       headers=signed_headers(key, body))
        return response.status_code
