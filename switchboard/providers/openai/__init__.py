"""OpenAI: transcription, chat completions, speech and the Realtime API (or any server speaking the
same API via `base_url`).

The plug-in: its sections of pipeline.yaml, where its key is read from, and its factories.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from switchboard.core.settings import ChatVendorConfig, Strict, VendorConfig
from switchboard.providers.registry import Plugin, lazy, register

ADAPTER = "switchboard.providers.openai.adapter"  # on the official SDK, imported only when used
REALTIME_ADAPTER = "switchboard.providers.openai.realtime"  # the Realtime API, on the SDK too
KEY_ENV = ("OPENAI_API_KEY",)  # `api_key_env` names another variable


class OpenAISTTConfig(VendorConfig):
    """OpenAI transcription (16 kHz mono WAV upload)."""

    provider: Literal["openai"]
    model: Literal["whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"] = "gpt-4o-mini-transcribe"
    language: str | None = None  # ISO-639-1, e.g. "en"; None lets the model detect it
    prompt: str | None = None  # vocabulary / style hint


class OpenAILLMConfig(ChatVendorConfig):
    """OpenAI chat completions, or any OpenAI-compatible server via `base_url` (vLLM, Ollama, Groq...)."""

    provider: Literal["openai"]
    model: str = "gpt-4o-mini"


class OpenAITTSConfig(VendorConfig):
    """OpenAI speech, streamed as 24 kHz PCM and resampled to the line's 8 kHz."""

    provider: Literal["openai"]
    model: Literal["gpt-4o-mini-tts", "tts-1", "tts-1-hd"] = "gpt-4o-mini-tts"
    voice: str = "alloy"
    instructions: str | None = None  # tone of voice (gpt-4o-mini-tts only)
    speed: float = Field(1.0, ge=0.25, le=4.0)


register(Plugin("stt", "openai", OpenAISTTConfig, lazy(ADAPTER, "OpenAISTT"), key_env=KEY_ENV))
register(Plugin("llm", "openai", OpenAILLMConfig, lazy(ADAPTER, "OpenAILLM"), key_env=KEY_ENV))
register(Plugin("tts", "openai", OpenAITTSConfig, lazy(ADAPTER, "OpenAITTS"), key_env=KEY_ENV))


class ServerVAD(Strict):
    """OpenAI's voice activity detection by loudness."""

    type: Literal["server_vad"]
    threshold: float = Field(0.5, ge=0, le=1)  # higher = louder speech needed (noisy lines)
    prefix_padding_ms: int = Field(300, ge=0, le=5000)  # audio kept from before the speech started
    silence_duration_ms: int = Field(500, ge=50, le=10000)  # silence that ends the caller's turn
    idle_timeout_ms: int | None = Field(None, ge=5000, le=30000)  # no speech this long: the model prompts


class SemanticVAD(Strict):
    """OpenAI's turn detection by meaning: waits longer when the caller sounds unfinished."""

    type: Literal["semantic_vad"]
    eagerness: Literal["low", "medium", "high", "auto"] = "auto"


class OpenAIRealtimeConfig(VendorConfig):
    """OpenAI Realtime (speech-to-speech over a WebSocket): G.711 μ-law in and out, no resampling.

    The GA Realtime API has no `temperature` (the session refuses one), so neither has this section."""

    provider: Literal["openai"]
    model: str = "gpt-realtime"
    voice: str = "marin"
    turn_detection: ServerVAD | SemanticVAD = Field(default_factory=lambda: ServerVAD(type="server_vad"),
                                                    discriminator="type")
    transcription_model: str | None = "gpt-4o-mini-transcribe"  # the caller's words for the store; None = off
    language: str | None = None  # ISO-639-1 hint for the transcription
    max_output_tokens: int | None = Field(None, ge=1, le=4096)  # None = the vendor's default ("inf")
    session_limit_s: float = Field(3600, ge=60, le=3600)  # OpenAI ends a session after 60 minutes

    def summary(self) -> str:
        return f"{self.model} ({self.voice}, {self.turn_detection.type})"


register(Plugin("realtime", "openai", OpenAIRealtimeConfig, lazy(REALTIME_ADAPTER, "OpenAIRealtime"),
                key_env=KEY_ENV))
