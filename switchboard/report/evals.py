"""`switchboard report --evals RUN` and the dashboard's eval pages: an eval run per arm (pipeline), with
intervals and significance. One summary (`build_summary`), rendered as text (`format_summary`), JSON
(`summary_json`: `--json` and `GET /api/evals/RUN`) and HTML (report/evals_html.py: `--html` and
`/dashboard/evals/RUN`); the list of runs (`run_overviews`) for the dashboard.

Per arm: the pass rate per scenario and overall with Wilson 95 % intervals (unjudged calls are counted
apart, never as passes or fails), the judge's mean score per rubric item with bootstrap 95 % intervals,
pairwise win rates (how often a call of this arm beats one of the other's, on its quality: the mean judged
score, or passed 1 / failed 0 when unjudged), and significance against the best arm (highest pass rate):
Fisher's exact test on pass/fail, Mann-Whitney U on quality; beside the voice-to-voice p50, talk-over per
call, interruptions, the calls' cost (the live report's pricing) and the judge's tokens and cost per call.
`--gate "pass_rate>=0.9"` (also score, v2v_p50_ms, talk_over_s, cost_per_call, unjudged) fails an arm
whose figure falls short.
"""

from __future__ import annotations

import operator
import re
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from switchboard.report import build_report, percentile
from switchboard.report.eval_stats import (
    bootstrap_mean_interval,
    fisher_exact_p,
    mann_whitney_p,
    pairwise_win_rate,
    wilson,
)

ALPHA = 0.05
ORIGINAL = "original"  # a replay's other side: the pipeline the recorded calls were answered by
_GATE = re.compile(r"^\s*([a-z_0-9]+)\s*(>=|<=|==|>|<)\s*(-?\d+(?:\.\d*)?)\s*$")
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, "==": operator.eq, ">": operator.gt, "<": operator.lt}
GATE_FIGURES = ("pass_rate", "score", "v2v_p50_ms", "talk_over_s", "cost_per_call", "unjudged")


@dataclass
class Rate:
    passed: int = 0
    failed: int = 0
    unjudged: int = 0

    @property
    def judged(self) -> int:
        return self.passed + self.failed

    @property
    def rate(self) -> float | None:
        return self.passed / self.judged if self.judged else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return wilson(self.passed, self.judged)

    def add(self, passed: bool | None) -> None:
        if passed is None:
            self.unjudged += 1
        elif passed:
            self.passed += 1
        else:
            self.failed += 1


@dataclass
class Arm:
    name: str
    calls: int = 0
    overall: Rate = field(default_factory=Rate)
    scenarios: dict[str, Rate] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)  # rubric item -> mean
    score_intervals: dict[str, tuple[float, float] | None] = field(default_factory=dict)
    score: float | None = None  # mean of every judged score
    quality: list[float] = field(default_factory=list, repr=False)  # per call, for the tests and win rates
    win_rates: dict[str, float | None] = field(default_factory=dict)  # other arm -> P(this call beats one)
    best: bool = False
    pass_p_value: float | None = None  # Fisher's exact, against the best arm
    score_p_value: float | None = None  # Mann-Whitney U on quality, against the best arm
    v2v_p50_ms: float | None = None
    talk_over_s: float | None = None  # mean per call
    interruptions_pct: float | None = None
    cost_per_call: float | None = None
    judge_tokens_per_call: float | None = None
    judge_cost_per_call: float | None = None
    failing_checks: dict[str, int] = field(default_factory=dict)  # check -> calls it failed
    unjudged_reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class CallVerdict:
    """One eval call as the run's page lists it: its checks, the judge's verdicts with evidence, and for a
    replay the pairs of answers the judge compared."""

    call_id: str
    arm: str
    scenario: str
    kind: str  # "call" or "replay"
    passed: bool | None  # None: unjudged
    checks: list[dict[str, Any]]  # {"name", "passed", "detail"}
    scores: dict[str, float] = field(default_factory=dict)  # rubric item -> 1..5
    criteria: dict[str, bool] = field(default_factory=dict)  # the scenario's criterion -> met
    evidence: dict[str, str] = field(default_factory=dict)  # rubric item or criterion -> the judge's quote
    unjudged: str | None = None
    pairs: list[dict[str, Any]] = field(default_factory=list)  # a replay's caller turns, both answers
    original_call: str | None = None  # a replay's recorded call
    turns: int = 0  # caller turns the bot answered
    v2v_p50_ms: float | None = None
    talk_over_s: float | None = None
    interrupted: int = 0
    judge_cost: float | None = None
    created_at: Any = None


