"""The schema of pipeline.yaml: pydantic models for everything but the providers' own sections.

A provider's section is its plug-in's model (switchboard/providers/*, read from the registry): a stage is
the discriminated union of every registered model on `provider:`, or `{variants: [...]}` of them.
Carriers own their sections too (`twilio:` is telephony/twilio.py's). Cross-key rules (routable
numbers, an existing default pipeline) are validators here; their sentences come from messages.py.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Discriminator, Field, Tag, create_model, field_validator, model_validator
from pydantic_core import PydanticCustomError

from switchboard.config.messages import Problem, format_path
from switchboard.config.tools import (
    ContextWebhookConfig,
    McpToolsConfig,
    ToolConfig,
    ToolUseConfig,
    TransferConfig,
    VoicemailConfig,
    placeholders_without_default,
)
from switchboard.core.carrier import E164
from switchboard.core.settings import Strict, unique_names
from switchboard.core.words import words
from switchboard.providers import registry
from switchboard.telephony.telnyx import TelnyxConfig
from switchboard.telephony.twilio import TwilioConfig
from switchboard.telephony.vonage import VonageConfig
from switchboard.telephony.webrtc import WebRTCConfig

log = logging.getLogger(__name__)


class VADConfig(Strict):
    """Voice activity detection and endpointing of the caller's speech."""

    aggressiveness: int = Field(2, ge=0, le=3)
    min_speech_ms: int = Field(250, ge=20, le=5000)
    pre_roll_ms: int = Field(300, ge=0, le=2000)
    end_silence_ms: int = Field(600, ge=100, le=5000)
    max_utterance_s: float = Field(30, ge=1, le=300)
    barge_in_min_ms: int = Field(200, ge=20, le=5000)
    # an utterance with no voicing (hiss, wind, traffic, a hum) is dropped before recognition: no reply
    noise_gate: bool = True


class TurnConfig(Strict):
    """Turn-taking: when to start answering, when the caller has finished, what is the bot's own echo."""

    # start STT → LLM → TTS (heard by nobody yet) after this much silence mid-utterance; 0 = off
    speculate_after_ms: int = Field(120, ge=0, le=5000)
    # the commit silence when the transcript so far reads finished ("…at seven." / "…open today?")
    complete_end_silence_ms: int = Field(300, ge=100, le=5000)
    # the commit silence when it reads unfinished ("…a table for", "and", "um", digits read out);
    # vad.end_silence_ms applies when it can't tell (no punctuation, no telling last word)
    incomplete_end_silence_ms: int = Field(1600, ge=100, le=5000)
    # caller audio this similar to what the bot just played (normalised cross-correlation) is its echo,
    # not the caller: it does not interrupt the bot. 0 = off
    echo_similarity: float = Field(0.7, ge=0, le=1)
    # a caller who goes on this soon after the bot started answering had not finished: the bot stops after
    # 120 ms of their speech and its reply is undone (as if never said), their words answered together;
    # 0 = off
    undo_reply_within_ms: int = Field(1000, ge=0, le=5000)
    # an audio end-of-turn model (audio/smart_turn.py) hears at each pause whether the caller *sounds*
    # finished; its verdict is combined with how the words read (pipeline/turn_end.py). "none": words only
    audio_model: Literal["smart-turn-v3", "none"] = "none"
    # the model's probability of "finished" at or above which the caller sounds finished
    audio_finished_threshold: float = Field(0.5, gt=0, lt=1)



# acknowledgements, and the interjections and fillers a listener makes (alone they never mean "stop")
BACKCHANNEL_WORDS = ["yeah", "yes", "yep", "yup", "uh-huh", "uh huh", "mm-hmm", "mhm", "mm", "hmm", "hm",
                     "okay", "ok", "right", "sure", "alright", "all right", "i see", "got it", "cool",
                     "great", "oh", "ah", "aha", "uh", "um"]

# words that ask the bot to stop, say it has something wrong, ask a question or ask for a person: alone
# they are never a backchannel, so any of them interrupts, whatever min_words
INTERRUPT_WORDS = ["stop", "wait", "no", "nope", "nah", "not", "don't", "hold on", "hang on", "pause",
                   "enough", "sorry", "excuse me", "pardon", "actually", "but", "cancel", "never mind",
                   "what", "why", "who", "where", "when", "how", "hello", "help", "again", "repeat", "agent",
                   "operator", "representative", "human"]


