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

from pipeline.config import Config, plain_config, stage_choices
from providers.base import Message, MissingCredential

# The environment variables each vendor's key is read from (the adapters' defaults).
KEY_ENV: dict[str, tuple[str, ...]] = {
    "openai": ("OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
    "cohere": ("CO_API_KEY",),
    "huggingface": ("HF_TOKEN",),
}


def credential_status(cfg: Any) -> str:
    names = (cfg.api_key_env,) if getattr(cfg, "api_key_env", None) else KEY_ENV.get(cfg.provider, ())
    if not names:
        return "no key needed (embedded)"
    found = [name for name in names if os.environ.get(name)]
    return f"{found[0]} set" if found else f"MISSING: set {' or '.join(names)}"


def stages(pipeline: Any) -> list[tuple[str, Any]]:
    """(label, config) for every provider a pipeline uses: primaries (every A/B variant), fallbacks,
    shadow LLMs."""
    out = []
    for stage in ("stt", "llm", "tts"):
        out += [(stage if name is None else f"{stage} {name}", cfg)
                for name, _, cfg in stage_choices(getattr(pipeline, stage))]
    for stage in ("stt", "llm", "tts"):
        out += [(f"{stage} fallback {n}", cfg) for n, cfg in enumerate(getattr(pipeline.fallback, stage), 1)]
    out += [(f"llm shadow {shadow.name}", plain_config(shadow)) for shadow in pipeline.shadow]
    return out


def describe(config: Config) -> tuple[list[str], bool]:
    """The report's lines, and whether every credential is present."""
    lines, complete = [], True
    for name, pipeline in config.pipelines.items():
        default = " (default)" if name == config.default_pipeline else ""
        lines.append(f"pipeline {name}{default}")
        for label, cfg in stages(pipeline):
            model = getattr(cfg, "model", None) or getattr(cfg, "voice", None) or getattr(cfg, "mode", "")
            status = credential_status(cfg)
            complete &= not status.startswith("MISSING")
            where = f" at {cfg.base_url}" if getattr(cfg, "base_url", None) else ""
            lines.append(f"  {label:<16} {cfg.provider:<13} {model!s:<34} {status}{where}")
    return lines, complete


async def ping(label: str, cfg: Any, llm_cfg: Any) -> str:
    """One tiny real request; the time to its first result."""
    from providers import registry

    try:
        started = time.monotonic()
        if label.startswith("stt"):
            stt = registry.build_stt(cfg, llm_cfg)
            await stt.transcribe(np.zeros(stt.sample_rate // 2, dtype=np.int16))
        elif label.startswith("llm"):
            stream = registry.build_llm(cfg).stream([Message("user", "Say OK.")], [])
            await anext(aiter(stream))
            await stream.aclose()
        else:
            stream = registry.build_tts(cfg).stream("OK.")
            await anext(aiter(stream))
            await stream.aclose()
        return f"{(time.monotonic() - started) * 1000:.0f} ms"
    except MissingCredential as exc:
        return f"skipped: {exc}"
    except Exception as exc:
        return f"FAILED: {type(exc).__name__}: {exc}"


async def ping_all(config: Config) -> list[str]:
    from providers import registry

    lines = []
    for name, pipeline in config.pipelines.items():
        for label, cfg in stages(pipeline):
            result = await asyncio.wait_for(ping(label, cfg, registry.stt_script(pipeline)), timeout=30)
            lines.append(f"  {name}: {label:<16} {cfg.provider:<13} {result}")
    return lines
