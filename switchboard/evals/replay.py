"""`switchboard eval --replay`: real callers, recorded with `record: true`, replayed into another pipeline.

Each recorded call's caller channel (the WAV's left track, on the call's clock) is cut into utterances
where the caller fell silent (`utterances`: 20 ms frames above a level, gaps of at least `GAP_S` split),
and the utterances are played into the candidate pipeline by the simulated caller, each once the
candidate has finished its reply. The candidate's answers are paired turn by turn with the original
pipeline's (the stored turns), and with a `judge:` in the evals file, the judge says which answer to the
same caller turn it prefers, shown in random order. The caller said later turns to the original bot: they
may no longer fit the candidate's answers (the report says so).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

import switchboard.caller as caller
from switchboard.audio.wav import read_wav_channel, write_wav
from switchboard.config import Config
from switchboard.core.messages import Message
from switchboard.evals.checks import CallRecord
from switchboard.evals.judge import JudgeResult, _ask, parse_answer
from switchboard.evals.runner import (
    EVAL_FROM,
    EVAL_TO,
    HANGUP_AFTER_S,
    REPLY_TIMEOUT_S,
    Runner,
    arms_of,
    new_run_id,
)
from switchboard.evals.scenarios import EvalsFile, Judge, Scenario
from switchboard.store import CallStore

GAP_S = 0.8  # silence that splits the caller's track into utterances
MIN_UTTERANCE_S = 0.25
LEVEL = 0.04  # of the track's loudest frame: quieter frames are silence
PREFERENCE_SCHEMA = {"type": "object", "required": ["preferred", "reason"],
                     "properties": {"preferred": {"enum": ["A", "B", "tie"]}, "reason": {"type": "string"}}}


def utterances(pcm: np.ndarray, rate: int = 8000) -> list[tuple[int, int]]:
    """(start, end) samples of each stretch of speech in a caller track."""
    frame = rate // 50
    frames = len(pcm) // frame
    if frames == 0:
        return []
    energy = np.sqrt((pcm[: frames * frame].astype(np.float64).reshape(frames, frame) ** 2).mean(axis=1))
    loud = energy > max(LEVEL * energy.max(), 100.0)
    spans: list[list[int]] = []
    for n in np.flatnonzero(loud):
        if spans and (n - spans[-1][1]) * 0.02 < GAP_S:
            spans[-1][1] = n + 1
        else:
            spans.append([n, n + 1])
    return [(start * frame, end * frame) for start, end in spans if (end - start) * 0.02 >= MIN_UTTERANCE_S]


@dataclass
class Pair:
    """One caller turn answered by both pipelines."""

    turn: int
    caller: str  # what the candidate's recogniser heard
    original: str  # what the caller heard from the original pipeline
    candidate: str
    preferred: str | None = None  # "original", "candidate", "tie"; None unjudged
    reason: str = ""
    order: str = ""  # which was shown first


def pairs_of(original: list[dict[str, Any]], candidate: list[dict[str, Any]]) -> list[Pair]:
    """The two calls' answered caller turns, paired in order."""
    mine = [t for t in original if t.get("kind") == "reply" and t.get("transcript")]
    theirs = [t for t in candidate if t.get("kind") == "reply" and t.get("transcript")]
    return [Pair(n + 1, b.get("transcript") or "", a.get("reply_heard") or "", b.get("reply_heard") or "")
            for n, (a, b) in enumerate(zip(mine, theirs, strict=False))]


