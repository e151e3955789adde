"""The tools a pipeline's LLM may call (pipeline.yaml `tools:`), and a turn's tool rounds.

`ToolBox` runs one call: the arguments are checked against the tool's JSON Schema (a failure is the
error text, sent back to the LLM), then its HTTP request is made with the templates filled in (`{arg}`
from the arguments, `${NAME}` from the environment, read now and never logged). The answer (or
`result_field` of it) goes back cut to `tool_use.max_result_chars`; an HTTP error, a non-JSON answer or
the timeout goes back as an error the LLM can talk about. Nothing is raised to the turn.

`rounds` is the LLM stage of a turn with tools: it streams the LLM's reply; when the LLM calls declared
tools it runs them (concurrently; a speculative turn first waits to be committed, a booking must not be
made for words the caller may still take back), adds the call and its results to the messages, and asks
again, up to `tool_use.max_rounds` times; the last request offers the built-in tools only, so the reply
ends in words. The caller is never left in silence: `Pending` tells the turn to say what the LLM said so
far, and `Filler` (once a tool has taken `filler_after_s`, when the LLM said nothing itself) what to say
meanwhile. Closing the generator (a barge-in cancels the turn) cancels the requests in flight, which
closes their connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

import certifi
import httpx
import jsonschema

from switchboard.config.tools import (
    ARGUMENT,
    BUILTIN_TOOLS,
    MissingVariable,
    ToolConfig,
    ToolUseConfig,
    arguments_in,
    expand_env,
)
from switchboard.core.errors import ProviderError
from switchboard.core.messages import LLMEvent, Message, TextDelta, Tool, ToolCall, Usage
from switchboard.core.metrics import TurnMetrics
from switchboard.core.protocols import LLM
from switchboard.pipeline import failover
from switchboard.pipeline.hedging import Hedging

log = logging.getLogger("switchboard.tools")
# httpx logs every request's full URL at INFO: a tool's URL may carry a ${VAR} secret, read at request time
logging.getLogger("httpx").setLevel(logging.WARNING)

MAX_ANSWER_BYTES = 4_000_000  # read no more of a tool's answer than this (the LLM gets far less)
USER_AGENT = "switchboard-tools/1"


@dataclass
class Pending:
    """Tools are about to run: say what the LLM said so far (no half sentence waits in the chunker)."""


@dataclass
class Filler:
    """A tool is taking a while: say this meanwhile."""

    text: str


RoundEvent = LLMEvent | Pending | Filler


@dataclass
class Outcome:
    """One tool call's result as the LLM gets it, and how it went: ok, error, timeout, invalid, unknown."""

    content: str
    status: str
    ms: float = 0.0


class ToolError(Exception):
    """The tool ran but failed; the message goes to the LLM."""


@dataclass
class Listed:
    """A tool as offered to the LLM, and the validator of its arguments."""

    tool: Tool
    validator: jsonschema.Draft202012Validator


class ToolSource(Protocol):
    """Tools listed by a server rather than declared in the file: an MCP server (pipeline/mcp.py)."""

    label: str  # how messages name it
    timeout_s: float  # one call's limit
    version: int  # changes whenever its list does

    def listed(self) -> dict[str, Listed]: ...

    async def call(self, name: str, arguments: dict[str, Any]) -> str:
        """The result as text; raises ToolError."""


