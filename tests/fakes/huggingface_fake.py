"""A fake Hugging Face chat-completions server: TGI, an Inference Endpoint or the Inference Providers router.

POST /v1/chat/completions — what the SDK calls for a `base_url` (TGI, Inference Endpoint) and for the
router's auto route — also /{provider}/v1/chat/completions (a named provider through the router).
With `stream: true` it answers with OpenAI-compatible `chat.completion.chunk` Server-Sent Events: the
reply's text in `choices[0].delta.content`, tool calls in `delta.tool_calls` (`tool_style="openai"`: id
and name first, then the arguments as string fragments; `"object"`: TGI-style, the arguments as one JSON
object), `finish_reason` on the last choice chunk, a usage chunk with `choices: []` when
`stream_options.include_usage` is set, then `data: [DONE]`. Errors are TGI's body, `{"error", "error_type"}`.
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

ERRORS = {
    400: ("Input validation error: `max_tokens` must be strictly positive", "validation"),
    401: ("Invalid credentials in Authorization header", "authentication"),
    403: ("This authentication method does not have sufficient permissions", "authentication"),
    422: ("Input validation error: invalid tool schema", "validation"),
    429: ("Model is overloaded", "overloaded"),
    500: ("Request failed during generation: Server error: CUDA out of memory", "generation"),
    503: ("Service Unavailable", "unavailable"),
}


def hf_error(status: int) -> Response:
    message, kind = ERRORS.get(status, ("error", "unknown"))
    return error_response(status, {"error": message, "error_type": kind})


def chunks(model: str, reply: str, tool_call: dict[str, Any] | None, tool_style: str,
           usage: tuple[int, int] | None) -> list[dict[str, Any]]:
    """The chat.completion.chunk objects for `reply`, then `tool_call` ({"name", "arguments"}), if any."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000,
                "model": model, "system_fingerprint": "3.3.4-native",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
                "usage": None}

    out = [chunk({"role": "assistant", "content": ""})]
    words = reply.split(" ") if reply else []
    out += [chunk({"role": "assistant", "content": word if n == 0 else " " + word})
            for n, word in enumerate(words)]

    def call(part: dict[str, Any]) -> dict[str, Any]:
        return chunk({"role": "assistant", "tool_calls": [{"index": 0, **part}]})

    if tool_call is not None:
        name, arguments = tool_call["name"], tool_call["arguments"]
        if tool_style == "object":
            out.append(call({"id": "0", "type": "function",
                             "function": {"name": name, "arguments": arguments}}))
        else:
            text = json.dumps(arguments)
            out.append(call({"id": "call_fake1", "type": "function",
                             "function": {"name": name, "arguments": ""}}))
            out += [call({"function": {"arguments": text[i : i + 7]}}) for i in range(0, len(text), 7)]
    out.append(chunk({"role": "assistant", "content": None}, "tool_calls" if tool_call else "stop"))
    if usage is not None:
        out.append({**chunk({}), "choices": [],
                    "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                              "total_tokens": usage[0] + usage[1]}})
    return out


def create_app(
    faults: Faults,
    reply: str = "Hello there. How can I help you today?",
    tool_call: dict[str, Any] | None = None,
    tool_style: str = "openai",
    usage: tuple[int, int] = (17, 9),
    error_event: dict[str, Any] | None = None,
    after_tool_result: str | None = None,
) -> Starlette:
    """The fake. `error_event` ({"error", "error_type"}) comes mid-stream instead of the finish (TGI).
    `after_tool_result`: when set, the reply (and no tool call) to a request ending in a tool message."""

    async def completions(request: Request) -> Response:
        body = await request.json()
        faults.requests.append(body)
        faults.paths.append(request.url.path)
        faults.headers.append(dict(request.headers))
        if faults.first_byte_delay_s:
            await asyncio.sleep(faults.first_byte_delay_s)
        if faults.should_fail():
            return hf_error(faults.status or 500)
        if not body.get("stream"):
            return hf_error(400)
        wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        model = body.get("model") or "tgi"
        answered = after_tool_result is not None and (body.get("messages") or [{}])[-1].get("role") == "tool"
        data = chunks(model, after_tool_result if answered else reply, None if answered else tool_call,
                      tool_style, usage if wants_usage else None)
        if error_event is not None:
            data = [*data[:2], error_event]
        return stream(faults, [*(sse(item) for item in data), sse("[DONE]")])

    return Starlette(routes=[
        Route("/v1/chat/completions", completions, methods=["POST"]),
        Route("/{provider}/v1/chat/completions", completions, methods=["POST"]),
    ])
