"""Reading pipeline.yaml: the file, its YAML (duplicate keys are errors), `${ENV}` interpolation, the
cross-key checks, then the schema. `load_config` / `parse_config` return a `Config` or raise
`ConfigError`, whose message lists every problem found, one per line, in the order of the file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from switchboard.config.messages import (
    CONFIG_FILE_NAME,
    ConfigError,
    KeyPath,
    Problem,
    describe,
    describe_value,
    format_path,
    hidden_text,
    resolve,
)
from switchboard.config.schema import (
    DEFAULT_PIPELINE_ERROR,
    NUMBERS_ERROR,
    Config,
    default_pipeline_problem,
    number_problems,
)
from switchboard.config.tools import defers_env, tool_warnings

log = logging.getLogger("switchboard.config")
CONFIG_ENV_VAR = "SWITCHBOARD_CONFIG"
BUNDLED_CONFIG = Path(__file__).resolve().parent.parent / CONFIG_FILE_NAME  # package data


def default_config_path() -> Path:
    """$SWITCHBOARD_CONFIG if set, else ./pipeline.yaml if present, else the bundled pipeline.yaml."""
    if env_path := os.environ.get(CONFIG_ENV_VAR):
        return Path(env_path)
    local = Path.cwd() / CONFIG_FILE_NAME
    if local.is_file():
        return local
    return BUNDLED_CONFIG


def load_config(path: str | Path | None = None) -> Config:
    """Read and validate a pipeline file (default: `default_config_path()`); raise ConfigError."""
    return load_versioned(path)[0]


def load_versioned(path: str | Path | None = None) -> tuple[Config, str]:
    """`load_config`, and the file's `short_hash` (of the text that was validated)."""
    path = Path(path) if path is not None else default_config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})", str(path)) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the file: {exc.strerror or exc}", str(path)) from None
    return parse_config(text, source=str(path)), short_hash(text)


def short_hash(text: str) -> str:
    """10 hex digits of the text's SHA-256: a configuration's version, as stored with each call."""
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def pipeline_version(pipeline: Any) -> str:
    """The `short_hash` of a pipeline's effective settings (defaults included, `${VAR}` names not values):
    equal for two files that differ only elsewhere, or in comments, order or spelled-out defaults."""
    return short_hash(pipeline.model_dump_json())


def parse_config(text: str, source: str = CONFIG_FILE_NAME) -> Config:
    """Validate pipeline YAML given as text; `source` names it in messages. Raise ConfigError."""
    data = _parse_yaml(text, source)
    env = _Interpolation()
    data = env.apply(data, ())
    problems = [*env.problems, *_cross_check(data, env)]
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems += [
            describe(err, source, Config, env.hidden_vars) for err in exc.errors()
            if err["type"] not in (DEFAULT_PIPELINE_ERROR, NUMBERS_ERROR)  # reported by _cross_check
            and resolve(err["loc"], Config).path not in env.failed
        ]
    else:
        if not problems:
            for warning in tool_warnings(config.pipelines):
                log.warning("%s: %s", source, warning)
            return config
    raise ConfigError(_in_document_order(problems, data), source)


def _in_document_order(problems: list[Problem], data: dict[str, Any]) -> list[str]:
    """The problems' lines sorted as their keys appear in the file, duplicates dropped."""
    order: dict[KeyPath, int] = {}

    def number(value: Any, path: KeyPath) -> None:
        order[path] = len(order)
        if isinstance(value, list):
            value = dict(enumerate(value))
        for key, item in value.items() if isinstance(value, dict) else ():
            number(item, (*path, key))

    def position(path: KeyPath) -> int:
        while path not in order:  # a missing key sorts with the section that misses it
            path = path[:-1]
        return order[path]

    number(data, ())
    lines = [line for _, line in sorted(problems, key=lambda problem: position(problem[0]))]
    return list(dict.fromkeys(lines))


# --- YAML ----------------------------------------------------------------------------------------------