@dataclass
class Summary:
    run: str
    arms: list[Arm]
    scenarios: list[str]
    rubric: list[str]
    kind: str = "call"  # "replay": a replay run (pairwise preferences)
    alpha: float = ALPHA
    notes: list[str] = field(default_factory=list)
    calls: list[CallVerdict] = field(default_factory=list)
    started_at: Any = None  # the first and last verdict's time (UTC)
    ended_at: Any = None


def _quality(row: dict[str, Any]) -> float:
    scores = list((row.get("scores") or {}).values())
    if scores:
        return float(statistics.fmean(scores))
    return 1.0 if row.get("passed") else 0.0


def build_summary(run: str, rows: list[dict[str, Any]], pricing: dict | None = None) -> Summary:
    """The run's summary from `CallStore.query_eval_results(run)` rows (each with its call's turns)."""
    by_arm: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_arm.setdefault(row["arm"], []).append(row)
    scenarios = list(dict.fromkeys(row["scenario"] for row in rows))
    rubric = list(dict.fromkeys(name for row in rows for name in (row.get("scores") or {})))
    arms = [_arm(name, arm_rows, rubric, pricing) for name, arm_rows in by_arm.items()]
    _compare(arms)
    kind = "replay" if any(row.get("kind") == "replay" for row in rows) else "call"
    notes = ["replayed callers: each line was sent when the candidate finished its reply; later lines may "
             "no longer fit the candidate's answers"] if kind == "replay" else []
    times = [row["created_at"] for row in rows if row.get("created_at") is not None]
    return Summary(run, arms, scenarios, rubric, kind=kind, notes=notes,
                   calls=[_verdict(row) for row in rows], started_at=min(times, default=None),
                   ended_at=max(times, default=None))


def _verdict(row: dict[str, Any]) -> CallVerdict:
    judge = row.get("judge") or {}
    replies = [turn for turn in row.get("turns") or [] if turn.get("kind") == "reply"]
    return CallVerdict(
        call_id=row["call_id"], arm=row["arm"], scenario=row["scenario"], kind=row.get("kind") or "call",
        passed=row.get("passed"), checks=list(row.get("checks") or []), scores=dict(row.get("scores") or {}),
        criteria=dict(judge.get("criteria") or {}), evidence=dict(judge.get("evidence") or {}),
        unjudged=judge.get("unjudged"), pairs=list(judge.get("pairs") or []),
        original_call=judge.get("original_call"), turns=len(replies),
        v2v_p50_ms=percentile([t["voice_to_voice_ms"] for t in replies
                               if t.get("voice_to_voice_ms") is not None], 50),
        talk_over_s=row.get("talk_over_s"), interrupted=sum(bool(t.get("interrupted")) for t in replies),
        judge_cost=row.get("judge_cost"), created_at=row.get("created_at"))