async def prefer(judge: Judge, llm: Any, pair: Pair, system_prompt: str, rng: random.Random,
                 cost: JudgeResult) -> None:
    """The judge's preference between the two answers to one caller turn, in random order."""
    first_candidate = rng.random() < 0.5
    a, b = (pair.candidate, pair.original) if first_candidate else (pair.original, pair.candidate)
    pair.order = "candidate first" if first_candidate else "original first"
    messages = [
        Message("system", f"{judge.prompt}\n\nThe business's system prompt:\n{system_prompt or '(none)'}\n\n"
                          "Two voice bots answered the same caller turn. Which answer serves the caller "
                          "better: true to the business, short and spoken? Answer with one JSON object and "
                          'nothing else: {"preferred": "A" or "B" or "tie", "reason": "..."}'),
        Message("user", f"The caller said: {pair.caller}\n\nAnswer A: {a or '(silence)'}\n\n"
                        f"Answer B: {b or '(silence)'}")]
    problem = ""
    for _ in (1, 2):
        text = await asyncio.wait_for(_ask(llm, messages, cost), 60)
        answer, problem = parse_answer(text, PREFERENCE_SCHEMA)
        if answer is not None:
            label = answer["preferred"]
            pair.preferred = "tie" if label == "tie" else (
                "candidate" if (label == "A") == first_candidate else "original")
            pair.reason = str(answer["reason"])
            return
        messages = [*messages, Message("assistant", text),
                    Message("user", f"That answer cannot be used: {problem}. Answer again with only the "
                                    "JSON.")]
    pair.reason = f"unjudged: malformed answer twice: {problem}"


async def recorded_calls(store: CallStore, since: Any, from_pipeline: str | None,
                         limit: int) -> list[dict[str, Any]]:
    """The latest `limit` live calls (not eval calls) whose recording is on this machine, oldest first."""
    calls = [call for call in await store.query_calls(since=since, pipeline=from_pipeline)
             if call.get("recording") and not call.get("eval_run")]
    present = await asyncio.to_thread(lambda: [call for call in calls if Path(call["recording"]).is_file()])
    return present[-limit:]


async def replay_one(runner: Runner, url: str, call: dict[str, Any], arm: str, workdir: Path,
                     judge: Judge | None, seed: int) -> dict[str, Any]:
    """Replay one recorded call into `arm`; its eval_results row."""
    track, rate = await asyncio.to_thread(read_wav_channel, call["recording"], 0)  # the caller's side
    lines = []
    for n, (start, end) in enumerate(utterances(track, rate)):
        path = workdir / f"{call['id']}-{n}.wav"
        write_wav(path, track[start:end], rate)
        lines.append(caller.CallerLine(wav=str(path)))
    params = {"from": EVAL_FROM, "to": EVAL_TO, "pipeline": arm, "eval_run": runner.run,
              "eval_scenario": "replay"}
    heard = await caller.run_call(url, lines, custom_parameters=params, speed=runner.speed,
                                  on_event=lambda _event: None, hangup_timeout_s=HANGUP_AFTER_S,
                                  reply_timeout_s=REPLY_TIMEOUT_S)
    scenario = Scenario(name="replay", script=[{"wav": line.wav} for line in lines])  # type: ignore[list-item]
    record: CallRecord = await runner.record(heard, scenario)
    original = (await runner.store.get_call(call["id"])) or {"turns": []}
    pairs = pairs_of(original["turns"], record.turns)
    cost = JudgeResult()
    if judge is not None:
        from switchboard.providers import registry

        llm = registry.build("llm", judge.llm, shared=False)
        rng = random.Random(f"{seed}:{call['id']}")
        for pair in pairs:
            try:
                await prefer(judge, llm, pair, runner.system_prompt(arm), rng, cost)
            except Exception as exc:  # a vendor failure: this pair is unjudged, the replay goes on
                pair.reason = f"unjudged: the judge failed: {type(exc).__name__}: {exc}"
    judged = [p.preferred for p in pairs if p.preferred is not None]
    win = (judged.count("candidate") + 0.5 * judged.count("tie")) / len(judged) if judged else None
    answered = all(line.response_delay_ms is not None for line in heard.lines[:-1]) and bool(pairs)
    return {"run": runner.run, "scenario": "replay", "arm": arm, "call_id": record.call_id, "kind": "replay",
            "passed": answered, "checks": [{"name": "every replayed turn answered", "passed": answered,
                                            "detail": f"{len(pairs)} of {len(lines)} utterance(s) paired"}],
            "scores": {}, "talk_over_s": record.talk_over_s,
            "judge": {"original_call": call["id"], "original_pipeline": call["pipeline"], "win_rate": win,
                      "pairs": [vars(pair) for pair in pairs]},
            "judge_tokens_in": cost.tokens_in or None, "judge_tokens_out": cost.tokens_out or None,
            "judge_cost": _judge_cost(judge, cost)}


