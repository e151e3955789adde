"""Cohere chat (v2 API).

The plug-in: its sections of pipeline.yaml, where its key is read from, and its factories.
"""

from __future__ import annotations

from typing import Literal

from switchboard.core.settings import ChatVendorConfig
from switchboard.providers.registry import Plugin, lazy, register

ADAPTER = "switchboard.providers.cohere.adapter"  # on the official SDK, imported only when used
KEY_ENV = ("CO_API_KEY",)  # `api_key_env` names another variable


class CohereLLMConfig(ChatVendorConfig):
    """Cohere chat (v2 API)."""

    provider: Literal["cohere"]
    model: str = "command-a-03-2025"


register(Plugin("llm", "cohere", CohereLLMConfig, lazy(ADAPTER, "CohereLLM"), key_env=KEY_ENV))
