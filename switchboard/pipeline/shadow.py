"""Shadow LLMs: every user turn is also asked of other LLMs in the background, measured, never heard.

When a live turn commits the caller's words to the history, `CallShadows.start` hands the same messages
(system prompt, history, the new user message) and tools to each of the pipeline's `shadow:` LLMs, one
asyncio task each. Each task measures, from the moment it sends its request: the time to the first token
(`ttft_ms`), to the end of the stream (`total_ms`, only when it finished), the tokens (its Usage event),
the error, and the text (with an `end_call` farewell appended, as a live reply records it), and the
calls of the pipeline's tools it asks for, checked against their schemas as a live call's would be
(`tool_calls`, `tool_invalid`: how well it uses tools; they are never run, so a shadow's turn is its
first request only). The result
goes to a callback (the server's: the call store's `shadow_results`, with the call id and turn index)
and to the `switchboard.shadow` log as one JSON line.

Shadows can never delay or cancel the live turn:
- the turn never awaits a shadow and shares no lock with one; its task is not cancelled when the live
  turn is interrupted, nor when the call ends: it finishes in the background, bounded by its own
  `timeouts.first_token_s` / `total_s` (missing one is recorded as a `timeout` error);
- every shadow has its own adapter instance, hence its own HTTP connections (providers/registry.py);
- `ShadowRunner` (one per server process) keeps at most `shadow_max_concurrent` requests in flight;
  past that a shadow request is dropped at once, counted (the runner's `dropped`, the call summary's
  `shadows.dropped`) and logged at warning level (at most every 10 s, with the totals);
- at server shutdown the requests still in flight are cancelled and not recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import jsonschema

from switchboard.core.errors import ProviderError
from switchboard.core.messages import Message, TextDelta, Tool, ToolCall, Usage
from switchboard.core.metrics import ShadowResult
from switchboard.core.protocols import LLM
from switchboard.core.settings import Timeouts
from switchboard.core.tools import END_CALL_TOOL, TRANSFER_CALL

log = logging.getLogger("switchboard.shadow")

_BUILTIN = (END_CALL_TOOL.name, TRANSFER_CALL)  # not the pipeline's tools: not counted as tool calls
COMPLAIN_EVERY_S = 10.0  # at most one warning about dropped shadow requests this often


@dataclass
class ShadowLLM:
    """One `shadow:` entry: its name, its own LLM adapter, and its limits."""

    name: str
    llm: LLM
    timeouts: Timeouts

    @property
    def vendor(self) -> str:
        return f"{self.llm.vendor}/{self.llm.model}"


async def ask(shadow: ShadowLLM, messages: list[Message], tools: list[Tool], call_id: str,
              turn_index: int) -> ShadowResult:
    """Send one shadow request and measure it. Never raises (but can be cancelled)."""
    result = ShadowResult(call_id, turn_index, shadow.name, shadow.vendor)
    first_s, total_s = shadow.timeouts.first_token_s, shadow.timeouts.total_s
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with asyncio.timeout_at(started + min(first_s, total_s)) as deadline:
            async with contextlib.aclosing(shadow.llm.stream(messages, tools)) as events:
                async for event in events:
                    if isinstance(event, (TextDelta, ToolCall)) and result.ttft_ms is None:
                        result.ttft_ms = _ms(loop.time() - started)
                        deadline.reschedule(started + total_s)
                    if isinstance(event, TextDelta):
                        result.text += event.text
                    elif isinstance(event, ToolCall) and event.name not in _BUILTIN:
                        result.tool_calls += 1
                        result.tool_invalid += not _valid(event, tools)
                    elif isinstance(event, ToolCall):
                        farewell = str(event.arguments.get("farewell") or "").strip()
                        result.text += (" " if result.text and farewell else "") + farewell
                    elif isinstance(event, Usage):
                        result.tokens_in, result.tokens_out = event.input_tokens, event.output_tokens
        result.total_ms = _ms(loop.time() - started)
    except TimeoutError:
        what = (f"no first token within {first_s:g} s" if result.ttft_ms is None
                else f"not done within {total_s:g} s")
        result.error = str(ProviderError(shadow.llm.vendor, "timeout", what))
    except ProviderError as exc:
        result.error = str(exc)
    except Exception as exc:  # a bug in an adapter must not escape into the event loop
        result.error = str(ProviderError(shadow.llm.vendor, "internal", f"{type(exc).__name__}: {exc}"))
    return result


def _valid(call: ToolCall, tools: list[Tool]) -> bool:
    """Does the call name an offered tool, with arguments its schema accepts?"""
    tool = next((t for t in tools if t.name == call.name), None)
    return tool is not None and jsonschema.Draft202012Validator(tool.parameters).is_valid(call.arguments)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


class ShadowRunner:
    """Runs the shadow requests of every call in a server process, at most `max_concurrent` at once."""

    def __init__(self, max_concurrent: int = 8,
                 on_result: Callable[[ShadowResult], None] | None = None) -> None:
        self.max_concurrent = max_concurrent
        self.on_result = on_result
        self.started = 0  # requests sent
        self.finished = 0  # results delivered (answered or failed)
        self.dropped = 0  # requests not sent: the limit was reached
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_complaint = float("-inf")

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def start(self, shadow: ShadowLLM, messages: list[Message], tools: list[Tool], call_id: str,
              turn_index: int) -> bool:
        """Start one shadow request in the background; False (counted, logged) if it was dropped."""
        if len(self._tasks) >= self.max_concurrent:
            self.dropped += 1
            self._complain(f"call {call_id} turn {turn_index}: shadow {shadow.name} dropped: "
                           f"{len(self._tasks)} shadow requests already in flight (shadow_max_concurrent)")
            return False
        task = asyncio.create_task(self._run(shadow, messages, tools, call_id, turn_index),
                                   name=f"shadow-{shadow.name}-{call_id}-{turn_index}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self.started += 1
        return True

    async def _run(self, shadow: ShadowLLM, messages: list[Message], tools: list[Tool], call_id: str,
                   turn_index: int) -> None:
        result = await ask(shadow, messages, tools, call_id, turn_index)
        self.finished += 1
        if log.isEnabledFor(logging.INFO):
            log.info("shadow %s", json.dumps(asdict(result), sort_keys=True))
        if self.on_result is not None:
            try:
                self.on_result(result)
            except Exception:
                log.exception("shadow result callback failed")

    def _complain(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_complaint >= COMPLAIN_EVERY_S:
            self._last_complaint = now
            log.warning("%s; totals: %d started, %d dropped", message, self.started, self.dropped)

    async def drained(self) -> None:
        """Wait until no shadow request is in flight (each ends by its own timeouts). Cancelling the wait
        cancels no shadow."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    async def aclose(self) -> None:
        """Cancel the requests still in flight (server shutdown); their results are not recorded."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if tasks:
            log.info("shadow: %d requests still in flight were cancelled at shutdown", len(tasks))


class CallShadows:
    """One call's shadows, as its CallSession holds them; counts what it started and what was dropped."""

    def __init__(self, runner: ShadowRunner, shadows: list[ShadowLLM], call_id: str) -> None:
        self.runner, self.shadows, self.call_id = runner, shadows, call_id
        self.started = 0
        self.dropped = 0

    def start(self, turn_index: int, messages: list[Message], tools: list[Tool]) -> None:
        """Ask every shadow what the live LLM is asked for turn `turn_index`. Never blocks or raises."""
        snapshot, tools = list(messages), list(tools)  # the history grows; this turn's view does not
        for shadow in self.shadows:
            try:
                sent = self.runner.start(shadow, snapshot, tools, self.call_id, turn_index)
            except Exception:
                log.exception("call %s: shadow %s could not start", self.call_id, shadow.name)
                sent = False
            self.started += sent
            self.dropped += not sent

    def summary(self) -> dict[str, int]:
        return {"started": self.started, "dropped": self.dropped}
