"""The schema of pipeline.yaml (pydantic models) and its loader.

Every model forbids unknown keys, so a typo is a start-up error that names the key, never a setting
silently ignored. Provider sections are discriminated on `provider:`; each provider's options live in
its own model here so the whole file's meaning can be read in one place.

`load_config` / `parse_config` turn the file into a `Config` or raise `ConfigError`, whose message lists
every problem on its own line as `<yaml path>: <what is wrong and what is allowed>`. String values may
use `${VAR}` / `${VAR:-default}`; the values of environment variables never appear in error messages.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticCustomError

log = logging.getLogger(__name__)

CONFIG_ENV_VAR = "SWITCHBOARD_CONFIG"
CONFIG_FILE_NAME = "pipeline.yaml"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VADConfig(Strict):
    """Voice activity detection and endpointing of the caller's speech."""

    aggressiveness: int = Field(2, ge=0, le=3)
    min_speech_ms: int = Field(250, ge=20, le=5000)
    pre_roll_ms: int = Field(300, ge=0, le=2000)
    end_silence_ms: int = Field(600, ge=100, le=5000)
    max_utterance_s: float = Field(30, ge=1, le=300)
    barge_in_min_ms: int = Field(200, ge=20, le=5000)


class TurnConfig(Strict):
    """Turn-taking: when to start answering, when the caller has finished, what is the bot's own echo."""

    # start STT → LLM → TTS (heard by nobody yet) after this much silence mid-utterance; 0 = off
    speculate_after_ms: int = Field(120, ge=0, le=5000)
    # the commit silence when the transcript so far reads finished ("…at seven." / "…open today?")
    complete_end_silence_ms: int = Field(300, ge=100, le=5000)
    # the commit silence when it reads unfinished ("…a table for", "and", "um", digits read out);
    # vad.end_silence_ms applies when it can't tell (no punctuation, no telling last word)
    incomplete_end_silence_ms: int = Field(1200, ge=100, le=5000)
    # caller audio this similar to what the bot just played (normalised cross-correlation) is its echo,
    # not the caller: it does not interrupt the bot. 0 = off
    echo_similarity: float = Field(0.7, ge=0, le=1)


# --- STT -------------------------------------------------------------------------------------------


class PocketsphinxSTTConfig(Strict):
    """The embedded offline recognizer."""

    provider: Literal["pocketsphinx"]
    mode: Literal["auto", "grammar", "keyphrase", "lm"] = "auto"
    phrases: list[str] = Field(default_factory=list)
    pool_size: int = Field(2, ge=1, le=32)


class Timeouts(Strict):
    """Per-stage limits for a cloud vendor. A stage that misses one fails over (see `fallback`)."""

    connect_s: float = Field(3.0, gt=0, le=60)  # TCP + TLS connect
    first_token_s: float = Field(5.0, gt=0, le=120)  # request sent -> first token / audio byte / transcript
    total_s: float = Field(30.0, gt=0, le=600)  # request sent -> stream finished


class VendorConfig(Strict):
    """Options every cloud adapter takes. The key comes from the vendor's usual environment variable
    (`api_key_env` overrides its name); it is never written in this file."""

    base_url: str | None = None  # another endpoint speaking the same API (proxy, local server, test fake)
    api_key_env: str | None = None
    timeouts: Timeouts = Field(default_factory=Timeouts)


class OpenAISTTConfig(VendorConfig):
    """OpenAI transcription (16 kHz mono WAV upload)."""

    provider: Literal["openai"]
    model: Literal["whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"] = "gpt-4o-mini-transcribe"
    language: str | None = None  # ISO-639-1, e.g. "en"; None lets the model detect it
    prompt: str | None = None  # vocabulary / style hint


STTConfig = Annotated[PocketsphinxSTTConfig | OpenAISTTConfig, Field(discriminator="provider")]


# --- LLM -------------------------------------------------------------------------------------------


class ScriptedRule(Strict):
    """One rule of the scripted responder; rules are tried in order and the first match wins."""

    match: str  # a Python regex, searched case-insensitively in the caller's transcript
    reply: str
    end_call: bool = False
    phrases: list[str] = Field(default_factory=list)  # what callers say; taught to the embedded STT

    @field_validator("match")
    @classmethod
    def _match_compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"invalid regex: {exc}") from None
        return pattern


