"""Per-call context: the pipeline's `context_webhook` asked once when a call starts.

It is POSTed `{call_id, from, to, pipeline, carrier}` and answers a JSON object whose values fill the
`{placeholders}` of the greeting and the system prompt (`context_webhook.defaults` fill the rest). It
runs as a task from the call's start, so the carrier's audio keeps flowing; the greeting and every reply
wait for it, `timeout_s` at most. A failure (unreachable, HTTP error, timeout, not a JSON object) is
logged and recorded (`CallContext.error`), and the call goes on with the defaults.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

import httpx

from switchboard.config import PipelineConfig
from switchboard.config.tools import PLACEHOLDER, ContextWebhookConfig, MissingVariable, expand_env
from switchboard.pipeline.tools import client

log = logging.getLogger("switchboard.context")
logging.getLogger("httpx").setLevel(logging.WARNING)  # its INFO line is the full URL (see pipeline/tools.py)

MAX_ANSWER_BYTES = 64_000
MAX_VALUE_CHARS = 500  # one value in a prompt: a name, an order summary; not a document
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def fill(template: str, values: dict[str, str]) -> str:
    """`{name}` → its value where there is one; anything else in braces is left as written."""
    return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


class CallContext:
    """The greeting and system prompt of one call, personalised once the webhook has answered."""

    def __init__(self, config: PipelineConfig) -> None:
        self.webhook: ContextWebhookConfig | None = config.context_webhook
        self._greeting, self._prompt = config.greeting, config.system_prompt
        defaults = dict(self.webhook.defaults) if self.webhook is not None else {}
        self.values: dict[str, str] = defaults
        self.greeting, self.system_prompt = self._filled()
        self.error: str | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self, info: dict[str, str]) -> None:
        """Ask the webhook in the background (a no-op without one)."""
        if self.webhook is not None and self._task is None:
            self._task = asyncio.create_task(self._load(self.webhook, info), name="context-webhook")

    async def ready(self) -> None:
        """Until the webhook has answered or failed (at once without one)."""
        if self._task is not None:
            await asyncio.shield(self._task)  # a cancelled turn must not cancel the call's context

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def _filled(self) -> tuple[str, str]:
        return fill(self._greeting, self.values), fill(self._prompt, self.values)

    async def _load(self, webhook: ContextWebhookConfig, info: dict[str, str]) -> None:
        call_id = info.get("call_id", "")
        try:
            async with asyncio.timeout(webhook.timeout_s):
                answer = await _ask(webhook, info)
        except TimeoutError:
            self.error = f"timed out after {webhook.timeout_s:g} s"
        except MissingVariable as exc:
            self.error = f"environment variable {exc} is not set"
        except httpx.HTTPError as exc:
            self.error = f"unreachable ({type(exc).__name__})"
        except ValueError as exc:
            self.error = str(exc)
        except Exception as exc:  # e.g. httpx.InvalidURL (not an HTTPError): never worth the call
            self.error = f"{type(exc).__name__}: {exc}"[:300]
        else:
            self.values = {**self.values, **answer}
            self.greeting, self.system_prompt = self._filled()
            log.info("call %s: context webhook gave %s", call_id, ", ".join(sorted(answer)) or "nothing")
            return
        log.warning("call %s: context webhook failed (%s); the call goes on with the defaults", call_id,
                    self.error)


async def _ask(webhook: ContextWebhookConfig, info: dict[str, str]) -> dict[str, str]:
    headers = {"accept": "application/json",
               **{name: expand_env(value) for name, value in webhook.headers.items()}}
    async with (
        client(webhook.timeout_s) as http_client,
        http_client.stream("POST", expand_env(webhook.url), json=info, headers=headers) as response,
    ):
        raw = bytearray()
        async for piece in response.aiter_bytes():
            raw += piece
            if len(raw) > MAX_ANSWER_BYTES:
                raise ValueError(f"answer over {MAX_ANSWER_BYTES} bytes")
    if response.status_code >= 400:
        raise ValueError(f"HTTP {response.status_code}")
    try:
        answer: Any = json.loads(bytes(raw))
    except ValueError:
        raise ValueError("the answer is not JSON") from None
    if not isinstance(answer, dict):
        raise ValueError(f"the answer is JSON {type(answer).__name__}, not an object")
    return {str(key): _clean(value) for key, value in answer.items()
            if isinstance(value, (str, int, float, bool)) and PLACEHOLDER.fullmatch("{" + str(key) + "}")}


def _clean(value: str | int | float | bool) -> str:
    text = json.dumps(value) if isinstance(value, bool) else str(value)
    return _CONTROL.sub(" ", text)[:MAX_VALUE_CHARS]
