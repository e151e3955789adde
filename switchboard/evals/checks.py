"""The deterministic checks of an eval call: each `expect:` rule of its scenario, a pass or a fail with the
reason, read from what the server recorded (its turns, as the store holds them) and what the caller heard.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import jsonschema

from switchboard.evals.scenarios import Expect, ToolExpectation


@dataclass
class CallRecord:
    """One eval call as the checks and the judge see it.

    `turns` are store rows (`store.turn_row` or `CallStore.get_call`'s), in order; `lines` what the caller
    said, each with whether bot audio came back after it; `hung_up`: the server ended the call."""

    call_id: str
    turns: list[dict[str, Any]]
    lines: list[dict[str, Any]] = field(default_factory=list)  # {"text", "spoken", "answered", "over_bot"}
    talk_over_s: float = 0.0
    hung_up: bool = False
    transferred_to: str | None = None

    def transcript(self) -> str:
        """The call as the judge reads it: the caller as the bot's recogniser heard them, the bot as heard."""
        out = []
        for turn in self.turns:
            if turn.get("transcript"):
                out.append(f"caller: {turn['transcript']}")
            said = turn.get("reply_heard") or ""
            if turn.get("tool_args"):
                out += [f"(bot called {tool['name']} with {tool['arguments']}: {tool['status']})"
                        for tool in turn["tool_args"]]
            if said:
                out.append(f"bot: {said}" + (" [interrupted]" if turn.get("interrupted") else ""))
        return "\n".join(out)


@dataclass
class Check:
    name: str
    passed: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_checks(expect: Expect, call: CallRecord) -> list[Check]:
    """Every check `expect` asks for, in a fixed order."""
    checks = [_tool(rule, call) for rule in expect.tools]
    checks += [_no_tool(name, call) for name in expect.no_tools]
    if expect.end_call is not None:
        checks.append(_end_call(expect.end_call, call))
    if expect.transferred is not None:
        checks.append(_transferred(expect.transferred, call))
    if expect.max_turns is not None:
        answered = sum(1 for turn in call.turns if turn.get("kind") in ("reply", "keypad"))
        checks.append(Check(f"max_turns {expect.max_turns}", answered <= expect.max_turns,
                            f"{answered} caller turn(s) answered"))
    if expect.no_unanswered_turn:
        checks.append(_unanswered(call))
    if expect.max_talk_over_s is not None:
        checks.append(Check(f"max_talk_over_s {expect.max_talk_over_s:g}",
                            call.talk_over_s <= expect.max_talk_over_s,
                            f"the bot and the caller spoke at once for {call.talk_over_s:.2f} s"))
    heard = " ".join(turn.get("reply_heard") or "" for turn in call.turns)
    for pattern in expect.said:
        found = re.search(pattern, heard, re.IGNORECASE)
        checks.append(Check(f"said /{pattern}/", found is not None,
                            f"heard {found.group(0)!r}" if found else "never heard from the bot"))
    for pattern in expect.never_said:
        found = re.search(pattern, heard, re.IGNORECASE)
        checks.append(Check(f"never_said /{pattern}/", found is None,
                            f"the bot said {found.group(0)!r}" if found else "not said"))
    return checks


def tool_calls(call: CallRecord) -> list[dict[str, Any]]:
    return [tool for turn in call.turns for tool in (turn.get("tool_args") or [])]


def _tool(rule: ToolExpectation, call: CallRecord) -> Check:
    name = f"tool {rule.name}"
    calls = [tool for tool in tool_calls(call) if tool.get("name") == rule.name]
    if not calls:
        made = sorted({tool.get("name", "?") for tool in tool_calls(call)})
        return Check(name, False, f"never called{'; called ' + ', '.join(made) if made else ''}")
    reasons = [_argument_problem(rule, tool.get("arguments") or {}) for tool in calls]
    if any(reason is None for reason in reasons):
        good = calls[reasons.index(None)]
        return Check(name, True, f"called with {good.get('arguments')}")
    return Check(name, False, f"called {len(calls)} time(s), never as expected: {reasons[-1]}")


def _same(want: Any, got: Any) -> bool:
    if isinstance(want, str) and isinstance(got, str):
        return " ".join(want.split()).casefold() == " ".join(got.split()).casefold()
    return bool(want == got)


def _argument_problem(rule: ToolExpectation, arguments: dict[str, Any]) -> str | None:
    """Why `arguments` break the rule, or None."""
    for key, want in rule.arguments.items():
        if key not in arguments:
            return f"no {key!r} argument in {arguments}"
        if not _same(want, arguments[key]):
            return f"{key} was {arguments[key]!r}, expected {want!r}"
    for key, pattern in rule.matching.items():
        if key not in arguments or not re.search(pattern, str(arguments[key]), re.IGNORECASE):
            return f"{key} was {arguments.get(key)!r}, expected a match of /{pattern}/"
    if rule.json_schema is not None:
        error = jsonschema.exceptions.best_match(
            jsonschema.Draft202012Validator(rule.json_schema).iter_errors(arguments))
        if error is not None:
            return f"arguments {arguments} break the schema: {error.message}"
    return None


def _no_tool(tool: str, call: CallRecord) -> Check:
    count = sum(1 for made in tool_calls(call) if made.get("name") == tool)
    return Check(f"no tool {tool}", count == 0, f"called {count} time(s)" if count else "not called")


def _end_call(wanted: bool, call: CallRecord) -> Check:
    ended = any(turn.get("ended_call") for turn in call.turns)
    said = "the bot ended the call" if ended else "the bot did not end the call"
    return Check(f"end_call {str(wanted).lower()}", ended == wanted, said)


def _transferred(wanted: bool | str, call: CallRecord) -> Check:
    target = call.transferred_to
    said = f"transferred to {target}" if target else "not transferred"
    if isinstance(wanted, str):
        return Check(f"transferred to {wanted}", target == wanted, said)
    return Check(f"transferred {str(wanted).lower()}", bool(target) == wanted, said)


def _unanswered(call: CallRecord) -> Check:
    """Every line the caller spoke (not a backchannel) got bot audio back; the last one may end the call."""
    spoken = [line for line in call.lines if line["spoken"] and not line.get("backchannel")]
    missed = [line["text"] for line in spoken if not line["answered"]]
    if missed and call.hung_up and spoken and not spoken[-1]["answered"] and missed == [spoken[-1]["text"]]:
        missed = []  # the bot hung up after its last words: nothing was left unanswered
    errors = [turn["transcript"] for turn in call.turns if turn.get("error")]
    detail = (f"no reply to {', '.join(repr(text) for text in missed)}" if missed else
              f"the apology answered {', '.join(repr(text) for text in errors)}" if errors else
              f"all {len(spoken)} line(s) answered")
    return Check("no unanswered caller turn", not missed and not errors, detail)
