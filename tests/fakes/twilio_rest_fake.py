"""A fake Twilio REST API (2010-04-01 Calls): Switchboard's hang-up and dial, answered as Twilio does.

Serve `FakeTwilio().app()` with `server.running` and point Switchboard at it with
`TWILIO_API_BASE=http://127.0.0.1:<port>`. It records every request (path, form fields, basic-auth
user and password) and answers with Twilio's JSON shapes, or with the error set in `status`.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class Recorded:
    path: str
    form: dict[str, str]
    auth: tuple[str, str] | None


@dataclass
class FakeTwilio:
    status: int | None = None  # answer every request with this error (404, 500, 400 ...) instead
    error_code: int = 20404  # Twilio's own error code in the error body
    requests: list[Recorded] = field(default_factory=list)

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/2010-04-01/Accounts/{account}/Calls.json", self._create, methods=["POST"]),
            Route("/2010-04-01/Accounts/{account}/Calls/{call}.json", self._update, methods=["POST"]),
        ])

    async def _record(self, request: Request) -> Recorded:
        form = {key: str(value) for key, value in (await request.form()).items()}
        auth = None
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme == "Basic":
            user, _, password = base64.b64decode(encoded).decode().partition(":")
            auth = (user, password)
        recorded = Recorded(request.url.path, form, auth)
        self.requests.append(recorded)
        return recorded

    def _error(self, request: Request) -> Response:
        assert self.status is not None
        message = "The requested resource was not found" if self.status == 404 else "injected failure"
        return JSONResponse({
            "code": self.error_code, "message": f"{message}: {request.url.path}",
            "more_info": f"https://www.twilio.com/docs/errors/{self.error_code}", "status": self.status,
        }, status_code=self.status)

    def _call(self, account: str, sid: str, status: str, form: dict[str, str]) -> dict[str, Any]:
        return {
            "sid": sid, "account_sid": account, "status": status, "to": form.get("To"),
            "from": form.get("From"), "direction": "outbound-api", "api_version": "2010-04-01",
            "uri": f"/2010-04-01/Accounts/{account}/Calls/{sid}.json",
        }

    async def _create(self, request: Request) -> Response:
        recorded = await self._record(request)
        if self.status is not None:
            return self._error(request)
        sid = "CA" + secrets.token_hex(16)
        return JSONResponse(self._call(request.path_params["account"], sid, "queued", recorded.form), 201)

    async def _update(self, request: Request) -> Response:
        recorded = await self._record(request)
        if self.status is not None:
            return self._error(request)
        account, sid = request.path_params["account"], request.path_params["call"]
        return JSONResponse(self._call(account, sid, recorded.form.get("Status", "in-progress"), {}))