class InterruptionConfig(Strict):
    """What the caller says while the bot talks: a backchannel ("yeah", "uh-huh") lets it go on, anything
    else interrupts it. The bot's audio stops as soon as the caller speaks either way (the carrier drops
    what it holds); for a backchannel it then goes on from where the caller stopped hearing it."""

    backchannels: bool = True  # false: any speech of vad.barge_in_min_ms stops the bot and its reply
    # said alone (in any mix, any case, with punctuation), these never interrupt
    backchannel_words: list[str] = Field(default_factory=lambda: list(BACKCHANNEL_WORDS))
    # an utterance needs at least this many other words to interrupt (1: any other word does)
    min_words: int = Field(1, ge=1, le=10)
    # any of these in an utterance interrupts, however few its words ("no", "wait" with min_words 2)
    interrupt_words: list[str] = Field(default_factory=lambda: list(INTERRUPT_WORDS))
    # speech going on longer than this while the bot is paused interrupts, whatever its words, in ms
    max_backchannel_ms: int = Field(1000, ge=200, le=5000)

    @model_validator(mode="after")
    def _no_word_in_both_lists(self) -> InterruptionConfig:
        # compared as the rule compares them: "Stop." and "stop", "uh huh" and "uh-huh" are one word
        backchannels = {words(phrase) for phrase in self.backchannel_words}
        both = sorted(" ".join(words(phrase)) for phrase in self.interrupt_words
                      if words(phrase) in backchannels)
        if both:
            raise ValueError(f"{', '.join(repr(w) for w in both)} is in both backchannel_words and "
                             f"interrupt_words: keep each word in one list")
        return self


def _provider_union(stage: registry.Stage) -> Any:
    """Every registered provider model of a stage, discriminated on `provider:`."""
    models = tuple(plugin.config for plugin in registry.plugins(stage))
    return Annotated[Union[models], Field(discriminator="provider")]  # noqa: UP007


STTConfig = _provider_union("stt")
LLMConfig = _provider_union("llm")
TTSConfig = _provider_union("tts")
RealtimeConfig = _provider_union("realtime")


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


def _with_keys(mixin: type[BaseModel], stage: registry.Stage) -> Any:
    """The stage's provider union with `mixin`'s keys added to every member."""
    members = []
    for plain in (plugin.config for plugin in registry.plugins(stage)):
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
        return unique_names(variants)


STTVariantConfig = _with_keys(Weighted, "stt")
LLMVariantConfig = _with_keys(Weighted, "llm")
TTSVariantConfig = _with_keys(Weighted, "tts")
ShadowConfig = _with_keys(Named, "llm")


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


class HedgeAfter(Strict):
    """Per stage: how long a cloud request may go without its first result (transcript, first token, first
    audio byte) before the same request goes out again beside it. Unset: twice the provider's own p95 so
    far (after 20 answers), never under 250 ms."""

    stt: int | None = Field(None, ge=50, le=60000)
    llm: int | None = Field(None, ge=50, le=60000)
    tts: int | None = Field(None, ge=50, le=60000)


class HedgingConfig(Strict):
    """A stalled vendor request is hedged (pipeline/hedging.py): asked again of the next cloud provider in
    the stage's chain (else the same one) beside it; whichever answers first is used, the other cancelled."""

    enabled: bool = True  # false: a stalled request waits for its timeouts.first_token_s, as before
    hedge_after_ms: HedgeAfter = Field(default_factory=HedgeAfter)


class UnheardConfig(Strict):
    """Speech the recogniser made no words of: answered, so a caller is never met with silence."""

    reply: str = "Sorry, I didn't catch that. Could you say it again?"
    # less voiced audio than this gets no answer: a cough, a click, a breath (≈ 100-500 ms) is not a
    # turn, while a real utterance the recogniser failed on almost always has more
    min_voiced_ms: int = Field(600, ge=0, le=10000)


class IdleConfig(Strict):
    """A caller who says nothing after the bot has finished: reminded, then said goodbye to."""

    reminder_after_s: float = Field(10, ge=0, le=600)  # silence after the bot finished; 0 = never remind
    reminder: str = "Are you still there?"
    max_reminders: int = Field(2, ge=0, le=10)  # then, after as much silence again, the goodbye
    goodbye: str = "I haven't heard anything for a while, so I'll hang up now. Goodbye!"


def _tool_kind(data: Any) -> str:
    if isinstance(data, dict):
        return "mcp" if "mcp" in data else "http"
    return "mcp" if isinstance(data, McpToolsConfig) else "http"


