"""One simulated call against an in-process server: what most call-level tests do."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from switchboard.caller import CallerLine, CallResult, run_call
from switchboard.config import Config
from switchboard.core.metrics import TurnMetrics
from switchboard.pipeline.call import Providers
from switchboard.server import create_app, running

SETTLE_S = 5.0  # at most this long for the server to close the call once the caller is done


async def place_call(
    config: Config,
    lines: list[CallerLine],
    providers: Providers | None = None,
    path: str = "/media-stream",
    on_turn: Callable[[TurnMetrics], None] | None = None,
    insecure_dev: bool = False,
    **caller_options: Any,
) -> tuple[CallResult, list[TurnMetrics]]:
    """Serve `config` (with `providers` as its default pipeline's, if given), play `lines` as the caller,
    and wait until the server has closed the call and recorded its last turn. Returns what the caller
    saw and every turn the server recorded, in order."""
    turns: list[TurnMetrics] = []

    def record(metrics: TurnMetrics) -> None:
        turns.append(metrics)
        if on_turn is not None:
            on_turn(metrics)

    given = {"default": providers} if providers is not None else None
    app = create_app(config, on_turn=record, providers=given, insecure_dev=insecure_dev)
    async with running(app) as port:
        result = await run_call(f"ws://127.0.0.1:{port}{path}", lines, **caller_options)
        await asyncio.wait_for(app.state.host.wait_idle(), SETTLE_S)
    return result, turns


async def answered_then_quiet(call: Any) -> None:
    """A caller script (`run_call(script=...)`, `place_call(..., script=answered_then_quiet)`): speak every
    line, wait until the bot is heard after the last one (its answer, or the reply it goes on with; at most
    `reply_timeout_s`), then hang up once the bot has been quiet for `hangup_timeout_s`. For a call the bot
    does not end: the caller waits on the answer itself, so a short quiet time suffices where a fixed long
    silence had to cover a slow answer."""
    since = 0.0
    for line, audio, result in zip(call.lines, call.audio, call.result.lines, strict=True):
        since = await call.speak(line, audio, result, since)
    deadline = since + call.reply_timeout_s
    while call.playback.ended_at() <= since and call.clock.now() < deadline:  # nothing heard after it yet
        await call.clock.sleep(0.01)
    await call.hang_up(since)