class ScriptedLLMConfig(Strict):
    """The embedded responder: regex rules to canned replies, honest about being a script."""

    provider: Literal["scripted"]
    rules: list[ScriptedRule] = Field(default_factory=list)
    fallback: str = "Sorry, I didn't catch that. Could you say it again?"
    words_per_second: float = Field(0, ge=0, le=1000)  # 0 = stream words as fast as possible


class ChatVendorConfig(VendorConfig):
    """Options every cloud LLM takes."""

    model: str
    temperature: float | None = Field(None, ge=0, le=2)  # None = the vendor's default
    max_tokens: int = Field(300, ge=1, le=32000)  # a phone reply is short; this bounds a runaway one


class OpenAILLMConfig(ChatVendorConfig):
    """OpenAI chat completions, or any OpenAI-compatible server via `base_url` (vLLM, Ollama, Groq...)."""

    provider: Literal["openai"]
    model: str = "gpt-4o-mini"


class AnthropicLLMConfig(ChatVendorConfig):
    """Anthropic Messages API (Claude)."""

    provider: Literal["anthropic"]
    model: str = "claude-haiku-4-5"


class GeminiLLMConfig(ChatVendorConfig):
    """Google Gemini through the google-genai SDK."""

    provider: Literal["gemini"]
    model: str = "gemini-2.5-flash"


class CohereLLMConfig(ChatVendorConfig):
    """Cohere chat (v2 API)."""

    provider: Literal["cohere"]
    model: str = "command-a-03-2025"


class HuggingFaceLLMConfig(ChatVendorConfig):
    """Hugging Face Inference Providers (a model id) or a TGI / Inference Endpoint (`base_url`)."""

    provider: Literal["huggingface"]
    model: str = "meta-llama/Llama-3.1-8B-Instruct"
    inference_provider: str | None = None  # e.g. "together", "groq"; None = Hugging Face's choice


LLMConfig = Annotated[
    ScriptedLLMConfig | OpenAILLMConfig | AnthropicLLMConfig | GeminiLLMConfig | CohereLLMConfig
    | HuggingFaceLLMConfig,
    Field(discriminator="provider"),
]


# --- TTS -------------------------------------------------------------------------------------------


class EspeakTTSConfig(Strict):
    """The embedded offline synthesizer (eSpeak NG)."""

    provider: Literal["espeak"]
    voice: str = "en-us+klatt4"
    rate: int = Field(175, ge=80, le=450)  # words per minute
    pitch: int = Field(50, ge=0, le=99)


class OpenAITTSConfig(VendorConfig):
    """OpenAI speech, streamed as 24 kHz PCM and resampled to the line's 8 kHz."""

    provider: Literal["openai"]
    model: Literal["gpt-4o-mini-tts", "tts-1", "tts-1-hd"] = "gpt-4o-mini-tts"
    voice: str = "alloy"
    instructions: str | None = None  # tone of voice (gpt-4o-mini-tts only)
    speed: float = Field(1.0, ge=0.25, le=4.0)


TTSConfig = Annotated[EspeakTTSConfig | OpenAITTSConfig, Field(discriminator="provider")]


# --- A/B variants and shadow LLMs -------------------------------------------------------------------

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class Named(BaseModel):
    """What a shadow adds to its provider's own keys."""

    name: str  # recorded with every result; letters, digits, _ - .

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        if not _NAME.fullmatch(name):
            raise ValueError("must be 1-64 letters, digits, '_', '-' or '.', e.g. gpt-4o "
                             "(a call's variants are recorded joined by '+')")
        return name


class Weighted(Named):
    """What a variant adds to its provider's own keys."""

    weight: float = Field(1.0, gt=0, le=1_000_000)  # relative share of calls


_PLAIN: dict[type[BaseModel], type[BaseModel]] = {}  # variant / shadow model -> its provider's model


