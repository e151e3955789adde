"""evals.yaml: the scenarios a simulated caller plays, and what success means (docs/evals.md).

Read like pipeline.yaml (`config/loading.py`'s YAML reader: duplicate keys refused, errors with their line)
and validated by the models below; every problem is one line `<yaml path>: <what to fix>`, worded by
`config/messages.py`. `load_evals(path)` returns an `EvalsFile` or raises `ConfigError`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
from pydantic import Field, ValidationError, field_validator, model_validator

from switchboard.config.loading import _parse_yaml
from switchboard.config.messages import ConfigError, describe, format_path
from switchboard.config.schema import LLMConfig, STTConfig, TTSConfig
from switchboard.core.settings import Strict

EVALS_FILE_NAME = "evals.yaml"
BUNDLED_EVALS = Path(__file__).resolve().parent / EVALS_FILE_NAME  # runs offline on the bundled pipeline
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")

DEFAULT_JUDGE_PROMPT = (
    "You judge one phone call between a caller and a business's voice bot, from its transcript (what the "
    "caller said as the bot's recogniser heard it, and what the caller heard the bot say). The business's "
    "instructions to the bot are its system prompt, given below. Judge only from the transcript; quote it "
    "as evidence.")
DEFAULT_RUBRIC = {
    "goal": "Did the caller get what they called for? 1 = not at all, 5 = fully, nothing left undone.",
    "faithful": "Did the bot say only what is true for this business (its system prompt, the tools' "
                "results)? 1 = invented facts, 5 = nothing invented.",
    "spoken_style": "Were the bot's replies short spoken sentences, without lists, markdown or reading "
                    "out symbols? 1 = written style, 5 = natural speech.",
}


class Speech(Strict):
    """How the simulated caller speaks."""

    voice: str = "piper"  # piper (the embedded voice, pitched up) or an eSpeak NG voice, e.g. en-us+f3
    rate: float = Field(1.0, ge=0.5, le=2.0)  # > 1 speaks faster
    noise_db: float | None = Field(None, ge=-80, le=0)  # background noise level under the caller (dBFS)


class Line(Strict):
    """One scripted caller line: exactly one of say, interrupt, backchannel or wav."""

    say: str | None = None  # spoken once the bot has finished; "[0.8s]" inside it is a pause
    interrupt: str | None = None  # spoken over the bot's reply, about a second into it (a barge-in)
    backchannel: str | None = None  # a short "uh-huh" over the bot's reply; the bot should go on
    wav: str | None = None  # a recording played as the line (resampled to 8 kHz)

    @model_validator(mode="after")
    def _one_kind(self) -> Line:
        given = [key for key in ("say", "interrupt", "backchannel", "wav") if getattr(self, key) is not None]
        if len(given) != 1:
            raise ValueError("a script line needs exactly one of say, interrupt, backchannel or wav, e.g. "
                             "{say: \"i would like to book a table\"}" + (f"; got {', '.join(given)}" if given
                                                                           else ""))
        text = getattr(self, given[0])
        if not text.strip():
            raise ValueError(f"{given[0]} must not be empty")
        return self

    @property
    def text(self) -> str:
        return next(value for value in (self.say, self.interrupt, self.backchannel, self.wav) if value)

    @property
    def over_the_bot(self) -> bool:
        return self.interrupt is not None or self.backchannel is not None


class ToolExpectation(Strict):
    """The bot called tool `name` (at least once) with arguments matching every given rule."""

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)  # equal values (strings: case and spaces aside)
    matching: dict[str, str] = Field(default_factory=dict)  # argument -> a regex found in its value
    json_schema: dict[str, Any] | None = Field(None, alias="schema")  # the arguments validate against it

    @field_validator("matching")
    @classmethod
    def _regexes(cls, matching: dict[str, str]) -> dict[str, str]:
        for key, pattern in matching.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"matching.{key}: not a regular expression ({exc}); quote it with "
                                 f"single quotes in YAML") from None
        return matching

    @field_validator("json_schema")
    @classmethod
    def _schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is not None:
            try:
                jsonschema.Draft202012Validator.check_schema(schema)
            except jsonschema.SchemaError as exc:
                raise ValueError(f"schema: not a valid JSON Schema ({exc.message})") from None
        return schema


class Expect(Strict):
    """Deterministic checks of a call: each one given is a pass or a fail, with the reason."""

    tools: list[ToolExpectation] = Field(default_factory=list)  # each tool called with such arguments
    no_tools: list[str] = Field(default_factory=list)  # tools that must NOT be called
    end_call: bool | None = None  # true: the bot ended the call itself (end_call); false: it did not
    transferred: bool | str | None = None  # true / false, or the target the call must go to
    max_turns: int | None = Field(None, ge=1, le=1000)  # caller turns the bot answered, at most
    no_unanswered_turn: bool = True  # every caller line spoken got bot audio back
    max_talk_over_s: float | None = Field(None, ge=0)  # seconds the bot and caller spoke at once, at most
    said: list[str] = Field(default_factory=list)  # regexes the bot's heard words must contain
    never_said: list[str] = Field(default_factory=list)  # regexes they must not

    @field_validator("said", "never_said")
    @classmethod
    def _regexes(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression ({exc})") from None
        return patterns


class Scenario(Strict):
    """One kind of caller: who they are, what they want, how they speak, and what success means."""

    name: str
    persona: str = ""  # who is calling and how they behave ("in a hurry; gives their name only when asked")
    goal: str = ""  # what they call for, in plain words
    facts: dict[str, Any] = Field(default_factory=dict)  # what the caller knows (name, party size, ...)
    speech: Speech = Field(default_factory=Speech)
    calls: int = Field(1, ge=1, le=10_000)  # calls placed per pipeline
    script: list[Line] = Field(default_factory=list)  # the caller's lines; none: the LLM caller improvises
    max_caller_turns: int = Field(8, ge=1, le=100)  # the LLM caller hangs up after this many lines
    expect: Expect = Field(default_factory=Expect)
    judged: list[str] = Field(default_factory=list)  # criteria in plain words, scored by the judge

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        if not _NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a plain name: use 1-64 letters, digits, '_', '-' or '.'")
        return name


class CallerLLM(Strict):
    """The LLM that plays the caller when a scenario has no script, hearing the bot through `stt`."""

    llm: LLMConfig
    stt: STTConfig | None = None  # the caller-side recogniser; default: the embedded Moonshine
    tts: TTSConfig | None = None  # the caller's voice; default: `speech.voice` (embedded)


class Judge(Strict):
    """The LLM judge: its vendor/model, prompt and rubric (criterion -> what 1 to 5 means)."""

    llm: LLMConfig
    prompt: str = DEFAULT_JUDGE_PROMPT
    rubric: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_RUBRIC))
    pass_score: int = Field(4, ge=1, le=5)  # a judged criterion passes at this score or more
    price: dict[str, float] = Field(default_factory=dict)  # input_per_1m / output_per_1m (USD), for its cost


class EvalsFile(Strict):
    """evals.yaml."""

    scenarios: list[Scenario] = Field(min_length=1)
    caller: CallerLLM | None = None
    judge: Judge | None = None

    @model_validator(mode="after")
    def _names_and_callers(self) -> EvalsFile:
        seen: set[str] = set()
        for scenario in self.scenarios:
            if scenario.name in seen:
                raise ValueError(f"two scenarios are named {scenario.name!r}: give each its own name")
            seen.add(scenario.name)
        return self


def _cross_check(data: Any, source: str) -> list[tuple[tuple[str | int, ...], str]]:
    """Problems pydantic cannot word well: a scenario with neither a script nor an LLM caller."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    if not isinstance(data, dict) or not isinstance(data.get("scenarios"), list):
        return problems
    for n, scenario in enumerate(data["scenarios"]):
        if isinstance(scenario, dict) and not scenario.get("script") and not data.get("caller"):
            path = ("scenarios", n)
            problems.append((path, f"{format_path(path, source)}: no `script:` and no `caller:` LLM to play "
                                   "the caller; give the caller's lines (script: [{say: \"...\"}]) or add a "
                                   "top-level caller: {llm: {provider: ..., model: ...}}"))
    return problems


def parse_evals(text: str, source: str = EVALS_FILE_NAME) -> EvalsFile:
    """Validate evals YAML given as text; raise ConfigError listing every problem."""
    data = _parse_yaml(text, source)
    if data is None:
        raise ConfigError(f"{source}: the file is empty; it needs `scenarios:`", source)
    problems = _cross_check(data, source)
    try:
        evals = EvalsFile.model_validate(data)
    except ValidationError as exc:
        problems += [describe(err, source, EvalsFile, lambda _path: []) for err in exc.errors()]
    else:
        if not problems:
            return evals
    raise ConfigError(list(dict.fromkeys(line for _, line in sorted(problems, key=_order))), source)


def _order(problem: tuple[tuple[str | int, ...], str]) -> tuple[str, ...]:
    return tuple(f"{part:08d}" if isinstance(part, int) else part for part in problem[0])


def load_evals(path: str | Path) -> EvalsFile:
    """Read and validate an evals file; raise ConfigError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the file: {getattr(exc, 'strerror', None) or exc}",
                          str(path)) from None
    return parse_evals(text, str(path))
