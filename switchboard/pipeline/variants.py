"""A/B variants: every provider a pipeline may use, and the draw that gives one call its own set.

A stage section of pipeline.yaml is one provider or `{variants: [...]}` (pipeline/config.py). Everything
is built at start-up (providers/registry.py), so a bad variant fails there; a call only picks. At call
start each stage with variants is drawn independently, by weight, from one `random.Random` (seedable);
the choice holds for the whole call. The call's variant is the chosen names of the varying stages joined
by "+" in stt, llm, tts order ("gpt", "gpt+alloy"), or None when no stage varies: it is logged, stored on
the call's row (`calls.variant`) and on every turn's metrics.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from switchboard.config.schema import SplitPipelineConfig
from switchboard.core.protocols import LLM, STT, TTS
from switchboard.pipeline.call import Providers
from switchboard.pipeline.hedging import Hedging
from switchboard.pipeline.shadow import ShadowLLM
from switchboard.pipeline.tools import ToolBox

T = TypeVar("T")

SEPARATOR = "+"  # joins the chosen names of several stages


@dataclass
class Arm(Generic[T]):
    """One variant of a stage: its name (None for a stage without variants), weight and provider."""

    name: str | None
    weight: float
    provider: T


@dataclass
class PipelineProviders:
    """A pipeline's providers: each stage's variants, the fallbacks (shared by every variant) and the
    shadow LLMs."""

    stt: list[Arm[STT]]
    llm: list[Arm[LLM]]
    tts: list[Arm[TTS]]
    fallback_stt: list[STT] = field(default_factory=list)
    fallback_llm: list[LLM] = field(default_factory=list)
    fallback_tts: list[TTS] = field(default_factory=list)
    shadows: list[ShadowLLM] = field(default_factory=list)
    tools: ToolBox | None = None  # the pipeline's tools, shared by its calls (set by the host)
    hedging: Hedging | None = None  # the pipeline's, shared by its calls (pipeline/hedging.py)

    @classmethod
    def of(cls, providers: Providers | PipelineProviders) -> PipelineProviders:
        """`providers` as it is, or one fixed set of providers with nothing to draw."""
        if isinstance(providers, PipelineProviders):
            return providers
        return cls(
            stt=[Arm(None, 1.0, providers.stt)], llm=[Arm(None, 1.0, providers.llm)],
            tts=[Arm(None, 1.0, providers.tts)], fallback_stt=list(providers.fallback_stt),
            fallback_llm=list(providers.fallback_llm), fallback_tts=list(providers.fallback_tts),
            tools=providers.tools,
            hedging=providers.hedging,
        )

    @property
    def varies(self) -> bool:
        return any(_varies(arms) for arms in (self.stt, self.llm, self.tts))

    def pick(self, rng: random.Random) -> tuple[str | None, Providers]:
        """One call's variant name (None when nothing varies) and providers, drawn by weight."""
        chosen = [draw(arms, rng) for arms in (self.stt, self.llm, self.tts)]
        names = [arm.name for arm, arms in zip(chosen, (self.stt, self.llm, self.tts), strict=True)
                 if _varies(arms) and arm.name is not None]
        stt, llm, tts = chosen
        providers = Providers(stt.provider, llm.provider, tts.provider, fallback_stt=self.fallback_stt,
                              fallback_llm=self.fallback_llm, fallback_tts=self.fallback_tts,
                              tools=self.tools, hedging=self.hedging)
        return (SEPARATOR.join(names) or None), providers

    def all_stt(self) -> list[STT]:
        """Every STT the pipeline may use (to warm them at start-up)."""
        return [arm.provider for arm in self.stt] + list(self.fallback_stt)


def _varies(arms: list[Arm[T]]) -> bool:
    return len(arms) > 1 or any(arm.name is not None for arm in arms)


def draw_pipeline(split: SplitPipelineConfig, rng: random.Random) -> tuple[str, str]:
    """A `kind: split` pipeline's draw for one call: (the arm's name, the pipeline that answers)."""
    arm = draw([Arm(each.name, each.weight, each.pipeline) for each in split.variants], rng)
    assert arm.name is not None
    return arm.name, arm.provider


def draw(arms: list[Arm[T]], rng: random.Random) -> Arm[T]:
    """One arm, with probability weight / sum of weights (no draw for a single arm)."""
    if len(arms) == 1:
        return arms[0]
    return rng.choices(arms, weights=[arm.weight for arm in arms])[0]

