"""Google Gemini through the google-genai SDK.

The plug-in: its sections of pipeline.yaml, where its key is read from, and its factories. The adapter
on the official SDK is `adapter.py`, imported only when a pipeline uses this vendor.
"""

from __future__ import annotations

from typing import Any, Literal

from switchboard.core.settings import ChatVendorConfig
from switchboard.providers.registry import Plugin, register

KEY_ENV = ("GEMINI_API_KEY", "GOOGLE_API_KEY")  # `api_key_env` names another variable


class GeminiLLMConfig(ChatVendorConfig):
    """Google Gemini through the google-genai SDK."""

    provider: Literal["gemini"]
    model: str = "gemini-2.5-flash"


def _llm(config: GeminiLLMConfig) -> Any:
    from switchboard.providers.gemini.adapter import GeminiLLM

    return GeminiLLM(config)


register(Plugin("llm", "gemini", GeminiLLMConfig, _llm, key_env=KEY_ENV))
