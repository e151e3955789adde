"""`switchboard eval`: each scenario's calls placed on each pipeline (arm) over Twilio's wire format, checked,
judged, and stored.

Against an in-process server on the pipeline file (default) or a running one (`url`, whose call store
`db_url` must be). Calls run `concurrency` at a time; each is tagged with the run and its scenario in the
`start` message's parameters, so the server stores it as an eval call (kept out of the live traffic's
report). What the server recorded of the call (its turns) and what the caller heard go through the
checks (checks.py) and the judge (judge.py); the verdict is an `eval_results` row.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from websockets.exceptions import InvalidHandshake, InvalidURI

import switchboard.caller as caller
from switchboard.config import Config, ConfigError, PipelineConfig
from switchboard.config.schema import SplitPipelineConfig
from switchboard.core.errors import ProviderError
from switchboard.core.metrics import TurnMetrics
from switchboard.evals.checks import CallRecord, Check, run_checks
from switchboard.evals.judge import JudgeResult, judge_call
from switchboard.evals.scenarios import EvalsFile, Scenario
from switchboard.store import CallStore, turn_row

HANGUP_AFTER_S = 10.0  # after its last line, a caller the bot did not hang up on waits this long, then stops
REPLY_TIMEOUT_S = 30.0  # a caller waits this long for the bot's reply before its next line (then: unanswered)
SETTLE_S = 30.0  # at most this long for the server to close and record a call once the caller is done
EVAL_FROM, EVAL_TO = "+15550000100", "+15550000200"


@dataclass
class Job:
    arm: str  # the pipeline the call is placed on
    scenario: Scenario
    number: int  # 1..scenario.calls


@dataclass
class EvalResult:
    """One eval call's verdict, as stored in `eval_results`."""

    run: str
    arm: str
    scenario: str
    call_id: str
    checks: list[Check]
    judge: JudgeResult | None
    talk_over_s: float
    error: str | None = None  # the call could not be placed (the server unreachable, a crash)

    @property
    def passed(self) -> bool | None:
        """Every check and judged criterion passed; None when the criteria went unjudged."""
        if self.error is not None or not all(check.passed for check in self.checks):
            return False
        if self.judge is None:
            return True
        return self.judge.passed

    def row(self) -> dict[str, Any]:
        judge = self.judge
        checks = [check.as_dict() for check in self.checks]
        if self.error is not None:
            checks.append({"name": "call placed", "passed": False, "detail": self.error})
        return {"run": self.run, "scenario": self.scenario, "arm": self.arm, "call_id": self.call_id,
                "kind": "call", "passed": self.passed, "checks": checks,
                "scores": judge.scores if judge else {}, "judge": judge.answer() if judge else None,
                "judge_tokens_in": judge.tokens_in if judge else None,
                "judge_tokens_out": judge.tokens_out if judge else None,
                "judge_cost": judge.cost if judge else None, "talk_over_s": self.talk_over_s}


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def arms_of(config: Config, names: list[str]) -> list[str]:
    """The pipelines to evaluate: the names given, a `kind: split` pipeline standing for its arms'."""
    arms: list[str] = []
    for name in names:
        pipeline = config.pipelines.get(name)
        if pipeline is None:
            raise ConfigError(f"--pipeline: no pipeline {name!r} in the pipeline file; it has "
                              f"{', '.join(config.pipelines)}", "--pipeline")
        if isinstance(pipeline, SplitPipelineConfig):
            arms += [arm.pipeline for arm in pipeline.variants]
        else:
            arms.append(name)
    return list(dict.fromkeys(arms))


def script_lines(scenario: Scenario) -> list[caller.CallerLine]:
    return [caller.CallerLine(wav=line.wav) if line.wav else
            caller.CallerLine(text=line.text, barge_in=line.over_the_bot) for line in scenario.script]


class Progress:
    """One line on stderr per finished call: how many are done, passed so far, and the time left."""

    def __init__(self, run: str, total: int, stream: TextIO | None = None) -> None:
        self.run, self.total, self.stream = run, total, stream or sys.stderr
        self.done = self.passed = 0
        self.started = time.monotonic()

    def __call__(self, result: EvalResult) -> None:
        self.done += 1
        self.passed += result.passed is True
        elapsed = time.monotonic() - self.started
        left = elapsed / self.done * (self.total - self.done)
        verdict = {True: "pass", False: "FAIL", None: "unjudged"}[result.passed]
        print(f"eval {self.run}: {self.done}/{self.total} calls, {self.passed} passed, ~{left:.0f} s left "
              f"({result.arm}/{result.scenario}: {verdict})", file=self.stream, flush=True)


