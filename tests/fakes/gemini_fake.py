"""A fake Gemini API (generativelanguage.googleapis.com) speaking the real streaming wire format.

POST /{version}/models/{model}:streamGenerateContent?alt=sse answers with Server-Sent Events, one
`data: <GenerateContentResponse JSON>` per chunk, in camelCase as Google sends it: `candidates[0].content`
(`role: model`, `parts` with `text` or `functionCall {name, args}`), `finishReason` on the last chunk, and
`usageMetadata` (`promptTokenCount`, `candidatesTokenCount`, `totalTokenCount`) — the prompt count on
every chunk, the full figures on the last. Errors are Google's JSON error body,
`{"error": {"code", "message", "status"}}`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fakes.common import Faults, error_response, sse, stream

STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def google_error(status: int, message: str | None = None,
                 details: list[dict[str, Any]] | None = None) -> Response:
    """Google's error body, e.g. 429 RESOURCE_EXHAUSTED. (A bad API key is a 400 with `details`.)"""
    name = STATUS_NAMES.get(status, "UNKNOWN")
    text = message or {
        401: "Request had invalid authentication credentials.",
        403: "Method doesn't allow unregistered callers.",
        429: "Resource has been exhausted (e.g. check quota).",
        500: "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
    }.get(status, name.replace("_", " ").capitalize())
    error: dict[str, Any] = {"code": status, "message": text, "status": name}
    if details:
        error["details"] = details
    return error_response(status, {"error": error})


INVALID_KEY = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}]


def chunks(reply: str, function_call: dict[str, Any] | None, usage: tuple[int, int], model: str,
           finish: bool = True, words_per_chunk: int = 2) -> list[dict[str, Any]]:
    """The GenerateContentResponse objects Gemini streams for `reply` (then `function_call`, if any)."""
    words = reply.split(" ") if reply else []
    texts = [" ".join(words[i : i + words_per_chunk]) + (" " if i + words_per_chunk < len(words) else "")
             for i in range(0, len(words), words_per_chunk)]
    parts: list[dict[str, Any]] = [{"text": text} for text in texts]
    if function_call is not None:
        parts.append({"functionCall": function_call, "thoughtSignature": "c2lnbmF0dXJl"})
    parts = parts or [{"text": ""}]
    prompt, output = usage
    out: list[dict[str, Any]] = []
    for n, part in enumerate(parts):
        last = n == len(parts) - 1
        candidate: dict[str, Any] = {"content": {"parts": [part], "role": "model"}, "index": 0}
        meta: dict[str, Any] = {"promptTokenCount": prompt, "totalTokenCount": prompt}
        if last and finish:
            candidate["finishReason"] = "STOP"
            meta = {"promptTokenCount": prompt, "candidatesTokenCount": output,
                    "totalTokenCount": prompt + output,
                    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}]}
        out.append({"candidates": [candidate], "usageMetadata": meta, "modelVersion": model,
                    "responseId": "fake-response-1"})
    return out


def create_app(
    faults: Faults,
    reply: str = "Hello there. How can I help you today?",
    function_call: dict[str, Any] | None = None,
    usage: tuple[int, int] = (21, 9),
    finish: bool = True,
    error_details: list[dict[str, Any]] | None = None,
    after_tool_result: str | None = None,
) -> Starlette:
    """The fake. `function_call` ({"name", "args"}) is sent after the reply's text, as Gemini does;
    `finish=False` ends the stream cleanly but without a finishReason; `error_details` go in error bodies;
    `after_tool_result`: when set, the reply (and no call) to contents ending in a functionResponse."""

    async def stream_generate(request: Request) -> Response:
        body = await request.json()
        faults.requests.append(body)
        faults.paths.append(request.url.path + ("?" + request.url.query if request.url.query else ""))
        faults.headers.append(dict(request.headers))
        if faults.first_byte_delay_s:
            await asyncio.sleep(faults.first_byte_delay_s)
        if faults.should_fail():
            return google_error(faults.status or 500, details=error_details)
        if request.query_params.get("alt") != "sse":
            return google_error(400, "this fake only streams with alt=sse")
        model = request.path_params["model"]
        last = (body.get("contents") or [{}])[-1].get("parts") or []
        answered = after_tool_result is not None and any("functionResponse" in part for part in last)
        events = [sse(chunk) for chunk in chunks(after_tool_result if answered else reply,
                                                 None if answered else function_call, usage, model, finish)]
        return stream(faults, events)

    return Starlette(routes=[
        Route("/{version}/models/{model}:streamGenerateContent", stream_generate, methods=["POST"]),
    ])
