"""pipeline.yaml's `tools:`, `tool_use:` and `context_webhook:` sections: what a pipeline's LLM may call.

A tool is a name, a description, a JSON Schema for its arguments and an `http:` action. The action's url,
query, headers and body are templates: `{name}` is an argument (checked against the schema first),
`${NAME}` an environment variable. Unlike the rest of the file, `${NAME}` here is *not* replaced when
the file is loaded (loading.py only checks that it is set): it is read at request time (`expand_env`),
so a secret never sits in the loaded config, in `switchboard check`'s output or in a log line.
A secret written in clear in a header is refused with the fix.
"""

from __future__ import annotations

import os
import re
from typing import Any, Literal

import jsonschema
from pydantic import Field, field_validator, model_validator

from switchboard.core.carrier import E164
from switchboard.core.settings import Strict, check_http_url

BUILTIN_TOOLS = ("end_call", "transfer_call")

# `{name}` not preceded by `$` (that is an environment reference); `{{` / `}}` are literal braces
ARGUMENT = re.compile(r"(?<![${])\{([A-Za-z_][A-Za-z0-9_]*)\}(?!\})")
ENV_REF = re.compile(r"\$(\$\{)|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
TOOL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")

# header names whose value is a credential, and values that look like one whatever the header
_SECRET_HEADER = re.compile(r"authorization|api[-_]?key|token|secret|password|cookie|signature", re.I)
_SCHEMES = re.compile(r"^\s*(bearer|basic|token|digest|apikey)\s+", re.I)
_SECRET_VALUE = re.compile(r"\b(sk|pk|rk)[-_][A-Za-z0-9_-]{8,}|\b(ghp|gho|xox[abp])[-_A-Za-z0-9]{8,}"
                           r"|[A-Za-z0-9+/_=-]{32,}")


class MissingVariable(Exception):
    """A `${NAME}` in a tool's template names a variable that is not set at request time."""


def expand_env(text: str) -> str:
    """`text` with `${NAME}` / `${NAME:-default}` from the environment, `$${` as a literal `${`."""

    def substitute(ref: re.Match[str]) -> str:
        escaped, name, default = ref.groups()
        if escaped:
            return escaped
        value = os.environ.get(name)
        if default is not None and not value:
            return default
        if value is None:
            raise MissingVariable(name)
        return value

    return ENV_REF.sub(substitute, text)


def arguments_in(template: Any) -> set[str]:
    """The `{name}` placeholders in a template (a string, or JSON with strings inside)."""
    if isinstance(template, str):
        return set(ARGUMENT.findall(template))
    if isinstance(template, dict):
        return set().union(*(arguments_in(v) for v in template.values())) if template else set()
    if isinstance(template, list):
        return set().union(*(arguments_in(v) for v in template)) if template else set()
    return set()


def _check_url(url: str) -> None:
    try:
        shown = expand_env(url)
    except MissingVariable:
        shown = url  # reported by the loader, which checks every ${NAME}
    if ENV_REF.match(url) and shown == url:
        return
    check_http_url(shown, "https://api.example.com/bookings")


def _check_headers(headers: dict[str, str], kind: str = "header") -> None:
    for name, value in headers.items():
        literal = ENV_REF.sub("", value)
        credential = _SCHEMES.sub("", literal).strip()
        if (_SECRET_HEADER.search(name) and credential) or _SECRET_VALUE.search(literal):
            scheme = _SCHEMES.match(literal)
            example = f"{scheme.group(1)} ${{MY_API_KEY}}" if scheme else "${MY_API_KEY}"
            raise ValueError(
                f"{kind} {name!r} holds a secret written in clear in the file; put it in an environment "
                f"variable and write {name}: \"{example}\" (read when the request is made, never logged)")


class _Endpoint(Strict):
    """An HTTP endpoint we call: a URL with a scheme and headers with no secret written in clear."""

    url: str
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _url_has_scheme(cls, url: str) -> str:
        _check_url(url)
        return url

    @field_validator("headers")
    @classmethod
    def _no_secret_in_clear(cls, headers: dict[str, str]) -> dict[str, str]:
        _check_headers(headers)
        return headers


class HttpAction(_Endpoint):
    """What calling the tool does: one HTTP request; its JSON answer (or `result_field` of it) goes back
    to the LLM."""

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    query: dict[str, str] = Field(default_factory=dict)  # added to the URL, values URL-encoded
    # JSON; a string "{name}" alone keeps its type. Not given: the arguments themselves (see `sends`);
    # null or an empty template: no body
    body: dict[str, Any] | list[Any] | str | None = None
    timeout_s: float = Field(5.0, gt=0, le=60)
    result_field: str | None = None  # a dotted path into the JSON answer, e.g. booking.id; None: all of it

    @property
    def sends(self) -> Literal["template", "json", "query", "nothing"]:
        """What carries the arguments: the `body` template; with no `body:` key, the validated arguments
        themselves (POST, PUT, PATCH: as the JSON body; GET, DELETE: as query parameters); `body: null`
        or an empty template: nothing but what the url, query and headers templates hold."""
        if "body" in self.model_fields_set:
            return "nothing" if self.body in (None, "", {}, []) else "template"
        return "json" if self.method in ("POST", "PUT", "PATCH") else "query"


class ToolConfig(Strict):
    """One tool the pipeline's LLM may call."""

    name: str
    description: str = Field(min_length=1)
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    http: HttpAction

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        if not TOOL_NAME.fullmatch(name):
            raise ValueError("must start with a letter and hold only letters, digits, '_' or '-' (at most "
                             "64), e.g. book_table: every LLM vendor accepts that")
        if name in BUILTIN_TOOLS:
            raise ValueError(f"{name!r} is a built-in tool; give yours another name")
        return name

    @field_validator("parameters")
    @classmethod
    def _is_json_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "the top level"
            raise ValueError(f"not a valid JSON Schema: {exc.message} (at {where}); "
                             "see https://json-schema.org/understanding-json-schema") from None
        if schema.get("type") != "object":
            raise ValueError("must be a JSON Schema of type: object (the arguments are named), "
                             "e.g. {type: object, properties: {party_size: {type: integer}}}")
        return schema

    @model_validator(mode="after")
    def _placeholders_are_parameters(self) -> ToolConfig:
        known = set(self.parameters.get("properties") or {})
        http = self.http
        used = arguments_in([http.url, http.query, http.headers, http.body])
        unknown = sorted(used - known)
        if unknown:
            raise ValueError(
                f"http: {', '.join('{' + u + '}' for u in unknown)} is not a parameter of this tool; "
                f"parameters: {', '.join(sorted(known)) or 'none'} (write {{{{ for a literal brace)")
        return self

    def unused_arguments(self) -> str | None:
        """The start-up warning for a tool whose request carries none of its arguments although some are
        required (`body: null`, or templates that name none): the service would never hear them."""
        required = self.parameters.get("required") or []
        http = self.http
        if not required or http.sends in ("json", "query"):
            return None
        body = http.body if http.sends == "template" else None
        if arguments_in([http.url, http.query, http.headers, body]):
            return None
        return (f"tool {self.name!r}: its request carries none of its arguments, though "
                f"{', '.join(required)} {'is' if len(required) == 1 else 'are'} required; remove `body:` to "
                "send them all (as JSON, or as query parameters for GET and DELETE), or name them in a "
                "template, e.g. {" + required[0] + "}")


def tool_warnings(pipelines: dict[str, Any]) -> list[str]:
    """Start-up warnings about the pipelines' tools, as `pipelines.<name>.tools[i]: ...` lines."""
    return [f"pipelines.{name}.tools[{index}]: {warning}"
            for name, pipeline in pipelines.items()
            for index, tool in enumerate(getattr(pipeline, "tools", None) or [])
            if isinstance(tool, ToolConfig) and (warning := tool.unused_arguments())]


class McpServerConfig(Strict):
    """An MCP server whose tools the pipeline's LLM may call: `url` (streamable HTTP) or `command` (a local
    server over stdio). `${VAR}` in the url, headers and env is read when connecting, never held."""

    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)  # sent with every HTTP request
    command: list[str] | None = Field(None, min_length=1)  # the program and its arguments
    env: dict[str, str] = Field(default_factory=dict)  # added to the stdio server's environment
    allow: list[str] | None = None  # only these of its tools (None: all)
    deny: list[str] = Field(default_factory=list)  # never these
    optional: bool = False  # unreachable at start-up: a warning and no tools from it, not an error
    timeout_s: float = Field(10.0, gt=0, le=120)  # one tool call, then the LLM hears it timed out

    @model_validator(mode="after")
    def _one_way_to_reach_it(self) -> McpServerConfig:
        if (self.url is None) == (self.command is None):
            raise ValueError("give either url: (a streamable HTTP server, e.g. "
                             "https://tools.example.com/mcp) or command: (a local stdio server, e.g. "
                             "[python, -m, my_tools]), not both")
        if self.url is not None:
            _check_url(self.url)
            _check_headers(self.headers)
        elif self.headers:
            raise ValueError("headers: are for a url: server; a command: server gets env: instead")
        if self.env:
            if self.url is not None:
                raise ValueError("env: is for a command: server; a url: server gets headers: instead")
            _check_headers(self.env, "variable")
        both = sorted(set(self.allow or []) & set(self.deny))
        if both:
            raise ValueError(f"{', '.join(both)} is in both allow and deny: keep each name in one list")
        return self

    @property
    def label(self) -> str:
        """How logs and errors name it: the URL template (`${VAR}` as written) or the command."""
        return self.url if self.url is not None else " ".join(self.command or [])

    def connection_key(self) -> str:
        """What makes two entries one server (one session per process): how it is reached, not the filters."""
        return self.model_dump_json(include={"url", "headers", "command", "env"})

    def admits(self, name: str) -> bool:
        return (self.allow is None or name in self.allow) and name not in self.deny


