"""CPU per streamed chat request in the server's process, for each LLM adapter against its vendor's fake
in another process (so the fake's work is not counted), for conversations of a few lengths; and, for
OpenAI, the SDK's typed `chat.completions.create` beside the adapter (the body walked against its typed
parameters and a model built per chunk, which the adapter skips: bench/README.md).

    python -m bench.llm_request [--requests 60] [--reply-words 30] [--vendors openai,anthropic,...]

What each LLM request costs the event loop that every call's audio shares.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from switchboard.core.messages import Message

LENGTHS = (3, 11, 41)  # messages: the system prompt and a first line; five exchanges; twenty
VENDORS = ("openai", "anthropic", "gemini", "cohere", "huggingface")


def _fake_app(vendor: str, reply: str) -> Any:
    from tests.fakes import anthropic_fake, cohere_fake, gemini_fake, huggingface_fake, openai_fake
    from tests.fakes.common import Faults

    if vendor == "openai":
        return openai_fake.make_app(Faults(), openai_fake.OpenAIScript(reply=reply))
    if vendor == "anthropic":
        return anthropic_fake.anthropic_app(Faults(), reply=reply)
    if vendor == "cohere":
        return cohere_fake.cohere_app(Faults(), reply=reply)
    return (gemini_fake if vendor == "gemini" else huggingface_fake).create_app(Faults(), reply=reply)


def _serve(vendors: list[str], reply: str, ports: Any) -> None:
    from switchboard.server import running

    async def main() -> None:
        import contextlib

        async with contextlib.AsyncExitStack() as stack:
            bound = [await stack.enter_async_context(running(_fake_app(v, reply))) for v in vendors]
            ports.put(bound)
            await asyncio.Event().wait()

    asyncio.run(main())


def _llm(vendor: str, url: str) -> Any:
    from switchboard.providers.anthropic import AnthropicLLMConfig
    from switchboard.providers.anthropic.adapter import AnthropicLLM
    from switchboard.providers.cohere import CohereLLMConfig
    from switchboard.providers.cohere.adapter import CohereLLM
    from switchboard.providers.gemini import GeminiLLMConfig
    from switchboard.providers.gemini.adapter import GeminiLLM
    from switchboard.providers.huggingface import HuggingFaceLLMConfig
    from switchboard.providers.huggingface.adapter import HuggingFaceLLM
    from switchboard.providers.openai import OpenAILLMConfig
    from switchboard.providers.openai.adapter import OpenAILLM

    made: dict[str, Callable[[], Any]] = {
        "openai": lambda: OpenAILLM(OpenAILLMConfig(provider="openai", base_url=f"{url}/v1")),
        "anthropic": lambda: AnthropicLLM(AnthropicLLMConfig(provider="anthropic", base_url=url)),
        "gemini": lambda: GeminiLLM(GeminiLLMConfig(provider="gemini", base_url=url)),
        "cohere": lambda: CohereLLM(CohereLLMConfig(provider="cohere", base_url=url)),
        "huggingface": lambda: HuggingFaceLLM(HuggingFaceLLMConfig(provider="huggingface", base_url=url,
                                                                   model="meta-llama/Llama-3.1-8B-Instruct")),
    }
    return made[vendor]()


def _history(length: int) -> list[Message]:
    turns = [Message("user" if k % 2 == 0 else "assistant", "Could you tell me when you open on Sunday?")
             for k in range(length - 1)]
    return [Message("system", "You are the front desk of a small restaurant. " * 8), *turns]


async def _per_request_ms(run_one: Callable[[], Awaitable[None]], requests: int) -> float:
    for _ in range(5):
        await run_one()
    start = time.process_time()
    for _ in range(requests):
        await run_one()
    return (time.process_time() - start) / requests * 1000


def _typed_openai(llm: Any, history: list[Message]) -> Callable[[], Awaitable[None]]:
    """The SDK's typed create, as the OpenAI adapter called it before (bench/README.md)."""
    from switchboard.providers.openai.adapter import _message

    async def typed() -> None:
        response = await llm._client.chat.completions.create(
            model=llm.model, messages=[_message(m) for m in history], stream=True,
            stream_options={"include_usage": True}, max_tokens=200)
        async with response:
            async for chunk in response:
                for choice in chunk.choices[:1]:
                    _ = choice.delta.content
    return typed


async def measure(vendors: list[str], urls: list[str], requests: int) -> list[dict[str, Any]]:
    rows = []
    print(f"{'vendor':<22} {'messages':>8} {'CPU ms per request':>18}")
    for vendor, url in zip(vendors, urls, strict=True):
        llm = _llm(vendor, url)
        for length in LENGTHS:
            history = _history(length)

            async def adapter(history: list[Message] = history, llm: Any = llm) -> None:
                async for _ in llm.stream(history, []):
                    pass

            ways = {vendor: adapter}
            if vendor == "openai":
                ways["openai (SDK typed create)"] = _typed_openai(llm, history)
            figures: dict[str, list[float]] = {name: [] for name in ways}
            for _ in range(3):  # alternated
                for name, way in ways.items():
                    figures[name].append(await _per_request_ms(way, requests))
            for name, ms in figures.items():
                median = sorted(ms)[1]
                rows.append({"vendor": name, "messages": length, "cpu_ms": round(median, 2)})
                print(f"{name:<22} {length:>8} {median:>18.2f}", flush=True)
        if hasattr(llm, "aclose"):
            await llm.aclose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=60, help="requests per measurement")
    parser.add_argument("--reply-words", type=int, default=30, help="words in each reply")
    parser.add_argument("--vendors", default=",".join(VENDORS),
                        help="comma-separated, of " + ", ".join(VENDORS))
    parser.add_argument("--json", action="store_true", help="print the figures as JSON at the end")
    args = parser.parse_args()
    vendors = [v.strip() for v in args.vendors.split(",") if v.strip()]
    if unknown := set(vendors) - set(VENDORS):
        parser.error(f"unknown vendors: {', '.join(sorted(unknown))}")
    for variable in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "CO_API_KEY", "HF_TOKEN"):
        os.environ.setdefault(variable, "bench-key")  # the fakes take any key
    ports: Any = multiprocessing.Queue()
    reply = " ".join(["word"] * args.reply_words)
    server = multiprocessing.Process(target=_serve, args=(vendors, reply, ports), daemon=True)
    server.start()
    try:
        bound = ports.get(timeout=60)
        rows = asyncio.run(measure(vendors, [f"http://127.0.0.1:{port}" for port in bound], args.requests))
        if args.json:
            print(json.dumps(rows))
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
