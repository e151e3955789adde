"""Cohere chat (v2 API).

The plug-in: its sections of pipeline.yaml, where its key is read from, and its factories. The adapter
on the official SDK is `adapter.py`, imported only when a pipeline uses this vendor.
"""

from __future__ import annotations

from typing import Any, Literal

from switchboard.core.settings import ChatVendorConfig
from switchboard.providers.registry import Plugin, register

KEY_ENV = ("CO_API_KEY",)  # `api_key_env` names another variable


class CohereLLMConfig(ChatVendorConfig):
    """Cohere chat (v2 API)."""

    provider: Literal["cohere"]
    model: str = "command-a-03-2025"


def _llm(config: CohereLLMConfig) -> Any:
    from switchboard.providers.cohere.adapter import CohereLLM

    return CohereLLM(config)


register(Plugin("llm", "cohere", CohereLLMConfig, _llm, key_env=KEY_ENV))
