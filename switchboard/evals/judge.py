"""The LLM judge: scores one eval call from its transcript, or records why it could not.

The judge (any LLM plug-in, `judge:` in evals.yaml) gets the prompt, the business's system prompt, the
rubric and the scenario's criteria, and the transcript (what the caller said as the bot heard it, what the
caller heard the bot say, the tools it called). Its answer must be JSON matching `answer_schema`: a score
of 1-5 with quoted evidence per rubric item, and met true/false with evidence per criterion. A malformed
or incomplete answer is asked for again once (with what was wrong); a second failure, a vendor error or a
missing judge leaves the call "unjudged" with the reason, never passed. Tokens and cost are recorded.
"""

from __future__ import annotations

import json
import logging
import re
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from switchboard.core.errors import ProviderError
from switchboard.core.messages import Message, TextDelta, Usage
from switchboard.evals.checks import CallRecord
from switchboard.evals.scenarios import Judge, Scenario

log = logging.getLogger("switchboard.evals")
JUDGE_TIMEOUT_S = 60.0
_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


@dataclass
class JudgeResult:
    """The judge's verdict on one call; `unjudged` says why there is none."""

    scores: dict[str, int] = field(default_factory=dict)  # rubric item -> 1..5
    criteria: dict[str, bool] = field(default_factory=dict)  # the scenario's criterion -> met
    evidence: dict[str, str] = field(default_factory=dict)  # rubric item or criterion -> quoted evidence
    unjudged: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float | None = None
    attempts: int = 0

    @property
    def passed(self) -> bool | None:
        if self.unjudged is not None:
            return None
        return all(self.criteria.values())

    def answer(self) -> dict[str, Any]:
        if self.unjudged is not None:
            return {"unjudged": self.unjudged, "attempts": self.attempts}
        return {"criteria": self.criteria, "evidence": self.evidence, "attempts": self.attempts}


def answer_schema(rubric: list[str], criteria: list[str]) -> dict[str, Any]:
    """The JSON the judge must answer with."""
    score = {"type": "object", "required": ["score", "evidence"],
             "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 5},
                            "evidence": {"type": "string"}}}
    met = {"type": "object", "required": ["met", "evidence"],
           "properties": {"met": {"type": "boolean"}, "evidence": {"type": "string"}}}
    return {"type": "object", "required": ["scores", "criteria"], "properties": {
        "scores": {"type": "object", "required": rubric, "properties": dict.fromkeys(rubric, score)},
        "criteria": {"type": "object", "required": criteria, "properties": dict.fromkeys(criteria, met)}}}


def judge_messages(judge: Judge, scenario: Scenario, record: CallRecord, system_prompt: str) -> list[Message]:
    rubric = "\n".join(f"- {name}: {meaning}" for name, meaning in judge.rubric.items())
    criteria = "\n".join(f"- {text}" for text in scenario.judged) or "(none)"
    example = {"scores": {name: {"score": 4, "evidence": "a quote"} for name in judge.rubric},
               "criteria": {text: {"met": True, "evidence": "a quote"} for text in scenario.judged}}
    system = (f"{judge.prompt}\n\nThe business's system prompt:\n{system_prompt or '(none given)'}\n\n"
              f"Score each rubric item from 1 to 5:\n{rubric}\n\nSay for each criterion whether the call met "
              f"it:\n{criteria}\n\nAnswer with one JSON object and nothing else, shaped like:\n"
              f"{json.dumps(example)}")
    goal = f"The caller's goal: {scenario.goal}\n" if scenario.goal else ""
    return [Message("system", system),
            Message("user", f"{goal}The call's transcript:\n{record.transcript() or '(nothing was said)'}")]


def parse_answer(text: str, schema: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The judge's JSON answer, or None and what is wrong with it."""
    fenced = _FENCE.match(text)
    body = fenced.group(1) if fenced else text.strip()
    if not body:
        return None, "the answer was empty"
    try:
        answer = json.loads(body)
    except ValueError as exc:
        return None, f"the answer is not JSON ({exc.msg} at character {exc.pos})"
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(answer))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "the top level"
        return None, f"the answer does not match the schema at {where}: {error.message}"
    return answer, ""


async def _ask(llm: Any, messages: list[Message], result: JudgeResult) -> str:
    text = []
    async with aclosing(llm.stream(messages, [])) as events:
        async for event in events:
            if isinstance(event, TextDelta):
                text.append(event.text)
            elif isinstance(event, Usage):
                result.tokens_in += event.input_tokens
                result.tokens_out += event.output_tokens
    return "".join(text)


async def judge_call(judge: Judge | None, scenario: Scenario, record: CallRecord,
                     system_prompt: str) -> JudgeResult | None:
    """The judge's verdict on `record`; None when there is neither a judge nor a criterion to judge."""
    if judge is None:
        return JudgeResult(unjudged="no judge: in the evals file") if scenario.judged else None
    import asyncio

    from switchboard.providers import registry

    result = JudgeResult()
    schema = answer_schema(list(judge.rubric), scenario.judged)
    messages = judge_messages(judge, scenario, record, system_prompt)
    try:
        llm = registry.build("llm", judge.llm, shared=False)
        for attempt in (1, 2):
            result.attempts = attempt
            text = await asyncio.wait_for(_ask(llm, messages, result), JUDGE_TIMEOUT_S)
            answer, problem = parse_answer(text, schema)
            if answer is not None:
                _fill(result, answer, list(judge.rubric), scenario.judged)
                break
            log.warning("judge: call %s, attempt %d: %s", record.call_id, attempt, problem)
            result.unjudged = f"malformed answer twice: {problem}"
            messages = [*messages, Message("assistant", text),
                        Message("user", f"That answer cannot be used: {problem}. Answer again with only the "
                                        "JSON object, every rubric item and criterion included.")]
    except (ProviderError, TimeoutError, OSError) as exc:
        result.unjudged = f"the judge failed: {exc}"
    except Exception as exc:  # a vendor SDK's own error: the run goes on, the call is unjudged
        log.exception("judge: call %s", record.call_id)
        result.unjudged = f"the judge failed: {type(exc).__name__}: {exc}"
    result.cost = _cost(judge, result)
    return result


def _fill(result: JudgeResult, answer: dict[str, Any], rubric: list[str], criteria: list[str]) -> None:
    """The answer's scores and verdicts on what was asked (anything else it made up is left out)."""
    result.unjudged = None
    for name in rubric:
        result.scores[name] = int(answer["scores"][name]["score"])
        result.evidence[name] = str(answer["scores"][name]["evidence"])
    for text in criteria:
        result.criteria[text] = bool(answer["criteria"][text]["met"])
        result.evidence[text] = str(answer["criteria"][text]["evidence"])


def _cost(judge: Judge, result: JudgeResult) -> float | None:
    price = judge.price
    if not price:
        return None
    return round((result.tokens_in * price.get("input_per_1m", 0.0)
                  + result.tokens_out * price.get("output_per_1m", 0.0)) / 1e6, 6)
