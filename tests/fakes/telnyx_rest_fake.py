"""A fake Telnyx REST API (v2): the Call Control hang-up, TeXML call update and TeXML outbound call, as
Telnyx's API reference describes them (developers.telnyx.com/api-reference): bearer auth, JSON bodies,
`{"data": …}` answers (the TeXML ones flat), errors as `{"errors": [{"code", "title", "detail"}]}`.

Serve `FakeTelnyx().app()` with `server.running` and point Switchboard at it with
`TELNYX_API_BASE=http://127.0.0.1:<port>`. It records every request; `status`/`error_code` make every
request fail that way (e.g. 422 / "90018": the call has already ended).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


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

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/calls/{call_control_id}/actions/hangup", self._hangup, methods=["POST"]),
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
        return failed or JSONResponse(placed)