def _with_keys(mixin: type[BaseModel], union: Any) -> Any:
    """The provider union `union` with `mixin`'s keys added to every member."""
    members = []
    for plain in get_args(get_args(union)[0]):
        model = create_model(f"{plain.__name__}{mixin.__name__}", __base__=(plain, mixin),
                             __doc__=plain.__doc__)
        _PLAIN[model] = plain
        members.append(model)
    return Annotated[Union[tuple(members)], Field(discriminator="provider")]  # noqa: UP007


def plain_config(section: Any) -> Any:
    """A variant's or a shadow's provider config without its name and weight (as a stage's would be)."""
    plain = _PLAIN.get(type(section))
    if plain is None:
        return section
    return plain.model_validate(section.model_dump(exclude={"name", "weight"}))


def _unique_names(sections: list[Any]) -> list[Any]:
    names = [section.name for section in sections]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"names must be unique; {', '.join(repr(name) for name in twice)} "
                         "is used more than once")
    return sections


class _Variants(Strict):
    """A stage that differs per call: `variants:` and nothing else."""

    @model_validator(mode="before")
    @classmethod
    def _only_variants(cls, data: Any) -> Any:
        others = [str(key) for key in data if key != "variants"] if isinstance(data, dict) else []
        if others:
            raise ValueError(f"has 'variants' and also {', '.join(others)}; with variants, each variant "
                             "holds its own provider and settings: move these keys into every variant")
        return data

    @field_validator("variants", check_fields=False)
    @classmethod
    def _unique(cls, variants: list[Any]) -> list[Any]:
        return _unique_names(variants)


STTVariantConfig = _with_keys(Weighted, STTConfig)
LLMVariantConfig = _with_keys(Weighted, LLMConfig)
TTSVariantConfig = _with_keys(Weighted, TTSConfig)
ShadowConfig = _with_keys(Named, LLMConfig)


class STTVariants(_Variants):
    variants: list[STTVariantConfig] = Field(min_length=1)


class LLMVariants(_Variants):
    variants: list[LLMVariantConfig] = Field(min_length=1)


class TTSVariants(_Variants):
    variants: list[TTSVariantConfig] = Field(min_length=1)


def _stage_kind(data: Any) -> str:
    return "variants" if isinstance(data, dict) and "variants" in data else "provider"


def _stage(provider: Any, variants: type[_Variants]) -> Any:
    """One provider's section, or `{variants: [...]}`."""
    return Annotated[
        Union[Annotated[provider, Tag("provider")], Annotated[variants, Tag("variants")]],  # noqa: UP007
        Discriminator(_stage_kind),
    ]


STTStage = _stage(STTConfig, STTVariants)
LLMStage = _stage(LLMConfig, LLMVariants)
TTSStage = _stage(TTSConfig, TTSVariants)


def stage_choices(section: Any) -> list[tuple[str | None, float, Any]]:
    """(variant name, weight, provider config) of a stage section: one unnamed entry without variants."""
    if isinstance(section, _Variants):
        return [(variant.name, variant.weight, plain_config(variant)) for variant in section.variants]
    return [(None, 1.0, section)]


# --- the pipeline ----------------------------------------------------------------------------------


class PlayerConfig(Strict):
    """Pacing of the bot's audio towards the carrier."""

    lead_ms: int = Field(160, ge=0, le=2000)  # audio sent ahead of real time


class DTMFConfig(Strict):
    """Keypad digits: collected, then handed to the LLM as one user message."""

    enabled: bool = True  # false: digits are logged and ignored
    inter_digit_timeout_ms: int = Field(1500, ge=100, le=10000)  # no new digit this long ends the entry
    end_on_hash: bool = True  # `#` ends the entry at once (and is not part of it)
    format: str = "The caller pressed {digits} on the keypad."

    @field_validator("format")
    @classmethod
    def _format_has_digits(cls, text: str) -> str:
        if "{digits}" not in text:
            raise ValueError("must contain {digits}, where the keys pressed go")
        try:
            text.format(digits="1")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"only {{digits}} may appear in braces; write {{{{ or }}}} for a brace ({exc})"
            ) from None
        return text


