"""Fixed lines from memory (pipeline/lines.py): a greeting that is the same on every call is synthesised
once and played from memory after that; one a context webhook personalises goes to the TTS on every call;
a TTS that stalls doesn't hold up the greetings of later calls. On the OpenAI adapter and its fake, which
counts the speech requests it gets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import numpy as np
import pytest

from switchboard.caller import run_call
from switchboard.config import parse_config
from switchboard.core.errors import ProviderError
from switchboard.core.metrics import TurnMetrics
from switchboard.pipeline.lines import LineCache
from switchboard.server import create_app, running
from tests.fakes.common import Faults
from tests.fakes.instant import InstantTTS
from tests.fakes.openai_fake import OpenAIScript, make_app
from tests.fakes.tool_server import ToolServer

pytestmark = pytest.mark.timescale()  # in-process calls on instant/fake providers: tests/timescale.py

GREETING = "Thanks for calling Luigi's."
CONFIG = """
pipelines:
  default:
    greeting: "{greeting}"
    stt: {{provider: openai, base_url: "{url}"}}
    llm: {{provider: openai, base_url: "{url}"}}
    tts: {{provider: openai, base_url: "{tts_url}", timeouts: {{first_token_s: 1}}}}
"""
WEBHOOK = """
    context_webhook:
      url: "{hook}/context"
      timeout_s: 2
      defaults: {{caller_name: "there"}}
"""


@pytest.fixture(autouse=True)
def openai_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


@contextlib.asynccontextmanager
async def server(tts_faults: Faults, greeting: str = GREETING, hook: str | None = None
                 ) -> AsyncIterator[tuple[str, list[TurnMetrics]]]:
    """A Switchboard on the OpenAI fakes (the TTS's with `tts_faults`): its stream URL and its turns."""
    async with running(make_app(Faults(), OpenAIScript())) as port, \
            running(make_app(tts_faults, OpenAIScript(ms_per_char=10))) as tts_port:
        text = CONFIG.format(greeting=greeting, url=f"http://127.0.0.1:{port}/v1",
                             tts_url=f"http://127.0.0.1:{tts_port}/v1")
        turns: list[TurnMetrics] = []
        app = create_app(parse_config(text + (WEBHOOK.format(hook=hook) if hook else "")),
                         on_turn=turns.append)
        async with running(app) as app_port:
            yield f"ws://127.0.0.1:{app_port}/media-stream", turns
            await asyncio.wait_for(app.state.host.wait_idle(), 5)


async def greeted(url: str, turns: list[TurnMetrics]) -> TurnMetrics:
    """Place a call that only listens to the greeting; its greeting turn."""
    result = await run_call(url, [], hangup_timeout_s=1.5, on_event=lambda event: None)
    for _ in range(100):
        found = [t for t in turns if t.call_id == result.call_sid and t.kind == "greeting"]
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no greeting turn recorded for {result.call_sid}")


async def test_the_second_calls_greeting_comes_from_memory():
    tts = Faults()
    async with server(tts) as (url, turns):
        first = await greeted(url, turns)
        second = await greeted(url, turns)
    assert [r["input"] for r in tts.requests] == [GREETING]  # one speech request for both calls
    assert first.reply_heard == second.reply_heard == GREETING
    assert second.vendors["tts"] == "openai/gpt-4o-mini-tts" and not second.failures
    assert first.tts_chars == len(GREETING) and second.tts_chars == 0  # only the request is paid for
    assert first.bot_audio_ms == second.bot_audio_ms > 0  # the same audio, all of it


async def test_a_personalised_greeting_goes_to_the_tts_on_every_call():
    hook = ToolServer(answer={"caller_name": "Maria"})
    tts = Faults()
    async with running(hook.app()) as port, \
            server(tts, "Hello {caller_name}, welcome back.", f"http://127.0.0.1:{port}") as (url, turns):
        await greeted(url, turns)
        await greeted(url, turns)
    assert [r["input"] for r in tts.requests] == ["Hello Maria, welcome back."] * 2


async def test_a_tts_stalling_after_the_first_call_does_not_touch_later_greetings():
    tts = Faults()
    async with server(tts) as (url, turns):
        await greeted(url, turns)
        tts.first_byte_delay_s = 30  # from now on every speech request stalls past its 1 s deadline
        later = [await greeted(url, turns) for _ in range(2)]
    assert len(tts.requests) == 1
    assert [turn.reply_heard for turn in later] == [GREETING, GREETING]
    assert all(not turn.failures and turn.vendors["tts"] == "openai/gpt-4o-mini-tts" for turn in later)


async def test_a_greeting_that_stalled_on_the_first_call_is_kept_once_it_comes():
    tts = Faults(stall_first=1, stall_s=3)  # the first speech request stalls past its 1 s deadline
    async with server(tts) as (url, turns):
        first = await greeted(url, turns)
        second = await greeted(url, turns)
    assert first.reply_heard == GREETING  # the retry answered
    assert [f.split(":")[0] for f in first.failures] == ["tts openai/gpt-4o-mini-tts attempt 1"]
    assert second.reply_heard == GREETING and not second.failures
    assert len(tts.requests) == 2  # the stalled one and its retry; the second call asked nothing


class FailingTTS(InstantTTS):
    fail = False

    async def stream(self, text: str) -> AsyncIterator[np.ndarray]:
        if self.fail:
            raise ProviderError("instant", "server", "injected TTS failure", retryable=True)
        async for pcm in super().stream(text):
            yield pcm


async def test_calls_at_once_share_one_request_and_a_fallback_voice_is_not_kept():
    primary, backup = FailingTTS(), InstantTTS()
    lines = LineCache()
    metrics = [TurnMetrics(call_id=str(n), index=0) for n in range(3)]
    heard = await asyncio.gather(*(lines.whole([primary, backup], "Hi there.", m) for m in metrics))
    assert primary.spoken == ["Hi there."] and all(len(audio) == len(heard[0]) > 0 for audio in heard)
    assert [m.tts_chars for m in metrics] == [9, 0, 0]  # the first call's request served all three

    primary.fail = True  # the primary fails: the backup says the line, which is not kept
    for _ in range(2):
        await lines.whole([primary, backup], "Goodbye.", TurnMetrics(call_id="x", index=0))
    assert backup.spoken == ["Goodbye.", "Goodbye."]