class McpToolsConfig(Strict):
    """`- mcp: {...}` in `tools:`: every tool an MCP server lists (through `allow`/`deny`)."""

    mcp: McpServerConfig


class ToolUseConfig(Strict):
    """How a turn runs the tools its LLM calls."""

    max_rounds: int = Field(3, ge=1, le=10)  # LLM requests answered with tool results in one turn
    filler: str = "One moment, let me check."  # said once a tool has taken `filler_after_s`; "" = none
    filler_after_s: float = Field(1.0, ge=0, le=30)
    max_result_chars: int = Field(4000, ge=100, le=100_000)  # a longer answer is cut before the LLM sees it


class ContextWebhookConfig(_Endpoint):
    """Asked when a call starts; its JSON object fills `{placeholders}` in the greeting and system prompt."""

    timeout_s: float = Field(2.0, gt=0, le=10)
    defaults: dict[str, str] = Field(default_factory=dict)  # every placeholder's value when not answered


_SIP_URI = re.compile(r"sips?:[^@\s<>]+@[A-Za-z0-9.-]+(:\d+)?(;[^\s<>]*)?", re.IGNORECASE)


class TransferConfig(Strict):
    """The built-in `transfer_call` tool: where the LLM may send the caller, and what is said first."""

    targets: list[str] = Field(min_length=1)  # E.164 numbers or SIP URIs, the only ones it may dial
    say: str = "Please hold while I transfer you."
    failed: str = "Sorry, I couldn't put you through just now. Can I help with something else?"

    @field_validator("targets")
    @classmethod
    def _dialable(cls, targets: list[str]) -> list[str]:
        for target in targets:
            if not (E164.fullmatch(target) or _SIP_URI.fullmatch(target)):
                raise ValueError(f"{target!r} is neither an E.164 number ('+' then digits, e.g. "
                                 "'+15551234567') nor a SIP URI (e.g. 'sip:desk@example.com')")
        if len(set(targets)) != len(targets):
            raise ValueError("a target is listed twice")
        return targets


