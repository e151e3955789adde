"""Google Gemini through the google-genai SDK.

The plug-in: its sections of pipeline.yaml, where its key is read from, and its factories.
"""

from __future__ import annotations

from typing import Literal

from switchboard.core.settings import ChatVendorConfig
from switchboard.providers.registry import Plugin, lazy, register

ADAPTER = "switchboard.providers.gemini.adapter"  # on the official SDK, imported only when used
KEY_ENV = ("GEMINI_API_KEY", "GOOGLE_API_KEY")  # `api_key_env` names another variable


class GeminiLLMConfig(ChatVendorConfig):
    """Google Gemini through the google-genai SDK."""

    provider: Literal["gemini"]
    model: str = "gemini-2.5-flash"


register(Plugin("llm", "gemini", GeminiLLMConfig, lazy(ADAPTER, "GeminiLLM"), key_env=KEY_ENV))
