"""Google Gemini through the google-genai SDK: chat, and the Live API (speech to speech).

The plug-in: its sections of pipeline.yaml, where its key is read from, and its factories.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from switchboard.core.settings import ChatVendorConfig, VendorConfig
from switchboard.providers.registry import Plugin, lazy, register

ADAPTER = "switchboard.providers.gemini.adapter"  # on the official SDK, imported only when used
LIVE_ADAPTER = "switchboard.providers.gemini.live"  # the Live API, on the same SDK
KEY_ENV = ("GEMINI_API_KEY", "GOOGLE_API_KEY")  # `api_key_env` names another variable


class GeminiLLMConfig(ChatVendorConfig):
    """Google Gemini through the google-genai SDK."""

    provider: Literal["gemini"]
    model: str = "gemini-2.5-flash"


register(Plugin("llm", "gemini", GeminiLLMConfig, lazy(ADAPTER, "GeminiLLM"), key_env=KEY_ENV))


class GeminiLiveConfig(VendorConfig):
    """Gemini Live (speech-to-speech over a WebSocket): 16 kHz PCM in, 24 kHz out, resampled from and to
    the line's 8 kHz. Its automatic activity detection decides when the caller has finished."""

    provider: Literal["gemini"]
    model: str = "gemini-2.5-flash-native-audio-preview-09-2025"
    voice: str = "Puck"
    temperature: float | None = Field(None, ge=0, le=2)
    start_of_speech_sensitivity: Literal["high", "low"] | None = None  # None = the vendor's default
    end_of_speech_sensitivity: Literal["high", "low"] | None = None
    prefix_padding_ms: int | None = Field(None, ge=0, le=5000)
    silence_duration_ms: int | None = Field(None, ge=50, le=10000)  # silence that ends the caller's turn
    transcription: bool = True  # both sides' words, for the store
    session_limit_s: float = Field(600, ge=60, le=900)  # Gemini Live ends a connection after ~10 minutes

    def summary(self) -> str:
        return f"{self.model} ({self.voice})"


register(Plugin("realtime", "gemini", GeminiLiveConfig, lazy(LIVE_ADAPTER, "GeminiLive"), key_env=KEY_ENV))
