"""The wording of pipeline.yaml's errors: `ConfigError`, and pydantic's errors as sentences.

Every problem is one line, `<yaml path>: <what is wrong and what is allowed>`. A value that came from an
environment variable is never shown (it may be a secret): the line names the variable instead.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, Discriminator, Tag
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

CONFIG_FILE_NAME = "pipeline.yaml"

KeyPath = tuple[str | int, ...]  # keys and list indexes from the document's root
Problem = tuple[KeyPath, str]  # where (to sort problems as the file reads), the line to show


class ConfigError(Exception):
    """pipeline.yaml cannot be used. The message lists every problem found, one per line."""

    def __init__(self, problems: str | list[str], source: str = CONFIG_FILE_NAME) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        super().__init__("\n".join(self.problems))



# --- pydantic errors -> sentences ------------------------------------------------------------------------


@dataclass
class _Target:
    """Where an error points: the YAML path, and the model and field of its last key if known."""

    path: KeyPath = ()
    model: type[BaseModel] | None = None
    info: FieldInfo | None = None
    tags: dict[str, Any] = field(default_factory=dict)  # the discriminated union here: tag -> member
    discriminator: str = "provider"


def resolve(loc: tuple[str | int, ...], root: type[BaseModel]) -> _Target:
    """Follow a pydantic error location through the schema from `root`, dropping discriminated-union
    tags."""
    target, annotation = _Target(), root
    for part in loc:
        if isinstance(part, str) and part in target.tags:  # the tag pydantic inserts after a union
            member = target.tags[part]
            target.discriminator, target.tags = _discriminated(member, None)  # a union in a union
            annotation = get_args(member)[0] if get_origin(member) is Annotated else member
            continue
        target = _Target((*target.path, part))
        annotation, info = _unwrap_optional(annotation), None
        if _is_model(annotation):
            target.model, target.info = annotation, annotation.model_fields.get(str(part))
            annotation, info = (target.info.annotation, target.info) if target.info else (None, None)
        elif get_origin(annotation) in (dict, list):
            annotation = get_args(annotation)[-1]
        else:
            annotation = None
        target.discriminator, target.tags = _discriminated(annotation, info)
    return target


def _discriminated(annotation: Any, info: FieldInfo | None) -> tuple[str, dict[str, Any]]:
    """(discriminator key, tag -> member) when `annotation` (with its field's `info`) is a
    discriminated union: on a key such as `provider`, or a `Discriminator` with `Tag`ged members."""
    metadata: list[Any] = [*info.metadata, info] if info else []
    if get_origin(annotation) is Annotated:
        annotation, *more = get_args(annotation)
        metadata += more
    for meta in metadata:
        key = meta.discriminator if isinstance(meta, FieldInfo) else meta
        if isinstance(meta, str):  # a plain Annotated note, not a discriminator
            continue
        if isinstance(key, str):
            return key, _union_members(annotation, key)
        if isinstance(key, Discriminator):
            members = get_args(annotation)
            return "provider", {tag.tag: member for member in members  # Annotated[..., Tag(tag)]
                                for tag in get_args(member)[1:] if isinstance(tag, Tag)}
    return "provider", {}


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _unwrap_optional(annotation: Any) -> Any:
    """`X | None` -> X, so nested optional sections resolve like required ones."""
    if get_origin(annotation) in (Union, types.UnionType):
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation


def _union_members(annotation: Any, discriminator: str) -> dict[str, type[BaseModel]]:
    """Tag value -> model, for a (possibly one-member) discriminated union."""
    members = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    tags: dict[str, type[BaseModel]] = {}
    for member in members:
        if _is_model(member) and discriminator in member.model_fields:
            tags.update(dict.fromkeys(get_args(member.model_fields[discriminator].annotation), member))
    return tags


_EXPECTED = {
    "int_parsing": "an integer", "int_type": "an integer", "int_from_float": "a whole number",
    "float_parsing": "a number", "float_type": "a number", "finite_number": "a finite number",
    "bool_parsing": "true or false", "bool_type": "true or false", "string_type": "a string",
    "list_type": "a list", "dict_type": "a mapping (key: value)", "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
}
_RANGE_TYPES = {"greater_than_equal", "less_than_equal", "greater_than", "less_than"}


def describe(err: ErrorDetails, source: str, root: type[BaseModel],
             hidden_vars: Callable[[KeyPath], list[str]]) -> Problem:
    """One pydantic error of validating `root` as `<path>: <sentence>`; `hidden_vars(path)` names the
    environment variables whose values flowed into `path` (never shown)."""
    kind, target = err["type"], resolve(err["loc"], root)
    hidden = hidden_vars(target.path)
    got = hidden_text(hidden) if hidden else describe_value(err["input"])
    if err["loc"][-1:] == ("[key]",):  # the key itself is invalid, e.g. a number
        path = resolve(err["loc"][:-1], root).path
        return path, f"{format_path(path, source)}: this key must be a string, got {got}; put it in quotes"
    if kind == "missing":
        parent = target.path[:-1]
        return parent, f"{format_path(parent, source)}: missing required key '{target.path[-1]}'"
    return target.path, f"{format_path(target.path, source)}: {_sentence(kind, err, target, got, hidden)}"


def _sentence(kind: str, err: ErrorDetails, target: _Target, got: str, hidden: list[str]) -> str:
    """What is wrong at the target, and what would be accepted."""
    if kind in _EXPECTED:
        quote_hint = kind == "string_type" and isinstance(err["input"], (bool, int, float)) and not hidden
        return f"must be {_EXPECTED[kind]}, got {got}" + ("; put it in quotes" if quote_hint else "")
    if kind in _RANGE_TYPES:
        return f"must be {_range_text(target.info, err.get('ctx', {}))}, got {got}"
    if kind == "literal_error":
        return f"must be one of {', '.join(_choices(target.info, err))}, got {got}"
    if kind == "extra_forbidden":
        return _unknown_key_sentence(target)
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return _tag_sentence(kind, err, target, hidden)
    if kind == "too_short":
        minimum = err["ctx"]["min_length"]
        return "must not be empty" if minimum == 1 else f"must have at least {minimum} entries"
    if kind == "value_error":
        return str(err["ctx"]["error"])
    return str(err["msg"])


def _range_text(info: FieldInfo | None, ctx: dict[str, Any]) -> str:
    """'between 100 and 5000', 'at least 0', ... from the field's own bounds (ctx names only one)."""
    bounds = dict(ctx)
    for rule in info.metadata if info else []:
        if isinstance(rule, (annotated_types.Ge, annotated_types.Gt, annotated_types.Le, annotated_types.Lt)):
            name = type(rule).__name__.lower()
            bounds[name] = getattr(rule, name)
    if "ge" in bounds and "le" in bounds:
        return f"between {_number(bounds['ge'])} and {_number(bounds['le'])}"
    words = {"ge": "at least", "gt": "greater than", "le": "at most", "lt": "less than"}
    return " and ".join(f"{words[name]} {_number(value)}" for name, value in bounds.items() if name in words)


def _choices(info: FieldInfo | None, err: ErrorDetails) -> list[str]:
    literal = _unwrap_optional(info.annotation) if info else None
    if get_origin(literal) is Literal:
        return [str(choice) for choice in get_args(literal)]
    return [str(err["ctx"]["expected"])]


def _unknown_key_sentence(target: _Target) -> str:
    allowed = sorted(target.model.model_fields) if target.model else []
    if not allowed:
        return "unknown key"
    sentence = f"unknown key; allowed keys: {', '.join(allowed)}"
    close = difflib.get_close_matches(str(target.path[-1]), allowed, n=1)
    return sentence + (f"; did you mean '{close[0]}'?" if close else "")


def _tag_sentence(kind: str, err: ErrorDetails, target: _Target, hidden: list[str]) -> str:
    discriminator = target.discriminator
    allowed = ", ".join(target.tags) or str(err["ctx"].get("expected_tags", ""))
    if kind == "union_tag_not_found":
        return f"missing required key '{discriminator}'; allowed: {allowed}"
    tag = f"({hidden_text(hidden)})" if hidden else repr(err["ctx"]["tag"])
    return f"unknown {discriminator} {tag}; allowed: {allowed}"


# --- formatting -------------------------------------------------------------------------------------------

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def format_path(path: KeyPath, source: str) -> str:
    """`pipelines.default.llm.rules[2].match`; the root is the file's name."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(str(part)):
            text += f".{part}" if text else str(part)
        else:
            text += f"[{str(part)!r}]"
    return text or source


def describe_value(value: Any) -> str:
    """A value as the YAML author wrote it, short: 'abc', 20, true, a list, an empty value."""
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _number(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = str(value)
    return repr(text if len(text) <= 60 else text[:57] + "...")


def hidden_text(names: list[str]) -> str:
    """Stands in for a value that came from the environment (it may be a secret)."""
    return "the value of " + ", ".join(f"${{{name}}}" for name in dict.fromkeys(names))


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
