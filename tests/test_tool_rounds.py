"""A tool round through each LLM vendor's adapter and its fake: the tool is offered in the vendor's format,
the vendor's tool call runs the HTTP tool, and the next request carries the result in the vendor's format
(asserted on the recorded request body); the vendor then answers in words."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from switchboard.config import parse_config
from switchboard.core.messages import Message, TextDelta
from switchboard.core.metrics import TurnMetrics
from switchboard.core.tools import END_CALL_TOOL
from switchboard.pipeline.tools import ToolBox, rounds
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
from switchboard.server import running
from tests.fakes import anthropic_fake, cohere_fake, gemini_fake, huggingface_fake, openai_fake
from tests.fakes.common import Faults
from tests.fakes.tool_server import ToolServer

ARGUMENTS = {"party_size": 2, "time": "20:00"}
ANSWER = "Booked for two at eight."
BOOKING = {"id": "B-1", "party_size": 2, "time": "20:00"}


@pytest.fixture(autouse=True)
def keys(monkeypatch):
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "CO_API_KEY", "HF_TOKEN"):
        monkeypatch.setenv(name, "test-key-0123")


def toolbox(url: str) -> ToolBox:
    config = parse_config(f"""
pipelines:
  default:
    stt: {{provider: pocketsphinx}}
    llm: {{provider: scripted}}
    tts: {{provider: espeak}}
    tools:
      - name: book_table
        description: Book a table.
        parameters:
          type: object
          properties: {{party_size: {{type: integer}}, time: {{type: string}}}}
          required: [party_size, time]
        http: {{url: "{url}/bookings", body: {{party_size: "{{party_size}}", time: "{{time}}"}},
                result_field: booking}}
