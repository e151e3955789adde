"""A realtime (speech-to-speech) call's tools: what its vendor session is offered, and a tool round.

The session is offered the pipeline's tools (`tools:`) and the built-in ones that end the bot's part of
the call (`end_call`, and `transfer_call` where `transfer:` is set and the carrier can hand a call over),
each adapter putting them in its vendor's format. A declared tool's call runs through the cascade's own
`ToolBox` (pipeline/tools.py): the arguments are checked against the schema (an invalid or unknown call
gets that error back, once, as its result), the HTTP request is made, the answer cut to
`tool_use.max_result_chars`, every failure sent back as text; and each call is noted on the turn's
metrics as the cascade notes it, so the report's tool columns cover both kinds of pipeline.

A round is the calls of one vendor response, run concurrently once that response is done; their results
go back together and the model goes on in the same turn. `tool_use.max_rounds` bounds a turn's rounds:
the round past it is not run (the model is told to answer in words), and a model that still calls tools
after that fails the turn (the caller hears the apology). Cancelling a round (a barge-in) cancels its
requests, which closes their connections.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from switchboard.config import PipelineConfig
from switchboard.core.carrier import CarrierLink
from switchboard.core.messages import Tool, ToolCall
from switchboard.core.metrics import TurnMetrics
from switchboard.core.realtime import ToolRequest
from switchboard.core.tools import END_CALL_TOOL, transfer_call_tool
from switchboard.pipeline.tools import ToolBox

log = logging.getLogger("switchboard.realtime")

PAST_MAX_ROUNDS = ("Error: no more tool calls this turn (tool_use.max_rounds is {limit}); nothing was done. "
                   "Answer the caller now, in words, with what you know.")


class TooManyRounds(Exception):
    """The model kept calling tools after it was told to answer in words."""


@dataclass
class RealtimeTools:
    """A realtime call's tools: the built-in ones and the pipeline's declared ones (`box`)."""

    box: ToolBox
    builtin: list[Tool]

    @classmethod
    def of(cls, config: PipelineConfig, link: CarrierLink, box: ToolBox | None = None) -> RealtimeTools:
        """`box`: the pipeline's (with its MCP servers' tools), else one of the call's own."""
        transfer = [transfer_call_tool(config.transfer.targets)] if config.transfer and link.transfers else []
        return cls(box or ToolBox(config.tools, config.tool_use), [END_CALL_TOOL, *transfer])

    @property
    def offered(self) -> list[Tool]:
        """What the vendor session is given (once per session: the same for every response)."""
        return [*self.builtin, *self.box.offered]

    def ends_call(self, name: str) -> bool:
        """end_call or transfer_call: the engine handles it (a farewell, then hang up or hand over)."""
        return any(tool.name == name for tool in self.builtin)

    async def run_round(self, requests: list[ToolRequest], metrics: TurnMetrics,
                        rounds_before: int) -> list[tuple[str, str]]:
        """The round's results as (call id, output), in the order of the calls. Raises TooManyRounds when
        the model was already told to stop."""
        limit = self.box.use.max_rounds
        names = ", ".join(request.name for request in requests)
        if rounds_before > limit:
            raise TooManyRounds(f"still calling tools ({names}) after tool_use.max_rounds ({limit})")
        if rounds_before == limit:
            log.warning("call %s turn %d: tool call(s) %s past tool_use.max_rounds: not run", metrics.call_id,
                        metrics.index, names)
            return [(request.call_id, PAST_MAX_ROUNDS.format(limit=limit)) for request in requests]
        calls = [ToolCall(request.call_id, request.name, request.arguments) for request in requests]
        tasks = [asyncio.create_task(self.box.run(call), name=f"tool-{call.name}") for call in calls]
        try:
            outcomes = await asyncio.gather(*tasks)
        finally:  # cancelled (a barge-in): the requests in flight are closed
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for call, outcome in zip(calls, outcomes, strict=True):
            metrics.note_tool(call.name, outcome.status, outcome.ms, call.arguments)
        return [(call.id, outcome.content) for call, outcome in zip(calls, outcomes, strict=True)]
