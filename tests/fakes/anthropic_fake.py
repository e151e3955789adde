"""A fake of Anthropic's Messages API: `POST /v1/messages` with `stream: true`, in the real SSE format.

The stream is what the API sends: `message_start`, a text block (`content_block_start`, a `ping`,
`text_delta`s word by word, `content_block_stop`), optionally a `tool_use` block whose input arrives as
`input_json_delta` fragments, then `message_delta` (stop_reason, usage.output_tokens) and `message_stop`.
The key is accepted as `x-api-key` or as `Authorization: Bearer` (what SDK 2.x sends).
Errors are the API's bodies, `{"type": "error", "error": {"type", "message"}, "request_id"}`, with its
statuses; `stream_error` sends an `event: error` mid-stream instead (as an overloaded API does).
The fake also checks the request the way the API does (alternating roles starting with the user, no
empty text blocks, tool results answering a tool_use of the turn before), answering 400 otherwise.
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

INPUT_TOKENS = 31
CACHE_READ_TOKENS = 4
OUTPUT_TOKENS = 12

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def error_body(error_type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message}, "request_id": "req_fake01"}


def _problem(body: dict[str, Any]) -> str | None:
    """What the real API would reject in this request body, if anything."""
    for name in ("model", "max_tokens", "messages"):
        if name not in body:
            return f"{name}: Field required"
    if body.get("stream") is not True:
        return "this fake only streams"
    if isinstance(body.get("temperature"), (int, float)) and not 0 <= body["temperature"] <= 1:
        return "temperature: Input should be less than or equal to 1"
    tool_ids: set[str] = set()
    for n, message in enumerate(body["messages"]):
        expected = "user" if n % 2 == 0 else "assistant"
        if message.get("role") != expected:
            return f"messages.{n}: roles must alternate between user and assistant, starting with user"
        content = message["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not blocks:
            return f"messages.{n}: content must not be empty"
        for block in blocks:
            if block["type"] == "text" and not block["text"]:
                return f"messages.{n}: text content blocks must be non-empty"
            if block["type"] == "tool_result" and block["tool_use_id"] not in tool_ids:
                return f"messages.{n}: tool_result block(s) provided when previous message has no tool_use"
        tool_ids = {b["id"] for b in blocks if b["type"] == "tool_use"}
    return None


def _events(
    reply: str, tool_call: dict[str, Any] | None, model: str, stream_error: str | None
) -> list[bytes]:
    events = [
        sse(
            {
                "type": "message_start",
                "message": {
                    "id": "msg_fake01",
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": model,
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": INPUT_TOKENS,
                        "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": CACHE_READ_TOKENS,
                        "output_tokens": 1,
                    },
                },
            },
            "message_start",
        ),
    ]
    index = 0
    if reply:
        events.append(
            sse(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "text", "text": ""},
                },
                "content_block_start",
            )
        )
        events.append(sse({"type": "ping"}, "ping"))
        words = reply.split(" ")
        for n, word in enumerate(words):
            text = word if n == 0 else " " + word
            events.append(
                sse(
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "text_delta", "text": text},
                    },
                    "content_block_delta",
                )
            )
            if n == 0 and stream_error:
                events.append(sse(error_body(stream_error, "Overloaded"), "error"))
                return events
        events.append(sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
        index += 1
    if tool_call:
        events.append(
            sse(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {
                        "type": "tool_use",
                        "id": "toolu_fake01",
                        "name": tool_call["name"],
                        "input": {},
                    },
                },
                "content_block_start",
            )
        )
        text = json.dumps(tool_call["input"])
        third = max(1, len(text) // 3)
        for fragment in ["", text[:third], text[third : 2 * third], text[2 * third :]]:
            events.append(
                sse(
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": fragment},
                    },
                    "content_block_delta",
                )
            )
        events.append(sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
    events.append(
        sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use" if tool_call else "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": OUTPUT_TOKENS},
            },
            "message_delta",
        )
    )
    events.append(sse({"type": "message_stop"}, "message_stop"))
    return events


def anthropic_app(
    faults: Faults,
    reply: str = "Hello from Claude. How can I help?",
    tool_call: dict[str, Any] | None = None,
    stream_error: str | None = None,
    after_tool_result: str | None = None,
) -> Starlette:
    """`tool_call`: {"name": ..., "input": {...}} streamed after the reply text (if any).
    `after_tool_result`: when set, the reply (and no tool call) to a request ending in a tool result.
    `stream_error`: an error type (e.g. "overloaded_error") sent as `event: error` after the first word."""

    async def messages(request: Request) -> Response:
        body = await request.json()
        faults.requests.append(body)
        faults.paths.append(request.url.path)
        faults.headers.append(dict(request.headers))
        if faults.first_byte_delay_s:
            await asyncio.sleep(faults.first_byte_delay_s)
        if faults.should_fail():
            status = faults.status or 500
            return error_response(status, error_body(ERROR_TYPES.get(status, "api_error"), f"fake {status}"))
        if not (
            request.headers.get("x-api-key") or request.headers.get("authorization", "").startswith("Bearer ")
        ):
            return error_response(401, error_body("authentication_error", "x-api-key header is required"))
        problem = _problem(body)
        if problem:
            return error_response(400, error_body("invalid_request_error", problem))
        last = body["messages"][-1]["content"] if body.get("messages") else ""
        if after_tool_result is not None and isinstance(last, list) and any(
                block.get("type") == "tool_result" for block in last):
            return stream(faults, _events(after_tool_result, None, body["model"], stream_error))
        return stream(faults, _events(reply, tool_call, body["model"], stream_error))

    return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"])])