# a `tools:` entry: one HTTP tool, or `mcp:` (every tool of an MCP server)
AnyTool = Annotated[
    Union[Annotated[ToolConfig, Tag("http")], Annotated[McpToolsConfig, Tag("mcp")]],  # noqa: UP007
    Discriminator(_tool_kind),
]


class PipelineConfig(Strict):
    """Everything one call needs: what to say, how to listen, which vendor does each stage."""

    kind: Literal["cascade"] = "cascade"  # STT → LLM → TTS; `realtime`: one speech-to-speech model
    greeting: str = "Hello! How can I help you?"
    system_prompt: str = "You are a helpful assistant on a phone call. Keep replies short."
    apology: str = "Sorry, I'm having trouble right now. Could you say that again?"
    unheard: UnheardConfig = Field(default_factory=UnheardConfig)
    end_call_watchdog_s: float = Field(10, ge=1, le=120)
    idle: IdleConfig = Field(default_factory=IdleConfig)
    max_call_duration_s: float = Field(1800, ge=0, le=86400)  # 0 = no limit
    # said once the limit is reached, as soon as the bot is not talking; then it hangs up
    time_limit_goodbye: str = "I'm sorry, we've reached the time limit for this call. Goodbye!"
    record: bool = False  # write a stereo WAV per call (caller left, bot right) into recordings_dir
    recordings_dir: str = "recordings"  # relative paths are from the server's working directory
    vad: VADConfig = Field(default_factory=VADConfig)
    turn: TurnConfig = Field(default_factory=TurnConfig)
    interruption: InterruptionConfig = Field(default_factory=InterruptionConfig)
    stt: STTStage  # one provider, or {variants: [...]} (A/B: one drawn per call)
    llm: LLMStage
    tts: TTSStage
    fallback: FallbackConfig = Field(default_factory=FallbackConfig)
    hedging: HedgingConfig = Field(default_factory=HedgingConfig)  # a stalled request asked again beside it
    shadow: list[ShadowConfig] = Field(default_factory=list)  # LLMs also asked every turn, never heard
    player: PlayerConfig = Field(default_factory=PlayerConfig)
    dtmf: DTMFConfig = Field(default_factory=DTMFConfig)
    # HTTP tools and MCP servers the LLM may call (config/tools.py)
    tools: list[AnyTool] = Field(default_factory=list)
    tool_use: ToolUseConfig = Field(default_factory=ToolUseConfig)
    transfer: TransferConfig | None = None  # the built-in transfer_call tool, where the carrier can
    context_webhook: ContextWebhookConfig | None = None  # per-call {placeholders} for greeting and prompt
    voicemail: VoicemailConfig = Field(default_factory=VoicemailConfig)  # outbound calls a machine answers

    @field_validator("tools")
    @classmethod
    def _unique_tool_names(cls, tools: list[Any]) -> list[Any]:
        unique_names([tool for tool in tools if isinstance(tool, ToolConfig)], "tool names")
        return tools

    @model_validator(mode="after")
    def _placeholders_have_defaults(self) -> PipelineConfig:
        texts = {"greeting": self.greeting, "system_prompt": self.system_prompt}
        problem = placeholders_without_default(self.context_webhook, texts)
        if problem:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _hedges_before_timeouts(self) -> PipelineConfig:
        after = self.hedging.hedge_after_ms
        for stage, ms in (("stt", after.stt), ("llm", after.llm), ("tts", after.tts)):
            if ms is None or getattr(self, stage, None) is None:
                continue
            sections = [config for _, _, config in stage_choices(getattr(self, stage))]
            sections += getattr(self.fallback, stage)
            for section in sections:
                timeouts = getattr(section, "timeouts", None)
                if timeouts is not None and ms >= timeouts.first_token_s * 1000:
                    raise ValueError(
                        f"hedging.hedge_after_ms.{stage} is {ms} ms, not before {stage} provider "
                        f"{section.provider!r}'s timeouts.first_token_s ({timeouts.first_token_s:g} s): the "
                        f"request would time out before it is hedged; set it below "
                        f"{timeouts.first_token_s * 1000:g} (or raise first_token_s)")
        return self

    @field_validator("shadow")
    @classmethod
    def _unique_shadow_names(cls, shadows: list[Any]) -> list[Any]:
        return unique_names(shadows)


_CASCADE_ONLY = ("stt", "llm", "tts", "fallback", "shadow", "hedging")