@dataclass
class ToolBox:
    """A pipeline's tools and how they are run: its declared HTTP tools (`tools`; `mcp:` entries there
    come as `sources`, started by the host) and the tools its MCP servers list. Built once per pipeline
    and shared by its calls (per call without a host: tests)."""

    tools: list[Any]
    use: ToolUseConfig = field(default_factory=ToolUseConfig)
    sources: list[ToolSource] = field(default_factory=list)

    def __post_init__(self) -> None:
        http = [tool for tool in self.tools if isinstance(tool, ToolConfig)]
        self._specs = {tool.name: tool for tool in http}
        self._own = {t.name: Listed(Tool(t.name, t.description, t.parameters),
                                    jsonschema.Draft202012Validator(t.parameters)) for t in http}
        self._table: dict[str, tuple[Listed, ToolSource | None]] = {}
        self._versions: tuple[int, ...] | None = None

    def table(self) -> dict[str, tuple[Listed, ToolSource | None]]:
        """Every tool by name: the declared ones, then each source's in order; a listed tool whose name
        is taken already is left out (logged once per list: `clashes` makes that a start-up error)."""
        versions = tuple(source.version for source in self.sources)
        if versions != self._versions:
            table: dict[str, tuple[Listed, ToolSource | None]] = {n: (t, None) for n, t in self._own.items()}
            for problem in self._merge(table):
                log.error("%s: not offered", problem)
            self._table, self._versions = table, versions
        return self._table

    def clashes(self) -> list[str]:
        """A sentence per listed tool whose name is another tool's (start-up: an error naming both)."""
        return self._merge({n: (t, None) for n, t in self._own.items()})

    def _merge(self, table: dict[str, tuple[Listed, ToolSource | None]]) -> list[str]:
        problems = []
        for source in self.sources:
            for name, listed in source.listed().items():
                if name in BUILTIN_TOOLS:
                    problems.append(f"MCP server {source.label}'s tool {name!r} has the name of the built-in "
                                    f"{name} tool; leave it out with deny: [{name}]")
                elif name in table:
                    _, other = table[name]
                    where = (f"the HTTP tool {name!r} in tools:" if other is None
                             else f"MCP server {other.label}'s tool {name!r}")
                    problems.append(f"MCP server {source.label}'s tool {name!r} clashes with {where}; "
                                    f"leave one out with deny: [{name}] on its mcp: entry, or rename yours")
                else:
                    table[name] = (listed, source)
        return problems

    @property
    def offered(self) -> list[Tool]:
        return [listed.tool for listed, _ in self.table().values()]

    def declares(self, name: str) -> bool:
        return name in self.table()

    async def run(self, call: ToolCall) -> Outcome:
        """The call's result or error, as text for the LLM. Never raises but for cancellation."""
        started = time.monotonic()
        try:
            outcome = await self._run(call)
        except Exception as exc:  # a bug here must cost the LLM a tool result, not the caller the turn
            log.exception("tool %s (%s) failed unexpectedly", call.name, call.id)
            outcome = Outcome(f"Error: the {call.name} tool failed ({type(exc).__name__}).", "error")
        outcome.ms = (time.monotonic() - started) * 1000
        log.info("tool %s (%s): %s in %.0f ms", call.name, call.id, outcome.status, outcome.ms)
        return outcome

    async def _run(self, call: ToolCall) -> Outcome:
        found = self.table().get(call.name)
        if found is None:
            known = ", ".join(self.table()) or "none"
            return Outcome(f"Error: there is no tool named {call.name!r}; the tools are: {known}.", "unknown")
        listed, source = found
        problems = sorted(listed.validator.iter_errors(call.arguments), key=lambda e: e.path)
        if problems:
            text = "; ".join(_schema_problem(problem) for problem in problems[:5])
            return Outcome(f"Error: the arguments do not match the tool's parameters: {text}. "
                           "Nothing was done; call it again with valid arguments.", "invalid")
        limit = source.timeout_s if source is not None else self._specs[call.name].http.timeout_s
        try:
            async with asyncio.timeout(limit):
                if source is not None:
                    answer = await source.call(call.name, call.arguments)
                    return Outcome(_cut(answer, self.use.max_result_chars), "ok")
                return Outcome(await self._request(self._specs[call.name], call.arguments), "ok")
        except TimeoutError:
            return Outcome(f"Error: the {call.name} service timed out after {limit:g} s; nothing is known "
                           "about the result.", "timeout")
        except ToolError as exc:
            return Outcome(f"Error: {exc}", "error")
        except MissingVariable as exc:
            log.error("tool %s: environment variable %s is not set", call.name, exc)
            return Outcome(f"Error: the {call.name} service is not configured.", "error")
        except httpx.HTTPError as exc:
            return Outcome(f"Error: could not reach the {call.name} service ({type(exc).__name__}).", "error")

    async def _request(self, spec: ToolConfig, arguments: dict[str, Any]) -> str:
        http = spec.http
        url = expand_env(_fill(http.url, arguments, quote_values=True))
        query: dict[str, Any] = {key: expand_env(_fill(value, arguments))
                                 for key, value in http.query.items()}
        headers = {"user-agent": USER_AGENT, "accept": "application/json",
                   **{key: expand_env(_fill(value, arguments)) for key, value in http.headers.items()}}
        sends = http.sends
        body = (_fill_json(http.body, arguments) if sends == "template"
                else arguments if sends == "json" else None)
        if sends == "query":  # the arguments no template placed already; the query template's keys win
            placed = arguments_in([http.url, http.query, http.headers])
            query = {**_as_query({k: v for k, v in arguments.items() if k not in placed}), **query}
        options: dict[str, Any] = {}
        if isinstance(body, str):
            options["content"] = body.encode()
        elif body is not None:
            options["json"] = body
        request = {"params": query or None, "headers": headers, **options}
        async with (
            client(http.timeout_s) as http_client,
            http_client.stream(http.method, url, **request) as response,
        ):
            raw, whole = await _read_at_most(response, MAX_ANSWER_BYTES)
        text = raw.decode(response.encoding or "utf-8", errors="replace")
        if response.status_code >= 400:
            raise ToolError(f"the {spec.name} service answered HTTP {response.status_code}: "
                            f"{_cut(text.strip(), 300) or response.reason_phrase}")
        if not text.strip():
            return "Done (the service sent no content)."
        if not whole:  # too big to parse: its beginning, as text
            log.warning("tool %s: answer over %d bytes: cut", spec.name, MAX_ANSWER_BYTES)
            return _cut(text, self.use.max_result_chars)
        try:
            answer = json.loads(text)
        except ValueError:
            raise ToolError(f"the {spec.name} service's answer is not valid JSON "
                            f"({_cut(text.strip(), 120)!r})") from None
        if http.result_field:
            answer = _field(answer, http.result_field, spec.name)
        shown = answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)
        return _cut(shown, self.use.max_result_chars)


