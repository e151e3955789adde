"""Build the STT, LLM and TTS a pipeline's config names: one factory per `provider:` value.

A vendor module plugs in with one line in the matching table below. Factories import their module
when called, so a pipeline loads only the SDKs it uses. Heavy objects are shared: identical
PocketSphinx settings (with the same phrases) get the same instance, hence one decoder pool.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from pipeline.config import (
    LLMConfig,
    PipelineConfig,
    ScriptedLLMConfig,
    STTConfig,
    Timeouts,
    TTSConfig,
    plain_config,
    stage_choices,
)
from pipeline.shadow import ShadowLLM
from pipeline.variants import Arm, PipelineProviders
from providers.base import LLM, STT, TTS

__all__ = ["build_llm", "build_providers", "build_shadow_llm", "build_stt", "build_tts", "stt_script"]

_shared_stt: dict[str, STT] = {}
_shared_clients: dict[str, Any] = {}


def _pocketsphinx(cfg: Any, llm_cfg: Any | None) -> STT:
    from providers.pocketsphinx import PocketsphinxSTT
    from providers.scripted import ScriptedLLM

    # The scripted rules' phrases are exactly what callers are expected to say: teach them.
    phrases = ScriptedLLM(llm_cfg).phrases() if getattr(llm_cfg, "provider", None) == "scripted" else []
    key = cfg.model_dump_json() + "\n" + "\n".join(phrases)
    if key not in _shared_stt:
        _shared_stt[key] = PocketsphinxSTT(cfg, phrases)
    return _shared_stt[key]


def _scripted(cfg: Any) -> LLM:
    from providers.scripted import ScriptedLLM

    return ScriptedLLM(cfg)


def _espeak(cfg: Any) -> TTS:
    from providers.espeak import EspeakTTS

    return EspeakTTS(cfg)


def _vendor(module: str, cls: str) -> Callable[..., Any]:
    """A factory for a cloud adapter. Identical settings share one instance, hence one HTTP client
    and its warm connections; the stage's timeouts ride along for pipeline/failover.py."""

    def unshared(cfg: Any) -> Any:
        provider = getattr(importlib.import_module(module), cls)(cfg)
        provider.timeouts = cfg.timeouts
        return provider

    def build(cfg: Any, _llm_cfg: Any | None = None) -> Any:
        key = f"{module}.{cls}:{cfg.model_dump_json()}"
        if key not in _shared_clients:
            _shared_clients[key] = unshared(cfg)
        return _shared_clients[key]

    build.unshared = unshared  # type: ignore[attr-defined]  # an instance of its own (shadows)
    return build


STT_FACTORIES: dict[str, Callable[[Any, Any | None], STT]] = {
    "pocketsphinx": _pocketsphinx,
    "openai": _vendor("providers.openai", "OpenAISTT"),
}
LLM_FACTORIES: dict[str, Callable[[Any], LLM]] = {
    "scripted": _scripted,
    "openai": _vendor("providers.openai", "OpenAILLM"),
    "anthropic": _vendor("providers.anthropic", "AnthropicLLM"),
    "gemini": _vendor("providers.gemini", "GeminiLLM"),
    "cohere": _vendor("providers.cohere", "CohereLLM"),
    "huggingface": _vendor("providers.huggingface", "HuggingFaceLLM"),
}
TTS_FACTORIES: dict[str, Callable[[Any], TTS]] = {
    "espeak": _espeak,
    "openai": _vendor("providers.openai", "OpenAITTS"),
}


def build_providers(pipeline: PipelineConfig) -> PipelineProviders:
    """Every provider a pipeline names: each stage's variants, the fallbacks, the shadow LLMs (each with
    an adapter of its own, so its connections never hold up a live turn's). Raises MissingCredential
    for a vendor whose key is not set, so that is a start-up error, not a failure mid-call."""
    script = stt_script(pipeline)
    return PipelineProviders(
        stt=[Arm(name, weight, build_stt(cfg, script)) for name, weight, cfg in stage_choices(pipeline.stt)],
        llm=[Arm(name, weight, build_llm(cfg)) for name, weight, cfg in stage_choices(pipeline.llm)],
        tts=[Arm(name, weight, build_tts(cfg)) for name, weight, cfg in stage_choices(pipeline.tts)],
        fallback_stt=[build_stt(cfg, script) for cfg in pipeline.fallback.stt],
        fallback_llm=[build_llm(cfg) for cfg in pipeline.fallback.llm],
        fallback_tts=[build_tts(cfg) for cfg in pipeline.fallback.tts],
        shadows=[ShadowLLM(shadow.name, build_shadow_llm(plain_config(shadow)),
                           getattr(shadow, "timeouts", None) or Timeouts())
                 for shadow in pipeline.shadow],
    )


def stt_script(pipeline: PipelineConfig) -> LLMConfig:
    """What the embedded STT learns phrases from: the scripted LLM, all of them merged when the LLM
    has several scripted variants, else the (first) LLM."""
    configs = [cfg for _, _, cfg in stage_choices(pipeline.llm)]
    scripted = [cfg for cfg in configs if cfg.provider == "scripted"]
    if len(scripted) > 1:
        return ScriptedLLMConfig(provider="scripted", rules=[rule for cfg in scripted for rule in cfg.rules])
    return scripted[0] if scripted else configs[0]


def build_shadow_llm(cfg: LLMConfig) -> LLM:
    """A shadow's LLM: never the instance (or HTTP client) of a live stage."""
    factory = _factory(LLM_FACTORIES, "llm", cfg)
    return getattr(factory, "unshared", factory)(cfg)


def build_stt(cfg: STTConfig, llm_cfg: LLMConfig | None = None) -> STT:
    """The STT for a pipeline's `stt:` section; `llm_cfg` lets the embedded STT learn the script."""
    return _factory(STT_FACTORIES, "stt", cfg)(cfg, llm_cfg)


def build_llm(cfg: LLMConfig) -> LLM:
    """The LLM for a pipeline's `llm:` section."""
    return _factory(LLM_FACTORIES, "llm", cfg)(cfg)


def build_tts(cfg: TTSConfig) -> TTS:
    """The TTS for a pipeline's `tts:` section."""
    return _factory(TTS_FACTORIES, "tts", cfg)(cfg)


def _factory(table: dict[str, Any], stage: str, cfg: Any) -> Any:
    try:
        return table[cfg.provider]
    except KeyError:
        known = ", ".join(table)
        raise ValueError(f"{stage}: unknown provider {cfg.provider!r}; available: {known}") from None
