"""OpenAI: transcription, chat completions and speech (or any server speaking the same API via `base_url`).

The plug-in: its sections of pipeline.yaml, where its key is read from, and its factories.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from switchboard.core.settings import ChatVendorConfig, VendorConfig
from switchboard.providers.registry import Plugin, lazy, register

ADAPTER = "switchboard.providers.openai.adapter"  # on the official SDK, imported only when used
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