def _arm(name: str, rows: list[dict[str, Any]], rubric: list[str], pricing: dict | None) -> Arm:
    arm = Arm(name, calls=len(rows))
    for row in rows:
        arm.overall.add(row.get("passed"))
        arm.scenarios.setdefault(row["scenario"], Rate()).add(row.get("passed"))
        for check in row.get("checks") or []:
            if not check.get("passed"):
                arm.failing_checks[check["name"]] = arm.failing_checks.get(check["name"], 0) + 1
        reason = (row.get("judge") or {}).get("unjudged")
        if reason:
            arm.unjudged_reasons[reason] = arm.unjudged_reasons.get(reason, 0) + 1
    for item in rubric:
        values = [float(row["scores"][item]) for row in rows if item in (row.get("scores") or {})]
        if values:
            arm.scores[item] = round(statistics.fmean(values), 2)
            arm.score_intervals[item] = bootstrap_mean_interval(values)
    preferred = [pair["preferred"] for row in rows for pair in (row.get("judge") or {}).get("pairs") or []
                 if pair.get("preferred") is not None]
    if preferred:  # a replay: the judge's preference per caller turn between the original and this arm
        wins = preferred.count("candidate") + 0.5 * preferred.count("tie")
        arm.win_rates[ORIGINAL] = round(wins / len(preferred), 3)
    every = [float(v) for row in rows for v in (row.get("scores") or {}).values()]
    arm.score = round(statistics.fmean(every), 2) if every else None
    arm.quality = [_quality(row) for row in rows if row.get("passed") is not None or row.get("scores")]
    turns = [turn for row in rows for turn in row.get("turns") or []]
    replies = [turn for turn in turns if turn.get("kind") == "reply"]
    arm.v2v_p50_ms = percentile([t["voice_to_voice_ms"] for t in replies if t.get("voice_to_voice_ms")
                                 is not None], 50)
    talk = [row["talk_over_s"] for row in rows if row.get("talk_over_s") is not None]
    arm.talk_over_s = round(statistics.fmean(talk), 2) if talk else None
    arm.interruptions_pct = round(100 * sum(bool(t.get("interrupted")) for t in replies) / len(replies), 1) \
        if replies else None
    arm.cost_per_call = _cost_per_call(turns, pricing)
    tokens = [(row.get("judge_tokens_in") or 0) + (row.get("judge_tokens_out") or 0) for row in rows]
    arm.judge_tokens_per_call = round(statistics.fmean(tokens), 1) if any(tokens) else None
    costs = [row["judge_cost"] for row in rows if row.get("judge_cost") is not None]
    arm.judge_cost_per_call = round(sum(costs) / len(rows), 6) if costs else None
    return arm


def _cost_per_call(turns: list[dict[str, Any]], pricing: dict | None) -> float | None:
    """The calls' cost as the live report prices it (LLM, STT, TTS), per call."""
    if not turns or not pricing:
        return None
    rows = build_report(turns, [], pricing).rows
    priced = [(row.cost_per_call, row.calls) for row in rows if row.cost_per_call is not None]
    calls = len({turn["call_id"] for turn in turns})
    return round(sum(cost * n for cost, n in priced) / calls, 6) if priced else None


def _compare(arms: list[Arm]) -> None:
    """Win rates between every pair; the best arm (highest pass rate, then score); tests against it."""
    for arm in arms:
        arm.win_rates.update({other.name: pairwise_win_rate(arm.quality, other.quality)
                              for other in arms if other is not arm})
    rated = [arm for arm in arms if arm.overall.rate is not None]
    if not rated:
        return
    best = max(rated, key=lambda arm: (arm.overall.rate or 0.0, arm.score or 0.0))
    best.best = True
    for arm in rated:
        if arm is best:
            continue
        arm.pass_p_value = fisher_exact_p(best.overall.passed, best.overall.failed,
                                          arm.overall.passed, arm.overall.failed)
        if len(arm.quality) >= 2 and len(best.quality) >= 2:
            arm.score_p_value = mann_whitney_p(arm.quality, best.quality)


# --- the list of runs -----------------------------------------------------------------------------------


@dataclass
class RunOverview:
    """One eval run in the dashboard's list: when, what it placed, and how much passed."""

    run: str
    started_at: Any = None
    ended_at: Any = None
    kind: str = "call"
    scenarios: list[str] = field(default_factory=list)
    arms: dict[str, Rate] = field(default_factory=dict)  # arm -> its pass rate
    overall: Rate = field(default_factory=Rate)

    @property
    def calls(self) -> int:
        return self.overall.judged + self.overall.unjudged


