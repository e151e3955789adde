"""CPU per streamed chat request in the server's process: the OpenAI adapter (the SDK client's generic
`post`, chunks read as JSON) beside the SDK's typed `chat.completions.create` (the body walked against its
typed parameters, a model built per chunk), on the same client against the OpenAI fake in another
process (so its work is not counted), for conversations of a few lengths.

    python -m bench.openai_request [--requests 200] [--reply-words 30]

Prints the process CPU per request, both ways, and their ratio: what each LLM request costs the event
loop that every call's audio shares.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time

from switchboard.core.messages import Message
from switchboard.providers.openai import OpenAILLMConfig
from switchboard.providers.openai.adapter import OpenAILLM, _message

LENGTHS = (3, 11, 41)  # messages: the system prompt and a first line; five exchanges; twenty


def _serve(port: multiprocessing.Value, reply: str) -> None:  # type: ignore[valid-type]
    from switchboard.server import running
    from tests.fakes.common import Faults
    from tests.fakes.openai_fake import OpenAIScript, make_app

    async def main() -> None:
        async with running(make_app(Faults(), OpenAIScript(reply=reply))) as bound:
            port.value = bound
            await asyncio.Event().wait()

    asyncio.run(main())


def _history(length: int) -> list[Message]:
    turns = [Message("user" if k % 2 == 0 else "assistant", "Could you tell me when you open on Sunday?")
             for k in range(length - 1)]
    return [Message("system", "You are the front desk of a small restaurant. " * 8), *turns]


async def _per_request_ms(run_one, requests: int) -> float:
    for _ in range(5):
        await run_one()
    start = time.process_time()
    for _ in range(requests):
        await run_one()
    return (time.process_time() - start) / requests * 1000


async def measure(url: str, requests: int) -> None:
    llm = OpenAILLM(OpenAILLMConfig(provider="openai", model="gpt-4o-mini", base_url=url))
    client = llm._client
    print(f"{'messages':>8} {'adapter ms':>10} {'typed create ms':>15} {'ratio':>6}")
    for length in LENGTHS:
        history = _history(length)

        async def adapter(history: list[Message] = history) -> None:
            async for _ in llm.stream(history, []):
                pass

        async def typed(history: list[Message] = history) -> None:
            response = await client.chat.completions.create(
                model=llm.model, messages=[_message(m) for m in history], stream=True,  # type: ignore[misc]
                stream_options={"include_usage": True}, max_tokens=200)
            async with response:
                async for chunk in response:
                    for choice in chunk.choices[:1]:
                        _ = choice.delta.content

        ours, theirs = [], []
        for _ in range(3):  # alternated
            ours.append(await _per_request_ms(adapter, requests))
            theirs.append(await _per_request_ms(typed, requests))
        a, t = sorted(ours)[1], sorted(theirs)[1]
        print(f"{length:>8} {a:>10.2f} {t:>15.2f} {a / t:>6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100, help="requests per measurement")
    parser.add_argument("--reply-words", type=int, default=30, help="words in each reply (one chunk each)")
    args = parser.parse_args()
    port = multiprocessing.Value("i", 0)
    reply = " ".join(["word"] * args.reply_words)
    server = multiprocessing.Process(target=_serve, args=(port, reply), daemon=True)
    server.start()
    try:
        while not port.value:
            time.sleep(0.05)
        asyncio.run(measure(f"http://127.0.0.1:{port.value}/v1", args.requests))
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