@dataclass
class Runner:
    """Places the calls of one eval run and records their verdicts."""

    evals: EvalsFile
    config: Config
    arms: list[str]
    store: CallStore
    run: str = field(default_factory=new_run_id)
    concurrency: int = 2
    speed: float = 1.0
    url: str | None = None  # a running server's media WebSocket; None: in process
    progress: Progress | None = None
    providers: dict[str, Any] | None = None  # pipeline -> Providers instead of the configured ones (tests)
    _turns: dict[str, list[TurnMetrics]] = field(default_factory=dict)
    _host: Any = None

    def jobs(self) -> list[Job]:
        return [Job(arm, scenario, n + 1) for arm in self.arms for scenario in self.evals.scenarios
                for n in range(scenario.calls)]

    async def run_all(self) -> list[EvalResult]:
        jobs = self.jobs()
        self.progress = self.progress or Progress(self.run, len(jobs))
        async with self.server() as url:
            gate = asyncio.Semaphore(self.concurrency)

            async def one(job: Job) -> EvalResult:
                async with gate:
                    result = await self.place(url, job)
                await self.store.add_eval_result(result.row())
                assert self.progress is not None
                self.progress(result)
                return result

            return list(await asyncio.gather(*(one(job) for job in jobs)))

    @contextlib.asynccontextmanager
    async def server(self) -> AsyncIterator[str]:
        if self.url is not None:
            yield self.url
            return
        from switchboard.demo import BOOKINGS_ENV, booking_service
        from switchboard.server import create_app, running

        app = create_app(self.config, on_turn=self._collect, store_url=self.store.url,
                         providers=self.providers)
        self._host = app.state.host
        async with contextlib.AsyncExitStack() as stack:
            if not os.environ.get(BOOKINGS_ENV):  # the bundled pipeline's book_table tool: the demo's service
                await stack.enter_async_context(booking_service())
            port = await stack.enter_async_context(running(app))
            yield f"ws://127.0.0.1:{port}/media-stream"

    def _collect(self, metrics: TurnMetrics) -> None:
        self._turns.setdefault(metrics.call_id, []).append(metrics)

    async def place(self, url: str, job: Job) -> EvalResult:
        """One call of `job`: placed, recorded, checked and judged."""
        scenario = job.scenario
        params = {"from": EVAL_FROM, "to": EVAL_TO, "pipeline": job.arm, "eval_run": self.run,
                  "eval_scenario": scenario.name}
        try:
            if scenario.script:
                heard = await caller.run_call(
                    url, script_lines(scenario), speed=self.speed, custom_parameters=params,
                    voice=scenario.speech.voice, rate=scenario.speech.rate, noise_db=scenario.speech.noise_db,
                    on_event=lambda _event: None, hangup_timeout_s=HANGUP_AFTER_S,
                    reply_timeout_s=REPLY_TIMEOUT_S)
            else:
                from switchboard.evals.simulated import simulated_call

                assert self.evals.caller is not None  # the file's validation asks for one
                heard = await simulated_call(url, scenario, self.evals.caller, speed=self.speed,
                                             custom_parameters=params, hangup_timeout_s=HANGUP_AFTER_S,
                                             reply_timeout_s=REPLY_TIMEOUT_S)
            record = await self.record(heard, scenario)
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI, ProviderError) as exc:  # LLM caller too
            return EvalResult(self.run, job.arm, scenario.name, "-", [], None, 0.0,
                              error=f"{type(exc).__name__}: {exc}")
        checks = run_checks(scenario.expect, record)
        judge = await judge_call(self.evals.judge, scenario, record, self.system_prompt(job.arm))
        return EvalResult(self.run, job.arm, scenario.name, record.call_id, checks, judge, record.talk_over_s)

    def system_prompt(self, arm: str) -> str:
        pipeline = self.config.pipelines.get(arm)
        return pipeline.system_prompt if isinstance(pipeline, PipelineConfig) else ""

    async def record(self, heard: caller.CallResult, scenario: Scenario) -> CallRecord:
        call_id = heard.call_sid
        if self._host is not None:
            turns, transferred = await self._recorded_here(call_id)
        else:
            turns, transferred = await self._recorded_there(call_id)
        lines = [{"text": line.text, "spoken": line.spoken, "answered": line.response_delay_ms is not None,
                  "backchannel": script.backchannel is not None}
                 for line, script in zip(heard.lines, scenario.script or [None] * len(heard.lines),
                                         strict=True)] if scenario.script else _simulated_lines(heard)
        return CallRecord(call_id, turns, lines, heard.talk_over_s, heard.hangup, transferred)

    async def _recorded_here(self, call_id: str) -> tuple[list[dict[str, Any]], str | None]:
        """The in-process server's turns of the call, once it has closed the call."""
        deadline = time.monotonic() + SETTLE_S
        while call_id in self._host.calls and time.monotonic() < deadline:  # noqa: ASYNC110 (the host has no per-call event)
            await asyncio.sleep(0.05)
        metrics = self._turns.pop(call_id, [])
        transferred = next((turn.transferred_to for turn in metrics if turn.transferred_to), None)
        return [turn_row(turn) for turn in sorted(metrics, key=lambda turn: turn.index)], transferred

    async def _recorded_there(self, call_id: str) -> tuple[list[dict[str, Any]], str | None]:
        """A running server's record of the call, read from its store once the call has ended."""
        deadline = time.monotonic() + SETTLE_S
        while True:
            call = await self.store.get_call(call_id)
            if (call is not None and call.get("ended_at") is not None) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        if call is None:
            raise TimeoutError(f"call {call_id} never reached the call store {self.store.url}: pass the "
                               "server's database with --db")
        summary = call.get("summary") or {}
        return call["turns"], summary.get("transferred_to")


def _simulated_lines(heard: caller.CallResult) -> list[dict[str, Any]]:
    return [{"text": line.text, "spoken": line.spoken, "answered": line.response_delay_ms is not None,
             "backchannel": False} for line in heard.lines]