class RealtimePipelineConfig(PipelineConfig):
    """`kind: realtime`: one speech-to-speech model hears the caller and answers (`realtime:`), instead of
    STT → LLM → TTS. The call's own settings (greeting, prompt, apology, VAD, DTMF, recording) still hold."""

    kind: Literal["realtime"]  # type: ignore[assignment]
    realtime: RealtimeConfig
    stt: None = None  # type: ignore[assignment]
    llm: None = None  # type: ignore[assignment]
    tts: None = None  # type: ignore[assignment]

    @model_validator(mode="before")
    @classmethod
    def _no_cascade_stages(cls, data: Any) -> Any:
        given = [key for key in _CASCADE_ONLY if isinstance(data, dict) and key in data]
        if given:
            raise ValueError(
                f"kind: realtime has no {', '.join(given)}: the speech-to-speech model in `realtime:` hears "
                "and speaks itself (the apology uses the last-resort voice); remove "
                f"{'them' if len(given) > 1 else 'it'}, or drop `kind: realtime` for a cascade")
        if isinstance(data, dict) and "realtime" not in data:
            raise ValueError("kind: realtime needs a `realtime:` section naming the model, e.g. "
                             "realtime: {provider: openai, model: gpt-realtime}")
        return data


class SplitArm(Strict):
    """One arm of a `kind: split` pipeline: another pipeline, drawn for a share of the calls."""

    name: str  # recorded as the call's variant
    weight: float = Field(1.0, gt=0, le=1_000_000)  # relative share of calls
    pipeline: str  # a cascade or realtime pipeline defined in this file

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        return Named._plain_name(name)


class SplitPipelineConfig(Strict):
    """`kind: split`: each call is answered by one of other pipelines, drawn by weight (A/B across
    kinds: 50 % a cascade with Claude, 50 % OpenAI Realtime). The call is recorded under this pipeline's
    name, its variant is the arm's name (with the drawn pipeline's own stage variants after a '+')."""

    kind: Literal["split"]
    variants: list[SplitArm] = Field(min_length=1)

    @field_validator("variants")
    @classmethod
    def _unique(cls, variants: list[SplitArm]) -> list[SplitArm]:
        return unique_names(variants)


def _pipeline_kind(data: Any) -> str:
    if isinstance(data, dict):
        return str(data.get("kind", "cascade"))
    return str(getattr(data, "kind", "cascade"))


# a pipeline is a cascade (the default) or `kind: realtime`
AnyPipeline = Annotated[
    Union[Annotated[PipelineConfig, Tag("cascade")],  # noqa: UP007
          Annotated[RealtimePipelineConfig, Tag("realtime")],
          Annotated[SplitPipelineConfig, Tag("split")]],
    Discriminator(_pipeline_kind, custom_error_type="pipeline_kind",
                  custom_error_message="kind must be cascade (the default: STT → LLM → TTS), realtime "
                                       "(a speech-to-speech model in `realtime:`) or split (`variants:` "
                                       "drawing other pipelines)"),
]


class PriceConfig(Strict):
    """What a vendor/model costs, in USD, for `switchboard report`'s cost estimates. Any subset."""

    input_per_1m: float | None = Field(None, ge=0)  # LLM: per 1M input (prompt) tokens
    output_per_1m: float | None = Field(None, ge=0)  # LLM: per 1M output tokens
    per_minute: float | None = Field(None, ge=0)  # STT: per minute of audio transcribed
    per_1m_chars: float | None = Field(None, ge=0)  # TTS: per 1M characters spoken
    audio_input_per_1m: float | None = Field(None, ge=0)  # speech-to-speech: per 1M audio input tokens
    audio_output_per_1m: float | None = Field(None, ge=0)  # speech-to-speech: per 1M audio output tokens


