"""A realtime turn's tool rounds (the tools themselves: pipeline/realtime_tools.py): a response's
calls run once it is done, with the filler said meanwhile when they are slow, and their results go
back so the model goes on in the same turn; a barge-in cancels the round. end_call and transfer_call:
the farewell (or the transfer's line) is asked for, then the hang-up or the hand-over."""

from __future__ import annotations

import asyncio
import contextlib
import time

from switchboard.core.errors import ProviderError
from switchboard.core.messages import Message, ToolCall
from switchboard.core.realtime import ToolRequest
from switchboard.core.tools import TRANSFER_CALL
from switchboard.pipeline.realtime_state import (
    FAREWELL,
    FILLER_S,
    SAY,
    TRANSFER_FAILED,
    RealtimeState,
    Turn,
    log,
)
from switchboard.pipeline.realtime_tools import TooManyRounds
from switchboard.pipeline.tools import transfer_target


class ToolRounds(RealtimeState):
    """Tool rounds, farewells and transfers (a part of `RealtimeSession`)."""

    async def _tool_round(self, turn: Turn, requests: list[ToolRequest]) -> None:
        """Run a response's tool calls (pipeline/realtime_tools.py), then hand the results back: the
        model goes on in the same turn. A barge-in cancels this task (and the requests in flight)."""
        try:
            results = await self._run_round_with_filler(turn, requests)
        except TooManyRounds as exc:
            await self._fail_round(turn, f"{self.model.vendor}: {exc}")
            return
        except Exception as exc:  # a bug must not leave the caller in silence
            log.exception("call %s: the tool round failed", self.call_id)
            await self._fail_round(turn, f"tool round: {type(exc).__name__}: {exc}")
            return
        turn.rounds, turn.results_back = turn.rounds + 1, True
        # kept for a reopened session: the model must know what it booked (the adapter replays it)
        calls = [ToolCall(request.call_id, request.name, request.arguments) for request in requests]
        self.history.append(Message("assistant", "", tool_calls=calls))
        self.history += [Message("tool", output, tool_call_id=call_id) for call_id, output in results]
        conn = self._conn
        if conn is None or self._turn is not turn or self.closed.is_set():
            return  # the session was lost meanwhile: the new one never saw these calls
        self._expect_by = time.monotonic() + self.model.timeouts.first_token_s
        if turn.metrics.reply_text and not turn.metrics.reply_text.endswith(" "):
            turn.metrics.reply_text += " "  # what was said before (a filler): its words come next
        # the continuation is under way from here: a barge-in before its first event cancels it too, and
        # nothing else is asked for meanwhile (set first: its events may all arrive during the send)
        self._responding = True
        try:
            await conn.tool_results(results)
        except ProviderError as exc:  # the reader sees the drop and handles it
            log.warning("call %s: could not send the tool results: %s", self.call_id, exc)

    async def _fail_round(self, turn: Turn, reason: str) -> None:
        """The round can't go on: the caller hears the apology, the turn ends, what was asked is asked."""
        turn.results_back = True
        log.warning("call %s: %s", self.call_id, reason)
        turn.metrics.error = reason
        turn.metrics.failures.append(reason)
        turn.metrics.reply_text += (" " if turn.metrics.reply_text else "") + self.config.apology
        await self._say(self.config.apology, turn)
        turn.done = True
        await self._finish_when_heard(turn)
        await self._ask_deferred()

    async def _run_round_with_filler(self, turn: Turn, requests: list[ToolRequest]) -> list[tuple[str, str]]:
        """The round's results; if the tools take `filler_after_s` and nothing was said this turn, the
        model says `tool_use.filler` meanwhile, outside the conversation (where its vendor can), and the
        results wait for that to be done (one response at a time)."""
        running = asyncio.create_task(self.tools.run_round(requests, turn.metrics, turn.rounds),
                                      name=f"tool-calls-{self.call_id}")
        try:
            use = self.tools.box.use
            done, _ = await asyncio.wait({running}, timeout=use.filler_after_s)
            conn = self._conn
            if not done and turn.last_mark is None and use.filler.strip() and conn is not None:
                turn.aside, self._responding = asyncio.Event(), True
                try:
                    said = await conn.say_aside(SAY.format(text=use.filler.strip()))
                except ProviderError as exc:  # the reader sees a drop and handles it
                    log.warning("call %s: could not ask for the filler: %s", self.call_id, exc)
                    said = False
                if said:
                    turn.metrics.tool_fillers += 1
                else:
                    turn.aside.set()
                    self._responding = False
            results = await running
            if turn.aside is not None:
                try:  # bounded: a filler that never ends (no response.done) must not hold the results
                    await asyncio.wait_for(turn.aside.wait(), self.model.timeouts.first_token_s + FILLER_S)
                except TimeoutError:
                    log.warning("call %s: the filler did not end; sending the tool results", self.call_id)
                    self._responding = False
                turn.aside = None
            return results
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)

    async def _drop_tool_round(self, turn: Turn) -> None:
        """A barge-in: the round's requests are cancelled (their connections closed), the model told."""
        task = turn.tool_round
        if task is None or task.done() or task is asyncio.current_task() or turn.results_back:
            return  # (results being sent: it is the continuation that is cut, not the round)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        log.info("call %s: barge-in cancelled the tool round (%s)", self.call_id, ", ".join(turn.tool_ids))
        if self._conn is not None:
            try:
                await self._conn.tools_cancelled(turn.tool_ids)
            except ProviderError as exc:
                log.warning("call %s: could not tell the vendor the tools were cancelled: %s", self.call_id,
                            exc)

    async def _farewell(self, turn: Turn) -> None:
        """end_call / transfer_call: acknowledge the tool, have the farewell (or the transfer's line)
        spoken; then hang up (or hand the call over) once it is heard."""
        assert turn.end_call is not None and self._conn is not None
        await self._conn.tool_result(turn.end_call.call_id, '{"ok": true}')
        farewell = str(turn.end_call.arguments.get("farewell") or "").strip()
        if turn.end_call.name == TRANSFER_CALL and self.config.transfer is not None:
            farewell = self.config.transfer.say.strip()
        if farewell:  # its words come back as the farewell response's transcript
            if turn.metrics.reply_text:
                turn.metrics.reply_text += " "
            self._expect_by = time.monotonic() + self.model.timeouts.first_token_s
            await self._conn.respond(FAREWELL.format(text=farewell))
        else:
            turn.done = True
            turn.finishing = asyncio.create_task(self._finish_when_heard(turn), name=f"heard-{self.call_id}")

    async def _hand_over(self, turn: Turn) -> None:
        """transfer_call, its line heard: the carrier hands the call over (our stream ends), or the model
        says `transfer.failed` and the call goes on."""
        assert turn.end_call is not None and self.config.transfer is not None
        transfer, metrics = self.config.transfer, turn.metrics
        target = transfer_target(turn.end_call, transfer.targets, self.call_id)
        if await self.link.transfer(target):
            metrics.transferred_to = target
            self._finish(turn)
            return
        metrics.failures.append(f"transfer to {target} failed")
        metrics.ended_call, self._ending = False, False  # the caller is still with us
        self._finish(turn)
        if self._conn is not None:
            with contextlib.suppress(ProviderError):
                await self._ask(TRANSFER_FAILED, SAY.format(text=transfer.failed))