class FallbackConfig(Strict):
    """Alternatives per stage, tried in order when the stage fails before the caller heard anything."""

    stt: list[STTConfig] = Field(default_factory=list)
    llm: list[LLMConfig] = Field(default_factory=list)
    tts: list[TTSConfig] = Field(default_factory=list)


class PipelineConfig(Strict):
    """Everything one call needs: what to say, how to listen, which vendor does each stage."""

    greeting: str = "Hello! How can I help you?"
    system_prompt: str = "You are a helpful assistant on a phone call. Keep replies short."
    apology: str = "Sorry, I'm having trouble right now. Could you say that again?"
    end_call_watchdog_s: float = Field(10, ge=1, le=120)
    record: bool = False  # write a stereo WAV per call (caller left, bot right) into recordings_dir
    recordings_dir: str = "recordings"  # relative paths are from the server's working directory
    vad: VADConfig = Field(default_factory=VADConfig)
    turn: TurnConfig = Field(default_factory=TurnConfig)
    stt: STTStage  # one provider, or {variants: [...]} (A/B: one drawn per call)
    llm: LLMStage
    tts: TTSStage
    fallback: FallbackConfig = Field(default_factory=FallbackConfig)
    shadow: list[ShadowConfig] = Field(default_factory=list)  # LLMs also asked every turn, never heard
    player: PlayerConfig = Field(default_factory=PlayerConfig)
    dtmf: DTMFConfig = Field(default_factory=DTMFConfig)

    @field_validator("shadow")
    @classmethod
    def _unique_shadow_names(cls, shadows: list[Any]) -> list[Any]:
        return _unique_names(shadows)


class TwilioConfig(Strict):
    """Serving Twilio. Credentials come from the environment (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN)."""

    # check X-Twilio-Signature on the webhook and the media WebSocket whenever TWILIO_AUTH_TOKEN is set
    validate_signatures: bool = True


class PriceConfig(Strict):
    """What a vendor/model costs, in USD, for `switchboard report`'s cost estimates. Any subset."""

    input_per_1m: float | None = Field(None, ge=0)  # LLM: per 1M input (prompt) tokens
    output_per_1m: float | None = Field(None, ge=0)  # LLM: per 1M output tokens
    per_minute: float | None = Field(None, ge=0)  # STT: per minute of audio transcribed
    per_1m_chars: float | None = Field(None, ge=0)  # TTS: per 1M characters spoken


class Config(Strict):
    """The whole of pipeline.yaml: named pipelines and which one a call gets by default."""

    default_pipeline: str = "default"
    database_url: str = "switchboard.db"  # call store of `switchboard serve`; "" = off
    numbers: dict[str, str] = Field(default_factory=dict)  # called number (E.164) -> pipeline name
    pipelines: dict[str, PipelineConfig] = Field(min_length=1)
    twilio: TwilioConfig = Field(default_factory=TwilioConfig)
    pricing: dict[str, PriceConfig] = Field(default_factory=dict)  # "vendor/model" or model -> prices
    shadow_max_concurrent: int = Field(8, ge=1, le=1000)  # shadow requests in flight per server process

    @model_validator(mode="after")
    def _numbers_are_routable(self) -> Config:
        problems = _number_problems(self.numbers, list(self.pipelines), lambda n: repr(self.numbers[n]))
        if problems:
            raise PydanticCustomError(_NUMBERS_ERROR, "; ".join(line for _, line in problems))
        return self

    def pipeline_for_number(self, number: str | None) -> str | None:
        """The pipeline `numbers:` routes a called number to, or None (the caller uses the default)."""
        return self.numbers.get(number or "")

    @model_validator(mode="after")
    def _default_pipeline_exists(self) -> Config:
        problem = _default_pipeline_problem(
            repr(self.default_pipeline), self.default_pipeline in self.pipelines, list(self.pipelines),
            explicit="default_pipeline" in self.model_fields_set,
        )
        if problem:
            raise PydanticCustomError(_DEFAULT_PIPELINE_ERROR, problem)
        return self

    def pipeline(self, name: str | None = None) -> PipelineConfig:
        """The pipeline called `name`; None, "" or an unknown name (logged) gives the default one."""
        if name and name in self.pipelines:
            return self.pipelines[name]
        if name:
            log.warning("unknown pipeline %r; using %r (defined: %s)",
                        name, self.default_pipeline, ", ".join(self.pipelines))
        return self.pipelines[self.default_pipeline]