@functools.cache
def tls() -> ssl.SSLContext:
    """httpx's default verification (certifi's CAs), built once: building it per client costs ~50 ms."""
    return ssl.create_default_context(cafile=certifi.where())


def client(timeout_s: float) -> httpx.AsyncClient:
    """A client for one request: closed with it, so a cancelled turn closes its connection."""
    return httpx.AsyncClient(timeout=timeout_s, follow_redirects=False, verify=tls())


async def _read_at_most(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """At most `limit` bytes of the answer, and whether that is all of it."""
    data = bytearray()
    async for piece in response.aiter_bytes():
        data += piece
        if len(data) > limit:
            return bytes(data[:limit]), False  # leaving the stream closes the connection: no more is read
    return bytes(data), True


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f" …(cut: {len(text) - limit} more characters)"


def _field(answer: Any, path: str, tool: str) -> Any:
    value = answer
    for key in path.split("."):
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            raise ToolError(f"the {tool} service's answer has no {path!r}")
    return value


def _schema_problem(error: jsonschema.ValidationError) -> str:
    where = ".".join(str(part) for part in error.absolute_path)
    return f"{where}: {error.message}" if where else error.message


def _as_query(arguments: dict[str, Any]) -> dict[str, str | list[str]]:
    """Arguments as query parameters: strings as they are, a list of them repeated (`?a=1&a=2`),
    anything else as JSON (`4`, `true`, `{"k": 1}`)."""

    def text(value: Any) -> str:
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

    return {key: [text(item) for item in value] if isinstance(value, list) else text(value)
            for key, value in arguments.items() if value is not None}


def _fill(template: str, arguments: dict[str, Any], quote_values: bool = False) -> str:
    """`{name}` → the argument (absent: empty); `{{` / `}}` → a brace."""

    def value(match: Any) -> str:
        argument = arguments.get(match.group(1), "")
        text = argument if isinstance(argument, str) else json.dumps(argument)
        return quote(text, safe="") if quote_values else text

    return ARGUMENT.sub(value, template).replace("{{", "{").replace("}}", "}")


def _fill_json(template: Any, arguments: dict[str, Any]) -> Any:
    """A JSON body template: a string that is one `{name}` alone becomes the argument with its type (a
    missing optional one drops its key); other strings are filled as text; `${NAME}` read in all."""
    if isinstance(template, str):
        whole = ARGUMENT.fullmatch(template)
        if whole:
            return arguments.get(whole.group(1), _ABSENT)
        return expand_env(_fill(template, arguments))
    if isinstance(template, dict):
        filled = {key: _fill_json(value, arguments) for key, value in template.items()}
        return {key: value for key, value in filled.items() if value is not _ABSENT}
    if isinstance(template, list):
        return [value for value in (_fill_json(v, arguments) for v in template) if value is not _ABSENT]
    return template


_ABSENT = object()


async def rounds(
    chain: list[LLM],
    messages: list[Message],
    builtin: list[Tool],
    box: ToolBox | None,
    metrics: TurnMetrics,
    exchanges: list[Message],
    before_tools: Callable[[], Awaitable[None]],
    hedging: Hedging | None = None,
) -> AsyncIterator[tuple[LLM | None, RoundEvent]]:
    """The turn's LLM events across tool rounds, as `failover.stream_reply` gives one request's.

    `exchanges` receives each round's assistant message with its tool calls and the tool results (only
    once all results are in: a vendor refuses a call without its result) for the call's history."""
    messages = list(messages)
    rounds_left = box.use.max_rounds if box is not None else 0  # also without tools: an unknown one's error
    tokens_in = tokens_out = 0
    said_in_turn = False
    while True:
        tools = [*builtin, *box.offered] if box is not None and rounds_left else builtin
        calls: list[ToolCall] = []
        said, ends = "", False
        events = failover.stream_reply(chain, messages, tools, metrics, hedging)
        async with contextlib.aclosing(events):
            async for llm, event in events:
                if isinstance(event, ToolCall) and not any(event.name == t.name for t in builtin):
                    calls.append(event)
                    continue
                if isinstance(event, Usage):
                    tokens_in, tokens_out = tokens_in + event.input_tokens, tokens_out + event.output_tokens
                    event = Usage(tokens_in, tokens_out)
                elif isinstance(event, TextDelta):
                    said += event.text
                elif isinstance(event, ToolCall):
                    ends = True
                yield llm, event
        said_in_turn = said_in_turn or bool(said.strip()) or ends
        if not calls:
            return
        if box is None or not rounds_left:
            names = ", ".join(c.name for c in calls)
            log.warning("call %s turn %d: tool call(s) %s past tool_use.max_rounds: not run", metrics.call_id,
                        metrics.index, names)
            if not said_in_turn:  # the caller would hear nothing: the turn fails, the apology is said
                raise ProviderError(chain[0].vendor, "bad_request",
                                    f"still calling tools ({names}) after tool_use.max_rounds, said nothing")
            return
        rounds_left -= 1
        yield None, Pending()
        await before_tools()
        results = _Results(box, calls, metrics, filler=not said.strip())
        async with contextlib.aclosing(results.run()) as running:
            async for item in running:
                yield None, item
        exchange = [Message("assistant", said, tool_calls=calls),
                    *(Message("tool", outcome.content, tool_call_id=call.id)
                      for call, outcome in zip(calls, results.outcomes, strict=True))]
        exchanges.extend(exchange)
        messages.extend(exchange)
        if ends:
            return


class _Results:
    """Runs a round's calls as tasks; `run()` yields a `Filler` if they take long, then ends when all are
    done. Closing it early (the turn was cancelled) cancels the requests."""

    def __init__(self, box: ToolBox, calls: list[ToolCall], metrics: TurnMetrics, filler: bool) -> None:
        self.box, self.calls, self.metrics, self.filler = box, calls, metrics, filler
        self.outcomes: list[Outcome] = []

    async def run(self) -> AsyncIterator[Filler]:
        tasks = [asyncio.create_task(self.box.run(call), name=f"tool-{call.name}") for call in self.calls]
        try:
            use = self.box.use
            _, pending = await asyncio.wait(tasks, timeout=use.filler_after_s)
            if pending and self.filler and use.filler.strip():
                self.metrics.tool_fillers += 1
                yield Filler(use.filler)
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self.outcomes = [task.result() for task in tasks]
        for call, outcome in zip(self.calls, self.outcomes, strict=True):
            self.metrics.note_tool(call.name, outcome.status, outcome.ms, call.arguments)



def transfer_target(call: ToolCall, targets: list[str], call_id: str) -> str:
    """The number or SIP URI a `transfer_call` asked for, if it is one of `transfer.targets`; else the
    first (a model may invent one: it is never dialled)."""
    target = str(call.arguments.get("target") or "")
    if target not in targets:
        log.warning("call %s: transfer_call asked for %r, not a target; using %s", call_id, target,
                    targets[0])
        target = targets[0]
    log.info("call %s: transferring to %s", call_id, target)
    return target