""")
    pipeline = config.pipelines["default"]
    return ToolBox(pipeline.tools, pipeline.tool_use)


@dataclass
class Vendor:
    name: str
    serve: Callable[[Faults], Any]  # the fake app, answering a tool call then, after the result, words
    make: Callable[[str], Any]  # base URL -> the adapter
    offered: Callable[[dict], list[str]]  # request body -> the tool names offered
    result: Callable[[dict], tuple[str, Any]]  # the second request body -> (call id sent, result sent)


def _openai_app(faults: Faults) -> Any:
    script = openai_fake.OpenAIScript(tool_calls=[("book_table", ARGUMENTS)], reply="",
                                      after_tool_result=ANSWER)
    return openai_fake.make_app(faults, script)


def _openai_style_result(body: dict) -> tuple[str, Any]:
    call, result = body["messages"][-2:]
    assert call["role"] == "assistant"
    (sent,) = call["tool_calls"]
    assert sent["type"] == "function" and sent["function"]["name"] == "book_table"
    assert json.loads(sent["function"]["arguments"]) == ARGUMENTS
    assert result["role"] == "tool" and result["tool_call_id"] == sent["id"]
    return result["tool_call_id"], json.loads(result["content"])


def _anthropic_result(body: dict) -> tuple[str, Any]:
    call, result = body["messages"][-2:]
    (use,) = [block for block in call["content"] if block["type"] == "tool_use"]
    assert call["role"] == "assistant" and use["name"] == "book_table" and use["input"] == ARGUMENTS
    (block,) = result["content"]
    assert result["role"] == "user" and block["type"] == "tool_result" and block["tool_use_id"] == use["id"]
    return block["tool_use_id"], json.loads(block["content"])


def _gemini_result(body: dict) -> tuple[str, Any]:
    call, result = body["contents"][-2:]
    assert call["role"] == "model"
    (called,) = [part["functionCall"] for part in call["parts"] if "functionCall" in part]
    assert called["name"] == "book_table" and called["args"] == ARGUMENTS
    (part,) = result["parts"]
    response = part["functionResponse"]
    assert result["role"] == "user" and response["name"] == "book_table"
    return response.get("id", ""), response["response"]


def _cohere_result(body: dict) -> tuple[str, Any]:
    call, result = body["messages"][-2:]
    (sent,) = call["tool_calls"]
    assert call["role"] == "assistant" and sent["function"]["name"] == "book_table"
    assert json.loads(sent["function"]["arguments"]) == ARGUMENTS
    (text,) = result["content"]
    assert result["role"] == "tool" and result["tool_call_id"] == sent["id"] and text["type"] == "text"
    return result["tool_call_id"], json.loads(text["text"])


VENDORS = [
    Vendor("openai", _openai_app,
           lambda url: OpenAILLM(OpenAILLMConfig(provider="openai", model="gpt-4o-mini",
                                                 base_url=f"{url}/v1")),
           lambda body: [tool["function"]["name"] for tool in body["tools"]], _openai_style_result),
    Vendor("anthropic",
           lambda faults: anthropic_fake.anthropic_app(faults, reply="", after_tool_result=ANSWER,
                                                       tool_call={"name": "book_table", "input": ARGUMENTS}),
           lambda url: AnthropicLLM(AnthropicLLMConfig(provider="anthropic", base_url=url)),
           lambda body: [tool["name"] for tool in body["tools"]], _anthropic_result),
    Vendor("gemini",
           lambda faults: gemini_fake.create_app(faults, reply="", after_tool_result=ANSWER,
                                                 function_call={"name": "book_table", "args": ARGUMENTS}),
           lambda url: GeminiLLM(GeminiLLMConfig(provider="gemini", base_url=url)),
           lambda body: [d["name"] for d in body["tools"][0]["functionDeclarations"]], _gemini_result),
    Vendor("cohere",
           lambda faults: cohere_fake.cohere_app(faults, after_tool_result=ANSWER,
                                                 tool_call={"name": "book_table", "arguments": ARGUMENTS}),
           lambda url: CohereLLM(CohereLLMConfig(provider="cohere", base_url=url)),
           lambda body: [tool["function"]["name"] for tool in body["tools"]], _cohere_result),
    Vendor("huggingface",
           lambda faults: huggingface_fake.create_app(
               faults, reply="", after_tool_result=ANSWER,
               tool_call={"name": "book_table", "arguments": ARGUMENTS}),
           lambda url: HuggingFaceLLM(HuggingFaceLLMConfig(provider="huggingface", base_url=f"{url}/v1")),
           lambda body: [tool["function"]["name"] for tool in body["tools"]], _openai_style_result),
]


@contextlib.asynccontextmanager
async def served(vendor: Vendor, faults: Faults) -> AsyncIterator[tuple[Any, ToolServer]]:
    tools = ToolServer()
    async with running(tools.app()) as tool_port, running(vendor.serve(faults)) as port:
        tools.url = f"http://127.0.0.1:{tool_port}"  # type: ignore[attr-defined]
        llm = vendor.make(f"http://127.0.0.1:{port}")
        try:
            yield llm, tools
        finally:
            if hasattr(llm, "aclose"):
                await llm.aclose()


@pytest.mark.parametrize("vendor", VENDORS, ids=[v.name for v in VENDORS])
async def test_a_tool_round_trip_in_the_vendors_format(vendor: Vendor) -> None:
    faults = Faults()
    async with served(vendor, faults) as (llm, tools):
        metrics, exchanges = TurnMetrics("call", 1), []

        async def committed() -> None:
            return None

        events = [event async for _, event in rounds(
            [llm], [Message("system", "You book tables."), Message("user", "A table for two at eight.")],
            [END_CALL_TOOL], toolbox(tools.url), metrics, exchanges, committed)]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)).strip() == ANSWER
    (booking,) = tools.requests
    assert booking["body"] == ARGUMENTS
    first, second = faults.requests
    assert vendor.offered(first) == ["end_call", "book_table"]
    call_id, result = vendor.result(second)
    assert result == BOOKING
    assert exchanges[1].tool_call_id == exchanges[0].tool_calls[0].id
    assert metrics.tools_used == ["book_table:ok"]
    if vendor.name != "gemini":  # Gemini sent no id: the one made up is never sent back
        assert call_id == exchanges[0].tool_calls[0].id