_DEFAULT_PIPELINE_ERROR = "unknown_default_pipeline"
_NUMBERS_ERROR = "unroutable_number"
E164 = re.compile(r"\+[1-9][0-9]{1,14}")  # + country code and number, at most 15 digits


def _number_problems(
    numbers: dict[Any, Any], defined: list[str], shown: Callable[[str], str]
) -> list[_Problem]:
    """`numbers:` entries whose key is not an E.164 number or whose pipeline does not exist."""
    problems: list[_Problem] = []
    for number, name in numbers.items():
        if not isinstance(number, str) or not isinstance(name, str):
            continue  # a type error, reported by the schema
        path = ("numbers", number)
        if not E164.fullmatch(number):
            problems.append((path, f"{_format_path(path, '')}: not an E.164 number; write it as "
                                   "'+' then the country code and number, digits only, e.g. '+15551234567'"))
        elif name not in defined:
            problems.append((path, f"{_format_path(path, '')}: {shown(number)} is not a pipeline; "
                                   f"defined: {', '.join(defined)}"))
    return problems


def _default_pipeline_problem(shown: str, exists: bool, defined: list[str], *, explicit: bool) -> str | None:
    """The sentence for a `default_pipeline` that names no pipeline, or None when it is fine."""
    if exists:
        return None
    if explicit:
        return f"default_pipeline: {shown} is not a pipeline; defined: {', '.join(defined)}"
    return (f"default_pipeline: not set, and no pipeline is named 'default'; "
            f"set it to one of: {', '.join(defined)}")


# --- errors ------------------------------------------------------------------------------------------


class ConfigError(Exception):
    """pipeline.yaml cannot be used. The message lists every problem found, one per line."""

    def __init__(self, problems: str | list[str], source: str = CONFIG_FILE_NAME) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        super().__init__("\n".join(self.problems))


# --- loading -----------------------------------------------------------------------------------------

_KeyPath = tuple[str | int, ...]  # keys and list indexes from the document's root
_Problem = tuple[_KeyPath, str]  # where (to sort problems as the file reads), the line to show


def default_config_path() -> Path:
    """$SWITCHBOARD_CONFIG if set, else ./pipeline.yaml if present, else the bundled pipeline.yaml."""
    if env_path := os.environ.get(CONFIG_ENV_VAR):
        return Path(env_path)
    local = Path.cwd() / CONFIG_FILE_NAME
    if local.is_file():
        return local
    return Path(__file__).resolve().parent.parent / CONFIG_FILE_NAME


def load_config(path: str | Path | None = None) -> Config:
    """Read and validate a pipeline file (default: `default_config_path()`); raise ConfigError."""
    path = Path(path) if path is not None else default_config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})", str(path)) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the file: {exc.strerror or exc}", str(path)) from None
    return parse_config(text, source=str(path))


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
            _describe(err, source, env) for err in exc.errors()
            if err["type"] not in (_DEFAULT_PIPELINE_ERROR, _NUMBERS_ERROR)  # reported by _cross_check
            and _resolve(err["loc"]).path not in env.failed
        ]
    else:
        if not problems:
            return config
    raise ConfigError(_in_document_order(problems, data), source)


