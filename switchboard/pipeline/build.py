"""A pipeline's providers, built from its config through the plug-in registry: each stage's A/B variants,
the fallbacks, the shadow LLMs (each with an adapter of its own, so its connections never hold up a live
turn's). Everything is built at start-up, so a bad setting or a missing key fails there, not mid-call.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from switchboard.config import PipelineConfig, plain_config, stage_choices
from switchboard.config.schema import RealtimePipelineConfig
from switchboard.config.tools import McpToolsConfig
from switchboard.core.errors import StartupError
from switchboard.core.protocols import TTS
from switchboard.core.settings import Timeouts, VendorConfig
from switchboard.pipeline.hedging import Hedging
from switchboard.pipeline.realtime import RealtimeProviders
from switchboard.pipeline.shadow import ShadowLLM
from switchboard.pipeline.tools import ToolBox
from switchboard.pipeline.variants import Arm, PipelineProviders
from switchboard.providers import registry

if TYPE_CHECKING:
    from switchboard.pipeline.mcp import McpClients


def build_providers(pipeline: PipelineConfig) -> PipelineProviders | RealtimeProviders:
    """Every provider a pipeline names. Raises MissingCredential for a vendor whose key is not set."""
    if isinstance(pipeline, RealtimePipelineConfig):
        return build_realtime(pipeline)
    phrases = expected_phrases(pipeline)
    return PipelineProviders(
        stt=[Arm(name, weight, registry.build("stt", cfg, phrases))
             for name, weight, cfg in stage_choices(pipeline.stt)],
        llm=[Arm(name, weight, registry.build("llm", cfg))
             for name, weight, cfg in stage_choices(pipeline.llm)],
        tts=[Arm(name, weight, registry.build("tts", cfg))
             for name, weight, cfg in stage_choices(pipeline.tts)],
        fallback_stt=[registry.build("stt", cfg, phrases) for cfg in pipeline.fallback.stt],
        fallback_llm=[registry.build("llm", cfg) for cfg in pipeline.fallback.llm],
        fallback_tts=_with_last_resort(pipeline),
        shadows=[ShadowLLM(shadow.name, registry.build("llm", plain_config(shadow), shared=False),
                           _timeouts(plain_config(shadow)))
                 for shadow in pipeline.shadow],
        hedging=Hedging(pipeline.hedging),
    )


def build_tools(pipeline: PipelineConfig, mcp: McpClients | None) -> ToolBox:
    """The pipeline's tools, shared by its calls: its HTTP tools and its MCP servers' (sessions from
    `mcp`, the host's, started in its lifespan)."""
    servers = [tool.mcp for tool in pipeline.tools if isinstance(tool, McpToolsConfig)]
    sources = [mcp.source(server) for server in servers] if mcp is not None else []
    return ToolBox(pipeline.tools, pipeline.tool_use, list(sources))


def mcp_clients(pipelines: Iterable[object]) -> McpClients | None:
    """The process's MCP sessions, if a pipeline lists an MCP server (only then is the SDK imported)."""
    if not any(isinstance(tool, McpToolsConfig) for each in pipelines for tool in getattr(each, "tools", [])):
        return None
    from switchboard.pipeline.mcp import McpClients

    return McpClients()


def build_realtime(pipeline: RealtimePipelineConfig) -> RealtimeProviders:
    """A `kind: realtime` pipeline's model, and the last-resort voice its apology is spoken with."""
    last = registry.last_resort("tts")
    if last is None:
        raise StartupError("a realtime pipeline needs a last-resort voice (eSpeak) for its apology")
    return RealtimeProviders(registry.build("realtime", pipeline.realtime), registry.build("tts", last))


def _with_last_resort(pipeline: PipelineConfig) -> list[TTS]:
    """The TTS fallbacks, ending with the last-resort voice (eSpeak) unless every TTS is that engine
    already: when every other voice fails, the caller still hears the apology."""
    fallbacks = [registry.build("tts", cfg) for cfg in pipeline.fallback.tts]
    last = registry.last_resort("tts")
    if last is None:
        return fallbacks
    fallback_providers = [cfg.provider for cfg in pipeline.fallback.tts]
    providers = [cfg.provider for _, _, cfg in stage_choices(pipeline.tts)] + fallback_providers
    listed_as_fallback = last.provider in fallback_providers  # with the settings the file chose
    only_voice = all(provider == last.provider for provider in providers)
    if not listed_as_fallback and not only_voice:
        fallbacks.append(registry.build("tts", last))
    return fallbacks


def _timeouts(config: object) -> Timeouts:
    """A shadow's own limits: its vendor's `timeouts`, or the defaults for an embedded LLM."""
    return config.timeouts if isinstance(config, VendorConfig) else Timeouts()


def expected_phrases(pipeline: PipelineConfig) -> list[str]:
    """What callers are expected to say, which an embedded recogniser is taught: the phrases of every
    LLM variant that knows some (the scripted rules'), in order."""
    phrases: list[str] = []
    for _, _, cfg in stage_choices(pipeline.llm):
        phrases += registry.expected_phrases(cfg)
    return phrases