class Config(Strict):
    """The whole of pipeline.yaml: named pipelines and which one a call gets by default."""

    default_pipeline: str = "default"
    database_url: str = "switchboard.db"  # call store of `switchboard serve`; "" = off
    numbers: dict[str, str] = Field(default_factory=dict)  # called number (E.164) -> pipeline name
    pipelines: dict[str, AnyPipeline] = Field(min_length=1)
    twilio: TwilioConfig = Field(default_factory=TwilioConfig)
    telnyx: TelnyxConfig = Field(default_factory=TelnyxConfig)  # the stream's codec (telephony/telnyx)
    webrtc: WebRTCConfig = Field(default_factory=WebRTCConfig)  # browser calls: STUN/TURN (telephony/webrtc)
    vonage: VonageConfig = Field(default_factory=VonageConfig)
    pricing: dict[str, PriceConfig] = Field(default_factory=dict)  # "vendor/model" or model -> prices
    shadow_max_concurrent: int = Field(8, ge=1, le=1000)  # shadow requests in flight per server process
    # operations (switchboard/ops/): calls one process takes at once (None: no limit), and how long a
    # SIGTERM lets active calls finish before the rest hear `drain_message` and are hung up
    max_concurrent_calls: int | None = Field(None, ge=1, le=100_000)
    busy_message: str = Field("Sorry, all our lines are busy right now. Please call again in a few minutes.",
                              min_length=1, max_length=500)
    drain_timeout_s: float = Field(60, ge=0, le=3600)
    drain_message: str = Field("Sorry, I have to end this call now. Please call again. Goodbye.",
                               min_length=1, max_length=500)

    @model_validator(mode="after")
    def _numbers_are_routable(self) -> Config:
        problems = number_problems(self.numbers, list(self.pipelines), lambda n: repr(self.numbers[n]))
        if problems:
            raise PydanticCustomError(NUMBERS_ERROR, "; ".join(line for _, line in problems))
        return self

    @model_validator(mode="after")
    def _splits_name_pipelines(self) -> Config:
        for name, pipeline in self.pipelines.items():
            if not isinstance(pipeline, SplitPipelineConfig):
                continue
            for n, arm in enumerate(pipeline.variants):
                target = self.pipelines.get(arm.pipeline)
                if target is None or isinstance(target, SplitPipelineConfig):
                    usable = [each for each, other in self.pipelines.items()
                              if not isinstance(other, SplitPipelineConfig)]
                    what = "is a split itself" if target is not None else "is not a pipeline"
                    raise ValueError(f"pipelines.{name}.variants[{n}].pipeline: {arm.pipeline!r} {what}; "
                                     f"a split draws among: {', '.join(usable)}")
        return self

    def arms(self) -> dict[str, list[str]]:
        """Every pipeline with its arms' names (a `kind: split`'s; empty for the others)."""
        return {name: [arm.name for arm in pipeline.variants] if isinstance(pipeline, SplitPipelineConfig)
                else [] for name, pipeline in self.pipelines.items()}

    def pipeline_for_number(self, number: str | None) -> str | None:
        """The pipeline `numbers:` routes a called number to, or None (the caller uses the default)."""
        return self.numbers.get(number or "")

    @model_validator(mode="after")
    def _default_pipeline_exists(self) -> Config:
        problem = default_pipeline_problem(
            repr(self.default_pipeline), self.default_pipeline in self.pipelines, list(self.pipelines),
            explicit="default_pipeline" in self.model_fields_set,
        )
        if problem:
            raise PydanticCustomError(DEFAULT_PIPELINE_ERROR, problem)
        return self

    def pipeline(self, name: str | None = None) -> PipelineConfig:
        """The pipeline called `name`; None, "" or an unknown name (logged) gives the default one."""
        if name and name in self.pipelines:
            return self.pipelines[name]
        if name:
            log.warning("unknown pipeline %r; using %r (defined: %s)",
                        name, self.default_pipeline, ", ".join(self.pipelines))
        return self.pipelines[self.default_pipeline]


DEFAULT_PIPELINE_ERROR = "unknown_default_pipeline"
NUMBERS_ERROR = "unroutable_number"


def number_problems(
    numbers: dict[Any, Any], defined: list[str], shown: Callable[[str], str]
) -> list[Problem]:
    """`numbers:` entries whose key is not an E.164 number or whose pipeline does not exist."""
    problems: list[Problem] = []
    for number, name in numbers.items():
        if not isinstance(number, str) or not isinstance(name, str):
            continue  # a type error, reported by the schema
        path = ("numbers", number)
        if not E164.fullmatch(number):
            problems.append((path, f"{format_path(path, '')}: not an E.164 number; write it as "
                                   "'+' then the country code and number, digits only, e.g. '+15551234567'"))
        elif name not in defined:
            problems.append((path, f"{format_path(path, '')}: {shown(number)} is not a pipeline; "
                                   f"defined: {', '.join(defined)}"))
    return problems


def default_pipeline_problem(shown: str, exists: bool, defined: list[str], *, explicit: bool) -> str | None:
    """The sentence for a `default_pipeline` that names no pipeline, or None when it is fine."""
    if exists:
        return None
    if explicit:
        return f"default_pipeline: {shown} is not a pipeline; defined: {', '.join(defined)}"
    return (f"default_pipeline: not set, and no pipeline is named 'default'; "
            f"set it to one of: {', '.join(defined)}")