def run_overviews(rows: list[dict[str, Any]]) -> list[RunOverview]:
    """The runs of `CallStore.eval_run_rows` rows (run, scenario, arm, kind, passed, created_at; in the
    order they were stored), the latest first: the one whose last verdict was stored last, as
    `report --evals latest` reads it."""
    runs: dict[str, RunOverview] = {}
    last: dict[str, int] = {}
    for n, row in enumerate(rows):
        last[row["run"]] = n
        run = runs.setdefault(row["run"], RunOverview(row["run"]))
        when = row.get("created_at")
        if when is not None:
            run.started_at = when if run.started_at is None else min(run.started_at, when)
            run.ended_at = when if run.ended_at is None else max(run.ended_at, when)
        if row.get("kind") == "replay":
            run.kind = "replay"
        if row["scenario"] not in run.scenarios:
            run.scenarios.append(row["scenario"])
        run.arms.setdefault(row["arm"], Rate()).add(row.get("passed"))
        run.overall.add(row.get("passed"))
    return sorted(runs.values(), key=lambda run: last[run.run], reverse=True)


def _plain(value: Any) -> Any:
    """Datetimes as ISO 8601 strings, recursively: the JSON reads the same from the command line and the
    dashboard."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def rate_json(rate: Rate) -> dict[str, Any]:
    return {**asdict(rate), "judged": rate.judged, "rate": rate.rate, "interval": rate.interval}


def overview_json(run: RunOverview) -> dict[str, Any]:
    return _plain({"run": run.run, "started_at": run.started_at, "ended_at": run.ended_at, "kind": run.kind,
                   "scenarios": run.scenarios, "calls": run.calls, "overall": rate_json(run.overall),
                   "arms": {name: rate_json(rate) for name, rate in run.arms.items()}})


# --- gates ----------------------------------------------------------------------------------------------


def parse_gates(rules: list[str]) -> list[tuple[str, str, float]]:
    """`pass_rate>=0.9` -> ("pass_rate", ">=", 0.9); raises ValueError naming the rule and the fix."""
    gates = []
    for rule in rules:
        match = _GATE.match(rule)
        if match is None or match.group(1) not in GATE_FIGURES:
            raise ValueError(f"--gate {rule!r}: write FIGURE OP NUMBER, e.g. \"pass_rate>=0.9\"; figures: "
                             f"{', '.join(GATE_FIGURES)}; operators: >=, <=, >, <, ==")
        gates.append((match.group(1), match.group(2), float(match.group(3))))
    return gates


def _figure(arm: Arm, name: str) -> float | None:
    if name == "pass_rate":
        return arm.overall.rate
    if name == "unjudged":
        return float(arm.overall.unjudged)
    return getattr(arm, name)


def check_gates(summary: Summary, gates: list[tuple[str, str, float]]) -> list[str]:
    """Every arm × gate that fails, as a sentence; an arm without the figure fails it."""
    failures = []
    for arm in summary.arms:
        for name, op, bound in gates:
            value = _figure(arm, name)
            if value is None:
                failures.append(f"{arm.name}: {name} {op} {bound:g}: no {name} (nothing measured)")
            elif not _OPS[op](value, bound):
                failures.append(f"{arm.name}: {name} is {value:.3g}, needs {op} {bound:g}")
    return failures


# --- output ---------------------------------------------------------------------------------------------


def rate_text(rate: Rate) -> str:
    """"3/4 75% [30-95]": passed/judged, the rate and its 95 % Wilson interval; unjudged counted apart."""
    if rate.rate is None:
        return f"- ({rate.unjudged} unjudged)" if rate.unjudged else "-"
    low, high = rate.interval or (0.0, 0.0)
    extra = f", {rate.unjudged} unjudged" if rate.unjudged else ""
    return f"{rate.passed}/{rate.judged} {100 * rate.rate:.0f}% [{100 * low:.0f}-{100 * high:.0f}]{extra}"


def _num(value: float | None, digits: int = 0, unit: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def _p(value: float | None, alpha: float) -> str:
    return "-" if value is None else f"{value:.3g}{'*' if value < alpha else ''}"


def table(summary: Summary) -> list[tuple[str, list[str]]]:
    """(label, one cell per arm) rows: the report's table, for text and HTML alike."""
    arms = summary.arms
    rows: list[tuple[str, list[str]]] = [("calls", [str(arm.calls) for arm in arms])]
    rows += [(f"pass: {name}", [rate_text(arm.scenarios.get(name, Rate())) for arm in arms])
             for name in summary.scenarios]
    rows.append(("pass: overall", [rate_text(arm.overall) + (" (best)" if arm.best else "") for arm in arms]))
    rows.append(("p pass vs best (Fisher)", [_p(arm.pass_p_value, summary.alpha) for arm in arms]))
    for item in summary.rubric:
        rows.append((f"score: {item}", [
            "-" if item not in arm.scores else
            f"{arm.scores[item]:.2f}" + ("" if not arm.score_intervals.get(item) else
                                         " [{:.2f}-{:.2f}]".format(*arm.score_intervals[item]))  # type: ignore[str-format]
            for arm in arms]))
    rows.append(("p quality vs best (M-W)", [_p(arm.score_p_value, summary.alpha) for arm in arms]))
    for other in arms:
        rows.append((f"wins vs {other.name}", [
            "" if arm is other else _num(None if arm.win_rates.get(other.name) is None
                                         else 100 * arm.win_rates[other.name], 0, "%")  # type: ignore[operator]
            for arm in arms]))
    if any(ORIGINAL in arm.win_rates for arm in arms):
        rows.append(("judge prefers it to the original", [
            _num(None if arm.win_rates.get(ORIGINAL) is None else 100 * arm.win_rates[ORIGINAL],  # type: ignore[operator]
                 0, "%") for arm in arms]))
    rows += [("voice-to-voice p50", [_num(arm.v2v_p50_ms, 0, " ms") for arm in arms]),
             ("talk-over per call", [_num(arm.talk_over_s, 2, " s") for arm in arms]),
             ("interruptions", [_num(arm.interruptions_pct, 1, "%") for arm in arms]),
             ("cost per call", [_num(arm.cost_per_call, 4, " $") for arm in arms]),
             ("judge tokens per call", [_num(arm.judge_tokens_per_call, 0) for arm in arms]),
             ("judge cost per call", [_num(arm.judge_cost_per_call, 4, " $") for arm in arms])]
    return rows


