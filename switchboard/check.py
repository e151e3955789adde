"""`switchboard check`: is this pipeline.yaml usable here? Providers, models, credentials, and a ping.

Credentials are reported as set or missing, never shown. `--ping` sends one tiny real request per
configured provider (a short reply, a short phrase to speak, half a second of silence to transcribe)
and prints how long the first result took.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import numpy as np

from switchboard.audio import smart_turn
from switchboard.config import Config, plain_config, stage_choices
from switchboard.config.tools import ENV_REF, ToolConfig
from switchboard.core.errors import MissingCredential
from switchboard.core.messages import Message
from switchboard.core.settings import ProviderConfig, VendorConfig
from switchboard.pipeline.build import expected_phrases
from switchboard.providers import registry
from switchboard.telephony.exotel import TRANSFER_UNSUPPORTED as EXOTEL_TRANSFER_UNSUPPORTED
from switchboard.telephony.twilio.rest import ACCOUNT_SID_ENV, AUTH_TOKEN_ENV


def credential_status(cfg: ProviderConfig) -> str:
    names = ((cfg.api_key_env,) if isinstance(cfg, VendorConfig) and cfg.api_key_env
             else registry.plugin_of(cfg).key_env)
    if not names:
        return "no key needed (embedded)"
    found = [name for name in names if os.environ.get(name)]
    return f"{found[0]} set" if found else f"MISSING: set {' or '.join(names)}"


def stages(pipeline: Any) -> list[tuple[str, Any]]:
    """(label, config) for every provider a pipeline uses: primaries (every A/B variant), fallbacks,
    shadow LLMs."""
    if pipeline.kind == "realtime":  # one speech-to-speech model, no stages
        return [("realtime", pipeline.realtime)]
    if pipeline.kind == "split":  # draws other pipelines, listed on their own
        return []
    out = []
    for stage, section in (("stt", pipeline.stt), ("llm", pipeline.llm), ("tts", pipeline.tts)):
        out += [(stage if name is None else f"{stage} {name}", cfg)
                for name, _, cfg in stage_choices(section)]
    fallback = pipeline.fallback
    for stage, chain in (("stt", fallback.stt), ("llm", fallback.llm), ("tts", fallback.tts)):
        out += [(f"{stage} fallback {n}", cfg) for n, cfg in enumerate(chain, 1)]
    out += [(f"llm shadow {shadow.name}", plain_config(shadow)) for shadow in pipeline.shadow]
    return out


def describe(config: Config) -> tuple[list[str], bool]:
    """The report's lines, and whether every credential is present."""
    lines, complete = [], True
    for name, pipeline in config.pipelines.items():
        default = " (default)" if name == config.default_pipeline else ""
        lines.append(f"pipeline {name}{default}")
        for label, cfg in stages(pipeline):
            status = credential_status(cfg)
            complete &= not status.startswith("MISSING")
            where = f" at {cfg.base_url}" if isinstance(cfg, VendorConfig) and cfg.base_url else ""
            lines.append(f"  {label:<16} {cfg.provider:<13} {cfg.summary():<34} {status}{where}")
        lines += tool_lines(pipeline)
        if pipeline.kind == "cascade" and pipeline.turn.audio_model == "smart-turn-v3":
            try:
                lines.append(f"  {'end of turn':<16} smart-turn-v3 {smart_turn.model_path()}")
            except smart_turn.SmartTurnUnavailable as exc:
                complete = False
                lines.append(f"  {'end of turn':<16} smart-turn-v3 MISSING: {exc}")
    return lines, complete


def tool_lines(pipeline: Any) -> list[str]:
    """The pipeline's HTTP tools (their URL templates: `${VAR}` is shown, never its value) and where
    `transfer_call` is offered, and why not elsewhere."""
    lines = [f"  {'tool':<16} {tool.name:<13} {tool.http.method} {tool.http.url}{_unset(tool.http.url)}"
             if isinstance(tool, ToolConfig) else
             f"  {'mcp':<16} {tool.mcp.label}{_unset(tool.mcp.url or '')}"
             f"{' (optional)' if tool.mcp.optional else ''}: its tools are listed at start-up"
             for tool in pipeline.tools]
    if pipeline.transfer is not None:
        targets = ", ".join(pipeline.transfer.targets)
        rest = [name for name in (ACCOUNT_SID_ENV, AUTH_TOKEN_ENV) if not os.environ.get(name)]
        twilio = ("offered on Twilio calls" if not rest else
                  f"NOT offered on Twilio calls: set {' and '.join(rest)} (the call is redirected through "
                  "Twilio's REST API)")
        lines.append(f"  {'transfer_call':<16} {targets}: {twilio}")
        lines.append(f"  {'':<16} not offered on Exotel calls: {EXOTEL_TRANSFER_UNSUPPORTED}")
        # the carriers' REST credentials (telephony/plivo, vonage, telnyx rest.py; named here so
        # that `check` does not import their SDKs)
        for carrier, needed in (("Plivo", ("PLIVO_AUTH_ID", "PLIVO_AUTH_TOKEN")),
                                ("Vonage", ("VONAGE_APPLICATION_ID", "VONAGE_PRIVATE_KEY")),
                                ("Telnyx", ("TELNYX_API_KEY",))):
            unset = [name for name in needed if not os.environ.get(name)
                     and not (name == "VONAGE_PRIVATE_KEY" and os.environ.get("VONAGE_PRIVATE_KEY_PATH"))]
            why = (f"offered on {carrier} calls" if not unset else
                   f"NOT offered on {carrier} calls: set {' and '.join(unset)} (the call is transferred "
                   f"through {carrier}'s REST API)")
            lines.append(f"  {'':<16} {why}")
    return lines


def _unset(template: str) -> str:
    """What a URL template's unset `${VAR:-default}`s mean (an unset one without a default fails at load)."""
    unset = [name for _, name, default in ENV_REF.findall(template)
             if name and default and not os.environ.get(name)]
    return f" ({', '.join(unset)} not set: the default is used)" if unset else ""


async def ping(label: str, cfg: Any, phrases: list[str]) -> str:
    """One tiny real request; the time to its first result."""
    try:
        started = time.monotonic()
        if label.startswith("stt"):
            stt = registry.build("stt", cfg, phrases)
            await stt.transcribe(np.zeros(stt.sample_rate // 2, dtype=np.int16))
        elif label.startswith("realtime"):  # the time to open a session
            connection = await registry.build("realtime", cfg).connect("", [])
            await connection.close()
        elif label.startswith("llm"):
            stream = registry.build("llm", cfg).stream([Message("user", "Say OK.")], [])
            await anext(aiter(stream))
            await stream.aclose()
        else:
            stream = registry.build("tts", cfg).stream("OK.")
            await anext(aiter(stream))
            await stream.aclose()
        return f"{(time.monotonic() - started) * 1000:.0f} ms"
    except MissingCredential as exc:
        return f"skipped: {exc}"
    except Exception as exc:
        return f"FAILED: {type(exc).__name__}: {exc}"


async def ping_all(config: Config) -> list[str]:
    lines = []
    for name, pipeline in config.pipelines.items():
        for label, cfg in stages(pipeline):
            phrases = expected_phrases(pipeline) if pipeline.kind == "cascade" else []
            result = await asyncio.wait_for(ping(label, cfg, phrases), timeout=30)
            lines.append(f"  {name}: {label:<16} {cfg.provider:<13} {result}")
    return lines
