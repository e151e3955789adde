"""A fake of Cohere's v2 chat: `POST /v2/chat` with `stream: true`, in the real SSE format.

Each event is `event: <type>` plus `data: <JSON with the same "type">` (the SDK reads the type from the
JSON): `message-start`, a text content block (`content-start`, `content-delta`s word by word,
`content-end`), or for a tool call `tool-plan-delta`s then `tool-call-start` / `tool-call-delta`
fragments of the arguments / `tool-call-end`, and finally `message-end` with the finish reason and
usage (`billed_units` and `tokens`). Errors are the API's `{"id", "message"}` bodies with its statuses.
The key must come as `Authorization: Bearer`; roles must be Cohere's and tool results must answer an
earlier tool call, else 400 as the API would.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fakes.common import Faults, error_response, sse, stream

BILLED_INPUT_TOKENS = 23
BILLED_OUTPUT_TOKENS = 9
RAW_INPUT_TOKENS = 1507  # Cohere's own preamble counts here, not in billed units


def error_body(message: str) -> dict[str, Any]:
    return {"id": "5c0a6c47-fake-4f5e-9d7c-000000000001", "message": message}


def _problem(body: dict[str, Any]) -> str | None:
    if not body.get("model"):
        return "invalid request: model must be specified"
    if body.get("stream") is not True:
        return "this fake only streams"
    if not body.get("messages"):
        return "invalid request: messages must not be empty"
    call_ids: set[str] = set()
    for n, message in enumerate(body["messages"]):
        role = message.get("role")
        if role not in ("system", "user", "assistant", "tool"):
            return f"invalid request: messages[{n}]: unknown role {role!r}"
        for call in message.get("tool_calls") or ():
            if not isinstance(call["function"]["arguments"], str):
                return f"invalid request: messages[{n}]: tool call arguments must be a JSON string"
            call_ids.add(call["id"])
        if role == "tool" and message.get("tool_call_id") not in call_ids:
            return f"invalid request: messages[{n}]: tool_call_id does not match an earlier tool call"
    return None


def _event(data: dict[str, Any]) -> bytes:
    return sse(data, data["type"])


def _events(reply: str, tool_call: dict[str, Any] | None) -> list[bytes]:
    events = [
        _event(
            {
                "id": "8e2f7b4a-fake-4c1e-b1a1-000000000002",
                "type": "message-start",
                "delta": {
                    "message": {
                        "role": "assistant",
                        "content": [],
                        "tool_plan": "",
                        "tool_calls": [],
                        "citations": [],
                    }
                },
            }
        )
    ]
    if tool_call:
        for piece in ("I will end", " the call."):
            events.append(_event({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": piece}}}))
        events.append(
            _event(
                {
                    "type": "tool-call-start",
                    "index": 0,
                    "delta": {
                        "message": {
                            "tool_calls": {
                                "id": f"{tool_call['name']}_fake01",
                                "type": "function",
                                "function": {"name": tool_call["name"], "arguments": ""},
                            }
                        }
                    },
                }
            )
        )
        text = json.dumps(tool_call["arguments"])
        third = max(1, len(text) // 3)
        for fragment in (text[:third], text[third : 2 * third], text[2 * third :]):
            events.append(
                _event(
                    {
                        "type": "tool-call-delta",
                        "index": 0,
                        "delta": {"message": {"tool_calls": {"function": {"arguments": fragment}}}},
                    }
                )
            )
        events.append(_event({"type": "tool-call-end", "index": 0}))
    elif reply:
        events.append(
            _event(
                {
                    "type": "content-start",
                    "index": 0,
                    "delta": {"message": {"content": {"type": "text", "text": ""}}},
                }
            )
        )
        for n, word in enumerate(reply.split(" ")):
            events.append(
                _event(
                    {
                        "type": "content-delta",
                        "index": 0,
                        "delta": {"message": {"content": {"text": word if n == 0 else " " + word}}},
                    }
                )
            )
        events.append(_event({"type": "content-end", "index": 0}))
    events.append(
        _event(
            {
                "type": "message-end",
                "delta": {
                    "finish_reason": "TOOL_CALL" if tool_call else "COMPLETE",
                    "usage": {
                        "billed_units": {
                            "input_tokens": BILLED_INPUT_TOKENS,
                            "output_tokens": BILLED_OUTPUT_TOKENS,
                        },
                        "tokens": {
                            "input_tokens": RAW_INPUT_TOKENS,
                            "output_tokens": BILLED_OUTPUT_TOKENS + 2,
                        },
                    },
                },
            }
        )
    )
    return events


def cohere_app(
    faults: Faults,
    reply: str = "Hello from Command. How can I help?",
    tool_call: dict[str, Any] | None = None,
    after_tool_result: str | None = None,
) -> Starlette:
    """`tool_call`: {"name": ..., "arguments": {...}}; with one the model answers with the call alone,
    as Command models do (a tool plan, then the call). `after_tool_result`: when set, the reply (and no
    tool call) to a request ending in a tool message."""

    async def chat(request: Request) -> Response:
        body = await request.json()
        faults.requests.append(body)
        faults.paths.append(request.url.path)
        faults.headers.append(dict(request.headers))
        if faults.first_byte_delay_s:
            await asyncio.sleep(faults.first_byte_delay_s)
        if faults.should_fail():
            status = faults.status or 500
            return error_response(status, error_body(f"fake {status}"))
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return error_response(401, error_body("no api key supplied"))
        problem = _problem(body)
        if problem:
            return error_response(400, error_body(problem))
        if after_tool_result is not None and (body.get("messages") or [{}])[-1].get("role") == "tool":
            return stream(faults, _events(after_tool_result, None))
        return stream(faults, _events(reply, tool_call))

    return Starlette(routes=[Route("/v2/chat", chat, methods=["POST"])])