def _parse_yaml(text: str, source: str) -> dict[str, Any]:
    """The top-level mapping of the document; syntax errors become `<source> line L, column C: ...`."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_nodes(node, set(), set())
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(_yaml_problem(exc, source), source) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: {exc}", source) from None
    finally:
        loader.dispose()
    if data is None:
        raise ConfigError(f"{source}: the file has no settings; it needs at least a 'pipelines:' mapping "
                          "(see docs/configuration.md)", source)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping with a 'pipelines:' key, "
                          f"got {describe_value(data)}", source)
    return data


def _check_nodes(node: yaml.Node, done: set[int], open_: set[int]) -> None:
    """Reject duplicate keys (PyYAML silently keeps the last) and aliases that contain themselves."""
    if id(node) in open_:
        raise yaml.constructor.ConstructorError(
            None, None, "this alias refers to a section that contains it", node.start_mark)
    if id(node) in done:  # an alias of a node already checked
        return
    open_.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: set[str] = set()
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in keys:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key '{key_node.value}'", key_node.start_mark)
                keys.add(key_node.value)
            _check_nodes(value_node, done, open_)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_nodes(item, done, open_)
    open_.discard(id(node))
    done.add(id(node))


def _yaml_problem(exc: yaml.MarkedYAMLError, source: str) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f"{source} line {mark.line + 1}, column {mark.column + 1}" if mark else source
    text = exc.problem or exc.context or "invalid YAML"
    if exc.problem and exc.context and exc.context_mark and exc.context_mark is not mark:
        text += f" ({exc.context} at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1})"
    if "'\\t'" in text:
        text += "; indent with spaces, not tabs"
    return f"{where}: {text}"


# --- ${ENV} interpolation --------------------------------------------------------------------------------

# `$${` is a literal `${`; `${NAME}` / `${NAME:-default}` are references; any other `${` is a mistake.
_ENV_REF = re.compile(r"\$(\$\{)|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{")


@dataclass
class _Interpolation:
    """Replaces ${...} in the parsed document's strings, remembering which values came from the env."""

    problems: list[Problem] = field(default_factory=list)
    env_paths: dict[KeyPath, list[str]] = field(default_factory=dict)  # path -> variables it used
    failed: set[KeyPath] = field(default_factory=set)

    def apply(self, value: Any, path: KeyPath) -> Any:
        """`value` with every string interpolated (containers are copied, keys are left alone)."""
        if isinstance(value, str):
            return self._string(value, path)
        if isinstance(value, dict):
            return {key: self.apply(item, (*path, key)) for key, item in value.items()}
        if isinstance(value, list):
            return [self.apply(item, (*path, index)) for index, item in enumerate(value)]
        return value

    def hidden_vars(self, path: KeyPath) -> list[str]:
        """Variables whose values flowed into `path` or into one of its direct keys (e.g. provider)."""
        return [name for env_path, names in self.env_paths.items()
                if env_path == path or env_path[:-1] == path for name in names]

    def _string(self, text: str, path: KeyPath) -> str:
        if "${" not in text:
            return text
        used: list[str] = []

        def substitute(ref: re.Match[str]) -> str:
            escaped, name, default = ref.groups()
            if escaped:
                return escaped
            if name is None:
                self._fail(path, "invalid ${...} reference; write ${NAME} or ${NAME:-default}, "
                                 "or $${ for a literal ${")
                return ref.group(0)
            used.append(name)
            value = os.environ.get(name)
            if default is not None and not value:
                return default
            if value is None:
                self._fail(path, f"environment variable {name} is not set; set it, "
                                 f"or give a default with ${{{name}:-value}}")
                return ref.group(0)
            return value

        result = _ENV_REF.sub(substitute, text)
        if defers_env(path):  # checked here, read at request time (config/tools.py): never held
            return text
        if used:
            self.env_paths[path] = used
        return result

    def _fail(self, path: KeyPath, problem: str) -> None:
        self.failed.add(path)
        self.problems.append((path, f"{format_path(path, '')}: {problem}"))


def _cross_check(data: dict[str, Any], env: _Interpolation) -> list[Problem]:
    """Checks that span keys, done on the raw data so they are reported along with all other problems."""
    pipelines, name = data.get("pipelines"), data.get("default_pipeline", "default")
    if not isinstance(pipelines, dict) or not pipelines:
        return []
    problems: list[Problem] = []
    if isinstance(name, str):
        hidden = env.hidden_vars(("default_pipeline",))
        problem = default_pipeline_problem(
            hidden_text(hidden) if hidden else repr(name), name in pipelines, [str(k) for k in pipelines],
            explicit="default_pipeline" in data,
        )
        problems += [(("default_pipeline",), problem)] if problem else []
    numbers = data.get("numbers")
    if isinstance(numbers, dict):

        def shown(number: str) -> str:
            hidden = env.hidden_vars(("numbers", number))
            return hidden_text(hidden) if hidden else repr(numbers[number])

        problems += number_problems(numbers, [str(k) for k in pipelines], shown)
    return problems