def format_summary(summary: Summary) -> str:
    rows = [("eval run " + summary.run, [arm.name for arm in summary.arms]), *table(summary)]
    widths = [max(len(label) for label, _ in rows)]
    widths += [max(len(cells[i]) for _, cells in rows) for i in range(len(summary.arms))]
    lines = []
    for n, (label, cells) in enumerate(rows):
        lines.append("  ".join([label.ljust(widths[0]), *(cell.rjust(w) for cell, w in zip(cells, widths[1:],
                                                                                           strict=True))]))
        if n == 0:
            lines.append("-" * len(lines[0]))
    for arm in summary.arms:
        for check, count in sorted(arm.failing_checks.items()):
            lines.append(f"{arm.name}: {count} call(s) failed `{check}`")
        for reason, count in sorted(arm.unjudged_reasons.items()):
            lines.append(f"{arm.name}: {count} call(s) unjudged: {reason}")
    lines.append(f"pass rates: passed/judged, 95 % Wilson interval; scores: mean, 95 % bootstrap interval; "
                 f"* p < {summary.alpha} against the best arm")
    lines += summary.notes
    return "\n".join(lines)


def summary_json(summary: Summary) -> dict[str, Any]:
    """The summary as JSON: `report --evals RUN --json` and the dashboard's `GET /api/evals/RUN`."""
    out = asdict(summary)
    for arm, data in zip(summary.arms, out["arms"], strict=True):
        data.pop("quality")
        data["overall"] = rate_json(arm.overall)
        data["scenarios"] = {name: rate_json(rate) for name, rate in arm.scenarios.items()}
    out["table"] = [{"row": label, "cells": dict(zip([arm.name for arm in summary.arms], cells, strict=True))}
                    for label, cells in table(summary)]
    return _plain(out)
