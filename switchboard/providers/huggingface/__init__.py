"""Hugging Face Inference Providers, a TGI server or an Inference Endpoint.

The plug-in: its sections of pipeline.yaml, where its key is read from, and its factories.
"""

from __future__ import annotations

from typing import Literal

from switchboard.core.settings import ChatVendorConfig
from switchboard.providers.registry import Plugin, lazy, register

ADAPTER = "switchboard.providers.huggingface.adapter"  # on the official SDK, imported only when used
KEY_ENV = ("HF_TOKEN",)  # `api_key_env` names another variable


class HuggingFaceLLMConfig(ChatVendorConfig):
    """Hugging Face Inference Providers (a model id) or a TGI / Inference Endpoint (`base_url`)."""

    provider: Literal["huggingface"]
    model: str = "meta-llama/Llama-3.1-8B-Instruct"
    inference_provider: str | None = None  # e.g. "together", "groq"; None = Hugging Face's choice


register(Plugin("llm", "huggingface", HuggingFaceLLMConfig, lazy(ADAPTER, "HuggingFaceLLM"), key_env=KEY_ENV))
