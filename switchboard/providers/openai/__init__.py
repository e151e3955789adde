"""OpenAI: transcription, chat completions and speech (or any server speaking the same API via `base_url`).

The plug-in: its sections of pipeline.yaml, where its key is read from, and its factories. The adapter
on the official SDK is `adapter.py`, imported only when a pipeline uses this vendor.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from switchboard.core.settings import ChatVendorConfig, VendorConfig
from switchboard.providers.registry import Plugin, register

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


def _stt(config: OpenAISTTConfig) -> Any:
    from switchboard.providers.openai.adapter import OpenAISTT

    return OpenAISTT(config)


def _llm(config: OpenAILLMConfig) -> Any:
    from switchboard.providers.openai.adapter import OpenAILLM

    return OpenAILLM(config)


def _tts(config: OpenAITTSConfig) -> Any:
    from switchboard.providers.openai.adapter import OpenAITTS

    return OpenAITTS(config)


register(Plugin("stt", "openai", OpenAISTTConfig, _stt, key_env=KEY_ENV))
register(Plugin("llm", "openai", OpenAILLMConfig, _llm, key_env=KEY_ENV))
register(Plugin("tts", "openai", OpenAITTSConfig, _tts, key_env=KEY_ENV))