PLACEHOLDER = re.compile(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_]*)\}(?!\})")


def placeholders_without_default(webhook: ContextWebhookConfig | None, texts: dict[str, str]) -> str | None:
    """The problem when the greeting or system prompt has a `{placeholder}` the webhook's defaults lack
    (a failed webhook would leave it unfilled, spoken or shown to the LLM as written)."""
    if webhook is None:
        return None
    missing = {key: sorted(set(PLACEHOLDER.findall(text)) - set(webhook.defaults))
               for key, text in texts.items()}
    missing = {key: names for key, names in missing.items() if names}
    if not missing:
        return None
    where = "; ".join(f"{key} uses {', '.join('{' + n + '}' for n in names)}"
                      for key, names in missing.items())
    first = next(iter(missing.values()))[0]
    return (f"context_webhook.defaults: {where} with no default; add them, e.g. defaults: {{{first}: ...}} "
            "(said when the webhook fails or leaves them out)")


class VoicemailConfig(Strict):
    """What an outbound call placed with answering machine detection does when a machine answers."""

    action: Literal["hang_up", "leave_message"] = "hang_up"
    message: str = "Hello, sorry we missed you. Please call us back. Goodbye."  # said after the beep

    @property
    def detection(self) -> str:
        """Twilio's `MachineDetection` mode: wait for the beep to leave a message, else decide fast."""
        return "DetectMessageEnd" if self.action == "leave_message" else "Enable"


def detection_mode(pipelines: dict[str, Any], name: str, wanted: bool) -> str | None:
    """The `MachineDetection` an outbound call on pipeline `name` asks Twilio for (None: not wanted, or an
    unknown pipeline, which dialing reports)."""
    pipeline = pipelines.get(name)
    return pipeline.voicemail.detection if wanted and pipeline is not None else None


def is_machine(answered_by: str | None) -> bool:
    """Twilio's `AnsweredBy`: machine_start, machine_end_beep / _silence / _other, fax; human, unknown."""
    return bool(answered_by) and (answered_by.startswith("machine") or answered_by == "fax")


def defers_env(path: tuple[str | int, ...]) -> bool:
    """Is this a key whose `${NAME}` is read at request time (a tool's http, the context webhook)?"""
    if len(path) < 4 or path[0] != "pipelines":
        return False
    deferred = ("http", "mcp")  # a tool's request, an MCP server's connection
    return path[2] == "context_webhook" or (path[2] == "tools" and len(path) > 4 and path[4] in deferred)
