"""Every log line written for a call names it: a vendor's own warning inside a turn gets `[call <id>]`
(and a `call_id` attribute); our lines that already name the call are left as they are."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from switchboard.caller import CallerLine
from switchboard.config import parse_config
from switchboard.core.context import CallIdFilter
from switchboard.core.messages import LLMEvent, Message, Tool
from switchboard.pipeline.call import Providers
from tests import calls
from tests.fakes.instant import InstantLLM, InstantSTT, InstantTTS

CONFIG = """
pipelines:
  default:
    greeting: "Hi."
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
"""


class ChattyLLM(InstantLLM):
    """Logs like an SDK does, knowing nothing of calls."""

    async def stream(self, messages: list[Message], tools: list[Tool]) -> AsyncIterator[LLMEvent]:
        logging.getLogger("some.vendor.sdk").warning("retrying request after 429")
        async for event in super().stream(messages, tools):
            yield event


async def test_log_lines_of_a_call_name_it(speech_wav: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.handler.addFilter(CallIdFilter())
    caplog.set_level(logging.INFO)
    providers = Providers(InstantSTT("hello"), ChattyLLM("Hi."), InstantTTS(ms_per_char=10))
    result, _ = await calls.place_call(parse_config(CONFIG), [CallerLine(wav=speech_wav)], providers,
                                       hangup_timeout_s=1, on_event=lambda event: None)
    vendor = [r for r in caplog.records if r.name == "some.vendor.sdk"]
    assert [r.getMessage() for r in vendor] == [f"retrying request after 429 [call {result.call_sid}]"]
    assert vendor[0].call_id == result.call_sid
    started = [r.getMessage() for r in caplog.records if "started on pipeline" in r.getMessage()]
    assert started and started[0].startswith(f"call {result.call_sid}: stream") and "[call" not in started[0]
    outside = logging.LogRecord("x", logging.INFO, __file__, 1, "not in a call", None, None)
    assert CallIdFilter().filter(outside) and outside.getMessage() == "not in a call"
