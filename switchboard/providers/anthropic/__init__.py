"""Anthropic's Messages API (Claude).

The plug-in: its sections of pipeline.yaml, where its key is read from, and its factories.
"""

from __future__ import annotations

from typing import Literal

from switchboard.core.settings import ChatVendorConfig
from switchboard.providers.registry import Plugin, lazy, register

ADAPTER = "switchboard.providers.anthropic.adapter"  # on the official SDK, imported only when used
KEY_ENV = ("ANTHROPIC_API_KEY",)  # `api_key_env` names another variable


class AnthropicLLMConfig(ChatVendorConfig):
    """Anthropic Messages API (Claude)."""

    provider: Literal["anthropic"]
    model: str = "claude-haiku-4-5"


register(Plugin("llm", "anthropic", AnthropicLLMConfig, lazy(ADAPTER, "AnthropicLLM"), key_env=KEY_ENV))
