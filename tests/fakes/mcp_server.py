"""A real MCP server (the official `mcp` SDK's `MCPServer`) with a restaurant's tools, for the MCP tests.

Served over streamable HTTP in the test's own event loop (`McpFake.app()`, under `server.running`), or
over stdio as a subprocess (`python -m tests.fakes.mcp_server`), or over HTTP as a subprocess
(`python -m tests.fakes.mcp_server --http PORT`: a server a test can kill). Its tools:

- `opening_hours(day)`: text content ("Open 12:00-22:00 on friday.")
- `book_table(party_size, time)`: structured content ({"reference": "MCP-1", ...})
- `broken()`: a tool error (`is_error`), "the kitchen is on fire"
- `slow(seconds)`: answers after `seconds`
- `die()`: the stdio server exits at once, mid-call (over HTTP the test stops the server instead)

`headers` records the Authorization header of every HTTP request; `add_tool` adds a tool and tells
listening clients that the list changed. The stdio server reads MCP_FAKE_TOOLS (comma-separated
names) to offer only some tools, and MCP_FAKE_GREETING for the text `opening_hours` starts with.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.shared.subscriptions import ToolsListChanged
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send


def build(only: set[str] | None = None, greeting: str = "") -> tuple[MCPServer, InMemorySubscriptionBus]:
    bus = InMemorySubscriptionBus()
    server: MCPServer = MCPServer("restaurant-tools", subscriptions=bus)
    bookings: list[dict[str, Any]] = []

    def opening_hours(day: str) -> str:
        """When the restaurant is open on a given day."""
        return f"{greeting}Open 12:00-22:00 on {day}."

    def book_table(party_size: int, time: str) -> dict[str, Any]:
        """Book a table for a party at a time."""
        booking = {"reference": f"MCP-{len(bookings) + 1}", "party_size": party_size, "time": time}
        bookings.append(booking)
        return booking

    def broken() -> str:
        """Always fails."""
        raise RuntimeError("the kitchen is on fire")

    async def slow(seconds: float) -> str:
        """Answers after a while."""
        await asyncio.sleep(seconds)
        return "finally"

    def die() -> str:
        """Ends the server process mid-call."""
        sys.stdout.flush()
        os._exit(1)

    for tool in (opening_hours, book_table, broken, slow, die):
        if only is None or tool.__name__ in only:
            server.add_tool(tool)
    return server, bus


class McpFake:
    """The HTTP server: its MCP app, what its clients sent, and a list that can change."""

    def __init__(self) -> None:
        self.server, self.bus = build()
        self.authorization: list[str | None] = []
        self.url = ""

    def app(self) -> ASGIApp:
        inner: Starlette = self.server.streamable_http_app()

        async def recording(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                headers = dict(scope["headers"])
                self.authorization.append((headers.get(b"authorization") or b"").decode() or None)
            await inner(scope, receive, send)

        return _WithLifespan(recording, inner)

    async def add_tool(self, name: str, answer: str) -> None:
        def added() -> str:
            return answer

        self.server.add_tool(added, name=name, description=f"Says {answer!r}.")
        await self.bus.publish(ToolsListChanged())


class _WithLifespan:
    """`recording` for HTTP, the MCP app itself for its lifespan (it runs the session manager)."""

    def __init__(self, http: ASGIApp, app: Starlette) -> None:
        self.http, self.app, self.state = http, app, app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await (self.app if scope["type"] == "lifespan" else self.http)(scope, receive, send)


def main() -> None:
    """stdio, or `--http PORT`: streamable HTTP on 127.0.0.1:PORT (a server a test can kill)."""
    names = os.environ.get("MCP_FAKE_TOOLS")
    server, _ = build(set(names.split(",")) if names else None, os.environ.get("MCP_FAKE_GREETING", ""))
    if sys.argv[1:2] == ["--http"]:
        import uvicorn

        app = server.streamable_http_app()
        uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
    else:
        asyncio.run(server.run_stdio_async())


if __name__ == "__main__":
    main()