def _in_document_order(problems: list[_Problem], data: dict[str, Any]) -> list[str]:
    """The problems' lines sorted as their keys appear in the file, duplicates dropped."""
    order: dict[_KeyPath, int] = {}

    def number(value: Any, path: _KeyPath) -> None:
        order[path] = len(order)
        if isinstance(value, list):
            value = dict(enumerate(value))
        for key, item in value.items() if isinstance(value, dict) else ():
            number(item, (*path, key))

    def position(path: _KeyPath) -> int:
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
                          f"got {_describe_value(data)}", source)
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

    problems: list[_Problem] = field(default_factory=list)
    env_paths: dict[_KeyPath, list[str]] = field(default_factory=dict)  # path -> variables it used
    failed: set[_KeyPath] = field(default_factory=set)

    def apply(self, value: Any, path: _KeyPath) -> Any:
        """`value` with every string interpolated (containers are copied, keys are left alone)."""
        if isinstance(value, str):
            return self._string(value, path)
        if isinstance(value, dict):
            return {key: self.apply(item, (*path, key)) for key, item in value.items()}
        if isinstance(value, list):
            return [self.apply(item, (*path, index)) for index, item in enumerate(value)]
        return value

    def hidden_vars(self, path: _KeyPath) -> list[str]:
        """Variables whose values flowed into `path` or into one of its direct keys (e.g. provider)."""
        return [name for env_path, names in self.env_paths.items()
                if env_path == path or env_path[:-1] == path for name in names]

    def _string(self, text: str, path: _KeyPath) -> str:
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
        if used:
            self.env_paths[path] = used
        return result

    def _fail(self, path: _KeyPath, problem: str) -> None:
        self.failed.add(path)
        self.problems.append((path, f"{_format_path(path, '')}: {problem}"))


def _cross_check(data: dict[str, Any], env: _Interpolation) -> list[_Problem]:
    """Checks that span keys, done on the raw data so they are reported along with all other problems."""
    pipelines, name = data.get("pipelines"), data.get("default_pipeline", "default")
    if not isinstance(pipelines, dict) or not pipelines:
        return []
    problems: list[_Problem] = []
    if isinstance(name, str):
        hidden = env.hidden_vars(("default_pipeline",))
        problem = _default_pipeline_problem(
            _hidden_text(hidden) if hidden else repr(name), name in pipelines, [str(k) for k in pipelines],
            explicit="default_pipeline" in data,
        )
        problems += [(("default_pipeline",), problem)] if problem else []
    numbers = data.get("numbers")
    if isinstance(numbers, dict):

        def shown(number: str) -> str:
            hidden = env.hidden_vars(("numbers", number))
            return _hidden_text(hidden) if hidden else repr(numbers[number])

        problems += _number_problems(numbers, [str(k) for k in pipelines], shown)
    return problems


# --- pydantic errors -> sentences ------------------------------------------------------------------------


@dataclass
class _Target:
    """Where an error points: the YAML path, and the model and field of its last key if known."""

    path: _KeyPath = ()
    model: type[BaseModel] | None = None
    info: FieldInfo | None = None
    tags: dict[str, Any] = field(default_factory=dict)  # the discriminated union here: tag -> member
    discriminator: str = "provider"


def _resolve(loc: tuple[str | int, ...]) -> _Target:
    """Follow a pydantic error location through the schema, dropping discriminated-union tags."""
    target, annotation = _Target(), Config
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


def _describe(err: ErrorDetails, source: str, env: _Interpolation) -> _Problem:
    """One pydantic error as `<path>: <sentence>`."""
    kind, target = err["type"], _resolve(err["loc"])
    hidden = env.hidden_vars(target.path)
    got = _hidden_text(hidden) if hidden else _describe_value(err["input"])
    if err["loc"][-1:] == ("[key]",):  # the key itself is invalid, e.g. a number
        path = _resolve(err["loc"][:-1]).path
        return path, f"{_format_path(path, source)}: this key must be a string, got {got}; put it in quotes"
    if kind == "missing":
        parent = target.path[:-1]
        return parent, f"{_format_path(parent, source)}: missing required key '{target.path[-1]}'"
    return target.path, f"{_format_path(target.path, source)}: {_sentence(kind, err, target, got, hidden)}"


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
    tag = f"({_hidden_text(hidden)})" if hidden else repr(err["ctx"]["tag"])
    return f"unknown {discriminator} {tag}; allowed: {allowed}"


# --- formatting -------------------------------------------------------------------------------------------

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _format_path(path: _KeyPath, source: str) -> str:
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


def _describe_value(value: Any) -> str:
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


def _hidden_text(names: list[str]) -> str:
    """Stands in for a value that came from the environment (it may be a secret)."""
    return "the value of " + ", ".join(f"${{{name}}}" for name in dict.fromkeys(names))


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
