"""A fake Plivo Voice API (v1 Call), from Plivo's API reference: make a call (`POST
/v1/Account/{auth_id}/Call/`, 201 `{"message": "call fired", "request_uuid"}`), hang up (`DELETE
…/Call/{call_uuid}/`, 204), transfer (`POST …/Call/{call_uuid}/` with `legs`, `aleg_url`, 202
`{"message": "call transferred"}`); 404 `{"error": "not found"}` for a call that has ended.

Serve `FakePlivo().app()` with `server.running` and point Switchboard at it with
`PLIVO_API_BASE=http://127.0.0.1:<port>`. Every request is recorded (method, path, JSON body, basic auth).

A call placed with `machine_detection` (true | hangup), `machine_detection_time` (2,000-10,000 ms),
`machine_detection_url` and `_method`: Plivo listens in the background and, when it hears a machine,
requests that URL ("Asynchronous machine detection": `From`, `To`, `Machine` true, `RequestUUID`,
`ALegRequestUUID`, `CallUUID`, `IfMachine` continue | hangup, `Direction` outbound, `ALegUUID`, `Event`
MachineDetection, `CallStatus` in-progress), signed V3 like every Plivo webhook: `machine_detected`.
Nothing is sent for a person.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.plivo_side import v3_signature


@dataclass
class Recorded:
    method: str
    path: str
    body: dict[str, Any]
    auth: tuple[str, str] | None


@dataclass
class FakePlivo:
    status: int | None = None  # answer every request with this error instead (404, 500 ...)
    requests: list[Recorded] = field(default_factory=list)
    placed: list[str] = field(default_factory=list)  # the request_uuid of each call placed

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/v1/Account/{account}/Call/", self._create, methods=["POST"]),
            Route("/v1/Account/{account}/Call/{call}/", self._call, methods=["POST", "DELETE"]),
        ])

    async def _record(self, request: Request) -> Recorded:
        body = await request.json() if await request.body() else {}
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        auth = None
        if scheme == "Basic":
            user, _, password = base64.b64decode(encoded).decode().partition(":")
            auth = (user, password)
        recorded = Recorded(request.method, request.url.path, body, auth)
        self.requests.append(recorded)
        return recorded

    def _error(self) -> Response:
        assert self.status is not None
        error = "not found" if self.status == 404 else "injected failure"
        return JSONResponse({"api_id": secrets.token_hex(8), "error": error}, status_code=self.status)

    async def _create(self, request: Request) -> Response:
        await self._record(request)
        if self.status is not None:
            return self._error()
        self.placed.append(secrets.token_hex(8) + "-request")
        return JSONResponse({"api_id": secrets.token_hex(8), "message": "call fired",
                             "request_uuid": self.placed[-1]}, status_code=201)

    async def _call(self, request: Request) -> Response:
        await self._record(request)
        if self.status is not None:
            return self._error()
        if request.method == "DELETE":
            return Response(status_code=204)
        return JSONResponse({"api_id": secrets.token_hex(8), "message": "call transferred"}, status_code=202)

    async def machine_detected(self, call_uuid: str, auth_token: str) -> int:
        """Plivo heard a machine on the last call placed (whose leg is `call_uuid`): request its
        `machine_detection_url`, signed; returns the status the application answered."""
        placed = next(each for each in reversed(self.requests) if each.path.endswith("/Call/"))
        body = placed.body
        form = {"From": body.get("from", ""), "To": body.get("to", ""), "Machine": "true",
                "RequestUUID": self.placed[-1], "ALegRequestUUID": self.placed[-1], "CallUUID": call_uuid,
                "IfMachine": "hangup" if body.get("machine_detection") == "hangup" else "continue",
                "Direction": "outbound", "ALegUUID": call_uuid, "Event": "MachineDetection",
                "CallStatus": "in-progress"}
        url, nonce = body["machine_detection_url"], str(secrets.randbelow(10**20))
        headers = {"X-Plivo-Signature-V3": v3_signature(auth_token, url, form, nonce),
                   "X-Plivo-Signature-V3-Nonce": nonce}
        async with httpx.AsyncClient() as http:
            response = await http.post(url, data=form, headers=headers)
        return response.status_code
