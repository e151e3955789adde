"""A fake HTTP tool server (a booking API, a context webhook) with fault injection, served on 127.0.0.1.

Every request is recorded (method, path, query, headers, body). `mode` chooses the answer: "ok" (the
booking as JSON, or `answer` if set), "fail" (HTTP 500 with a JSON error), "malformed" (200 with text
that is not JSON), "huge" (200 with ~2 MB of JSON), "garbage" (200 with a JSON array, not an object).
`delay_s` holds the answer back; a client that goes away meanwhile is counted in `disconnected`.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class ToolServer:
    mode: str = "ok"
    delay_s: float = 0.0
    answer: Any = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    disconnected: int = 0
    answered: int = 0

    def app(self) -> Starlette:
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        return Starlette(routes=[Route("/{path:path}", self._handle, methods=methods)])

    async def _handle(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        self.requests.append({"method": request.method, "path": request.url.path,
                              "query": dict(request.query_params),
                              "raw_query": request.url.query, "headers": dict(request.headers),
                              "body": body})
        waited = 0.0
        while waited < self.delay_s:
            if await request.is_disconnected():
                self.disconnected += 1
                return Response(status_code=499)
            await asyncio.sleep(0.02)
            waited += 0.02
        self.answered += 1
        if self.mode == "fail":
            return JSONResponse({"error": "the kitchen is on fire"}, status_code=500)
        if self.mode == "malformed":
            return Response('{"booking": {"id": "B-1", ', media_type="application/json")
        if self.mode == "huge":
            return JSONResponse({"rows": ["x" * 100] * 20_000})  # 2 MB, parsed: the LLM gets the cut rows
        if self.mode == "enormous":
            return Response(b"[" + b'"xxxxxxxxxx",' * 500_000 + b"0]", media_type="application/json")
        if self.mode == "garbage":
            return JSONResponse(["not", "an", "object"])
        if self.answer is not None:
            return JSONResponse(self.answer)
        booking = body if isinstance(body, dict) else {}
        return JSONResponse({"booking": {"id": f"B-{len(self.requests)}", **booking}, "status": "confirmed"})
