"""Anthropic's Messages API (Claude).

The plug-in: its sections of pipeline.yaml, where its key is read from, and its factories. The adapter
on the official SDK is `adapter.py`, imported only when a pipeline uses this vendor.
"""

from __future__ import annotations

from typing import Any, Literal

from switchboard.core.settings import ChatVendorConfig
from switchboard.providers.registry import Plugin, register

KEY_ENV = ("ANTHROPIC_API_KEY",)  # `api_key_env` names another variable


class AnthropicLLMConfig(ChatVendorConfig):
    """Anthropic Messages API (Claude)."""

    provider: Literal["anthropic"]
    model: str = "claude-haiku-4-5"


def _llm(config: AnthropicLLMConfig) -> Any:
    from switchboard.providers.anthropic.adapter import AnthropicLLM

    return AnthropicLLM(config)


register(Plugin("llm", "anthropic", AnthropicLLMConfig, _llm, key_env=KEY_ENV))
