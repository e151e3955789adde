"""Tools from MCP servers (pipeline.yaml `tools: - mcp: {...}`), on the official `mcp` SDK.

`McpSession` is one server, one session per process, shared by every call of every pipeline that lists
it: a task holds the SDK's `Client` open (streamable HTTP, or a stdio subprocess), lists the server's
tools on connecting and again whenever the server says they changed (a `subscriptions/listen` stream on
2026-era servers, the `notifications/tools/list_changed` notification on earlier ones), and reconnects
(0.5 s, doubling to 30 s) when the session drops. A call in flight when it drops gets a tool error at
once, never a hang. `McpSource` is one `- mcp:` entry: the session's tools through its `allow`/`deny`,
each with its input schema's validator; `ToolBox` (pipeline/tools.py) offers them and runs them like
HTTP tools. `McpClients` is the host's set of sessions: started (listed) at start-up, where a server that
can't be reached is an error naming it (or, with `optional: true`, a warning and no tools from it until
it answers).

`${VAR}` in a url, its headers and a stdio server's env is read when connecting; nothing of them is
logged (a server is named by its URL template or command as written). The SDK is imported only by a
process whose pipeline.yaml lists an MCP server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
import jsonschema
import mcp_types
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ListenNotSupportedError

from switchboard.config.tools import TOOL_NAME, McpServerConfig, MissingVariable, expand_env
from switchboard.core.errors import StartupError
from switchboard.core.messages import Tool
from switchboard.pipeline.tools import Listed, ToolError

log = logging.getLogger("switchboard.mcp")
logging.getLogger("httpx2").setLevel(logging.WARNING)  # logs every request's URL at INFO

# at start-up: the first connection and listing (a stdio server is a process that must start first)
CONNECT_TIMEOUT_S, STDIO_CONNECT_TIMEOUT_S = 10.0, 30.0
RECONNECT_WAIT_S = 2.0  # a call that finds the session down waits this long for it to come back
FIRST_RETRY_S, LAST_RETRY_S = 0.5, 30.0
_TRANSPORT_ERRORS = (OSError, httpx2.HTTPError, anyio.ClosedResourceError, anyio.BrokenResourceError,
                     anyio.EndOfStream)


class McpUnavailable(StartupError):
    """An MCP server could not be reached or listed at start-up."""


class McpSession:
    """One MCP server's session in this process: connected, listed, kept alive, shared by the calls."""

    def __init__(self, config: McpServerConfig) -> None:
        self.config, self.label = config, config.label
        self.tools: list[mcp_types.Tool] = []
        self.version = 0  # bumped at every listing
        self.failure: str | None = None  # why the last attempt to connect failed
        self._client: Client | None = None
        self._connected = asyncio.Event()
        self._dropped = asyncio.Event()  # the current connection's end (a fresh one per connection)
        self._changed = asyncio.Event()  # the server said its tool list changed
        self._tried = asyncio.Event()  # the first attempt is over, either way
        self._task: asyncio.Task | None = None
        self._closing = False

    async def start(self) -> None:
        """Connect and list the tools; raise McpUnavailable naming the server if that fails. The session
        keeps trying in the background either way."""
        timeout_s = STDIO_CONNECT_TIMEOUT_S if self.config.command is not None else CONNECT_TIMEOUT_S
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"mcp {self.label}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._tried.wait(), timeout_s)
        if not self._connected.is_set():
            reason = self.failure or f"no answer within {timeout_s:g} s"
            raise McpUnavailable(f"MCP server {self.label}: cannot list its tools: {reason}")

    async def aclose(self) -> None:
        self._closing = True
        while self._task is not None and not self._task.done():
            self._task.cancel()  # again if the SDK's task groups swallowed a cancellation mid-connect
            await asyncio.wait([self._task], timeout=1.0)

    async def _run(self) -> None:
        delay = FIRST_RETRY_S
        while not self._closing:
            try:
                async with contextlib.AsyncExitStack() as stack:
                    client = await stack.enter_async_context(self._open())
                    changes = await self._subscribe(client, stack)  # before listing: no change is missed
                    await self._list(client)
                    self._client, self.failure, self._dropped = client, None, asyncio.Event()
                    self._connected.set()
                    self._tried.set()
                    delay = FIRST_RETRY_S
                    log.info("MCP server %s: connected (%s), %d tools", self.label, client.protocol_version,
                             len(self.tools))
                    await self._watch(client, changes)
                    log.warning("MCP server %s: the session dropped; reconnecting", self.label)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failure = _reason(exc)
                log.warning("MCP server %s: %s; trying again in %.1f s", self.label, self.failure, delay)
            finally:
                self._client = None
                self._connected.clear()
                self._dropped.set()  # calls in flight on the old session get their error now
                self._tried.set()
            await asyncio.sleep(delay)
            delay = min(delay * 2, LAST_RETRY_S)

    def _open(self) -> Client:
        config = self.config
        if config.command is not None:
            try:
                env = {name: expand_env(value) for name, value in config.env.items()}
            except MissingVariable as exc:
                raise ToolError(f"environment variable {exc} is not set") from None
            server: Any = StdioServerParameters(command=config.command[0], args=config.command[1:],
                                                env={**os.environ, **env})
        else:
            headers = {name: expand_env(value) for name, value in config.headers.items()}
            http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300))
            server = streamable_http_client(expand_env(config.url or ""), http_client=http)
        return Client(server, message_handler=self._on_message, cache=None)

    async def _on_message(self, message: Any) -> None:
        """Legacy (2025-era) servers announce a changed list with a notification on the session."""
        if getattr(message, "method", None) == "notifications/tools/list_changed":
            self._changed.set()

    async def _list(self, client: Client) -> None:
        tools: list[mcp_types.Tool] = []
        cursor: str | None = None
        while True:
            page = await client.list_tools(cursor=cursor)
            tools += page.tools
            cursor = page.next_cursor
            if not cursor:
                break
        self.tools = tools
        self.version += 1

    async def _subscribe(self, client: Client, stack: contextlib.AsyncExitStack) -> Any | None:
        """A 2026-era server's stream of change events (None for an earlier one: its notifications come
        through `_on_message`)."""
        try:
            return await stack.enter_async_context(client.listen(tools_list_changed=True))
        except ListenNotSupportedError:
            return None

    async def _watch(self, client: Client, changes: Any | None) -> None:
        """Until the session drops: relist when the server says the list changed."""
        watchers = [asyncio.create_task(self._dropped.wait()), asyncio.create_task(self._listen(changes)),
                    asyncio.create_task(self._relist(client))]
        try:
            await asyncio.wait(watchers, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)

    async def _listen(self, changes: Any | None) -> None:
        """Returns when the change stream ends: the server went away."""
        if changes is None:
            await asyncio.Event().wait()
        try:
            async for _ in changes:
                self._changed.set()
        except Exception as exc:  # SubscriptionLost, a transport error: the session is gone
            log.debug("MCP server %s: the change stream ended: %s", self.label, _reason(exc))

    async def _relist(self, client: Client) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            before = {tool.name for tool in self.tools}
            await self._list(client)
            after = {tool.name for tool in self.tools}
            log.info("MCP server %s: the tool list changed (%d tools; added: %s; removed: %s)", self.label,
                     len(after), ", ".join(sorted(after - before)) or "none",
                     ", ".join(sorted(before - after)) or "none")

    async def call(self, name: str, arguments: dict[str, Any]) -> str:
        """The tool's result as text for the LLM; a failure raises ToolError (the caller's timeout bounds
        it). A session that drops meanwhile ends the call at once with an error."""
        if not self._connected.is_set():  # reconnecting: wait (bounded by the call's timeout); down: briefly
            with contextlib.suppress(TimeoutError):
                limit = None if self.failure is None else RECONNECT_WAIT_S
                await asyncio.wait_for(self._connected.wait(), limit)
        client, dropped = self._client, self._dropped
        if client is None:
            raise ToolError(f"the {name} service (MCP server) is not reachable just now: "
                            f"{self.failure or 'reconnecting'}")
        request = asyncio.ensure_future(client.call_tool(name, arguments))
        request.add_done_callback(_retrieve)
        ended = asyncio.ensure_future(dropped.wait())
        try:
            await asyncio.wait([request, ended], return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
            if not request.done():
                request.cancel()
        if request.cancelled() or not request.done():
            self._lose(dropped)
            raise ToolError(f"the connection to the {name} service (MCP server) dropped during the call; "
                            "nothing is known about the result")
        try:
            result = request.result()
        except MCPError as exc:
            if exc.code == mcp_types.CONNECTION_CLOSED:
                self._lose(dropped)
                raise ToolError(f"the connection to the {name} service (MCP server) dropped during the "
                                "call; nothing is known about the result") from None
            raise ToolError(f"the {name} service refused the call: {exc.error.message}") from None
        except _TRANSPORT_ERRORS as exc:
            self._lose(dropped)
            raise ToolError(f"could not reach the {name} service ({type(exc).__name__})") from None
        return _result_text(name, result)


    def _lose(self, dropped: asyncio.Event) -> None:
        """A call found the session gone: the next calls wait for the new one, not use this one."""
        if dropped is self._dropped:
            self._client = None
            self._connected.clear()
        dropped.set()


def _retrieve(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a dropped call's error is reported as the tool's, not by asyncio


def _result_text(name: str, result: mcp_types.CallToolResult) -> str:
    """Its text content (what a server means a model to read), else its structured content as JSON;
    other content (an image, a resource) named by type."""
    texts = [block.text for block in result.content if isinstance(block, mcp_types.TextContent)]
    text = "\n".join(texts)
    if not text and result.structured_content is not None:
        text = json.dumps(result.structured_content, ensure_ascii=False)
    if not text:
        text = " ".join(f"[{block.type} content]" for block in result.content)
    if result.is_error:
        raise ToolError(f"the {name} tool failed: {text or 'no reason given'}")
    return text or "Done (the tool returned no content)."


def _reason(exc: BaseException) -> str:
    """The first real failure in `exc` (the SDK's task groups wrap it), as a short phrase."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass
class McpSource:
    """One `- mcp:` entry of a pipeline: its session's tools through `allow` / `deny`."""

    session: McpSession
    config: McpServerConfig
    _cache: tuple[int, dict[str, Listed]] = (-1, {})

    @property
    def label(self) -> str:
        return self.session.label

    @property
    def timeout_s(self) -> float:
        return self.config.timeout_s

    @property
    def version(self) -> int:
        return self.session.version

    def listed(self) -> dict[str, Listed]:
        version, tools = self._cache
        if version != self.session.version:
            tools = {}
            for tool in self.session.tools:
                if self.config.admits(tool.name) and (listed := self._listed(tool)) is not None:
                    tools[tool.name] = listed
            self._cache = (self.session.version, tools)
        return tools

    def _listed(self, tool: mcp_types.Tool) -> Listed | None:
        if not TOOL_NAME.fullmatch(tool.name):
            log.warning("MCP server %s: tool %r not offered: LLM vendors take only letters, digits, _ and - "
                        "(at most 64)", self.label, tool.name)
            return None
        schema = dict(tool.input_schema or {"type": "object", "properties": {}})
        try:
            validator = jsonschema.Draft202012Validator(schema)
            validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            log.warning("MCP server %s: tool %r not offered: its input schema is invalid (%s)", self.label,
                        tool.name, exc.message)
            return None
        return Listed(Tool(tool.name, tool.description or tool.title or tool.name, schema), validator)

    async def call(self, name: str, arguments: dict[str, Any]) -> str:
        return await self.session.call(name, arguments)


@dataclass
class McpClients:
    """The process's MCP sessions, one per server however many pipelines (or reloads) list it."""

    sessions: dict[str, McpSession] = field(default_factory=dict)
    required: dict[str, bool] = field(default_factory=dict)  # a non-optional entry lists it
    started: set[str] = field(default_factory=set)

    def source(self, config: McpServerConfig) -> McpSource:
        key = config.connection_key()
        session = self.sessions.setdefault(key, McpSession(config))
        self.required[key] = self.required.get(key, False) or not config.optional
        return McpSource(session, config)

    async def start(self) -> None:
        """Connect to every server not started yet and list its tools (concurrently): at start-up all of
        them, at a reload the new ones (a running one that is reconnecting is not a reason to refuse
        it). Raise McpUnavailable naming each required server that can't be reached; an optional one is
        a warning."""
        keys = [key for key in self.sessions if key not in self.started]
        self.started.update(keys)
        results = await asyncio.gather(*(self.sessions[key].start() for key in keys), return_exceptions=True)
        problems = []
        for key, result in zip(keys, results, strict=True):
            if isinstance(result, McpUnavailable):
                if self.required[key]:
                    problems.append(str(result))
                    self.started.discard(key)  # asked again by the next start (a reload retried)
                else:
                    log.warning("%s (optional: no tools from it until it answers)", result)
            elif isinstance(result, BaseException):
                raise result
        if problems:
            raise McpUnavailable("; ".join(problems))

    async def aclose(self) -> None:
        await asyncio.gather(*(session.aclose() for session in self.sessions.values()))