def _judge_cost(judge: Judge | None, cost: JudgeResult) -> float | None:
    if judge is None or not judge.price:
        return None
    return round((cost.tokens_in * judge.price.get("input_per_1m", 0.0)
                  + cost.tokens_out * judge.price.get("output_per_1m", 0.0)) / 1e6, 6)


async def replay(config: Config, names: list[str], store: CallStore, *, since: Any, from_pipeline: str | None,
                 limit: int, judge: Judge | None = None, url: str | None = None, run: str | None = None,
                 seed: int = 0, providers: dict[str, Any] | None = None, err: TextIO | None = None) -> str:
    """Replay the recorded calls into each pipeline of `names`; the run's id."""
    arms = arms_of(config, names)
    evals = EvalsFile(scenarios=[Scenario(name="replay", script=[{"say": "-"}])], judge=judge)  # type: ignore[list-item]
    runner = Runner(evals, config, arms, store, run=run or new_run_id(), url=url, providers=providers)
    calls = await recorded_calls(store, since, from_pipeline, limit)
    err = err or sys.stderr
    print(f"eval {runner.run}: replaying {len(calls)} recorded call(s) into {', '.join(arms)}", file=err)
    with tempfile.TemporaryDirectory(prefix="switchboard-replay-") as tmp:
        async with runner.server() as live_url:
            for n, call in enumerate(calls, 1):
                for arm in arms:
                    if call["pipeline"] == arm:
                        continue
                    row = await replay_one(runner, live_url, call, arm, Path(tmp), judge, seed)
                    await store.add_eval_result(row)
                    win = row["judge"]["win_rate"]
                    print(f"eval {runner.run}: {n}/{len(calls)} {call['id']} -> {arm}: "
                          f"{len(row['judge']['pairs'])} turn(s) paired"
                          + ("" if win is None else f", candidate preferred {100 * win:.0f}%"), file=err)
    return runner.run


def run_replay(args: argparse.Namespace, config: Config, names: list[str], db: str,
               gates: list[tuple[str, str, float]], out: TextIO) -> int:
    """`switchboard eval --replay`: the judge comes from the evals file, when one is given or found."""
    from switchboard.evals.scenarios import load_evals
    from switchboard.report import parse_since
    from switchboard.report.evals import check_gates, format_summary

    try:
        since = parse_since(args.since)
    except ValueError as exc:
        print(f"switchboard eval: --since: {exc}", file=sys.stderr)
        return 2
    judge = None
    if args.evals or Path("evals.yaml").is_file():
        judge = load_evals(args.evals or "evals.yaml").judge
    run, summary = asyncio.run(_replay_and_summarise(args, config, names, db, judge, since))
    print(format_summary(summary), file=out)
    print(f"\nstored as eval run {run}: `switchboard report --evals {run}`", file=out)
    failures = check_gates(summary, gates)
    for failure in failures:
        print(f"switchboard eval: gate failed: {failure}", file=sys.stderr)
    return 1 if failures else 0


async def _replay_and_summarise(args: argparse.Namespace, config: Config, names: list[str], db: str,
                                judge: Judge | None, since: Any) -> tuple[str, Any]:
    from switchboard.report import pricing_from_config
    from switchboard.report.evals import build_summary

    store = CallStore(db)
    await store.open()
    try:
        run = await replay(config, names, store, since=since, from_pipeline=args.from_pipeline,
                           limit=args.limit, judge=judge, url=args.url, run=args.run_id)
        return run, build_summary(run, await store.query_eval_results(run), pricing_from_config(config))
    finally:
        await store.close()
