"""Vendor failures on a live call, through the real registry, the OpenAI adapter and its fake.

The primary LLM's server errors or stalls; the call falls back to the next configured LLM before the
caller hears anything, records what failed, and when every vendor fails the caller hears the apology.
"""

import asyncio

import pytest

from switchboard.caller import CallerLine, run_call
from switchboard.config import parse_config
from switchboard.core.metrics import TurnMetrics
from switchboard.server import create_app, running
from tests.fakes.common import Faults
from tests.fakes.openai_fake import OpenAIScript, make_app

pytestmark = pytest.mark.timescale()  # in-process calls on instant/fake providers: tests/timescale.py

CONFIG = """
pipelines:
  default:
    greeting: "Hi."
    apology: "Sorry, trouble."
    stt: {{provider: openai, base_url: "{good}"}}
    llm:
      provider: openai
      model: primary-model
      base_url: "{bad}"
      timeouts: {{first_token_s: 0.5}}
    tts: {{provider: openai, base_url: "{good}"}}
    fallback:
      llm:
        - {{provider: openai, model: backup-model, base_url: "{backup}"}}
"""


@pytest.fixture(autouse=True)
def openai_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


async def call_with(bad: Faults, backup: Faults, line: str) -> tuple[list[TurnMetrics], OpenAIScript]:
    good_script, backup_script = OpenAIScript(), OpenAIScript(reply="Backup here.")
    async with (
        running(make_app(Faults(), good_script)) as good_port,
        running(make_app(bad, OpenAIScript(reply="Primary here."))) as bad_port,
        running(make_app(backup, backup_script)) as backup_port,
    ):
        urls = {
            name: f"http://127.0.0.1:{port}/v1"
            for name, port in (("good", good_port), ("bad", bad_port), ("backup", backup_port))
        }
        turns: list[TurnMetrics] = []
        app = create_app(parse_config(CONFIG.format(**urls)), on_turn=turns.append)
        async with running(app) as port:
            await run_call(
                f"ws://127.0.0.1:{port}/media-stream",
                [CallerLine(wav=line)],
                hangup_timeout_s=2,
                on_event=lambda event: None,
            )
            await asyncio.wait_for(app.state.host.wait_idle(), 5)
    return turns, backup_script


async def test_server_errors_fall_back_to_the_next_llm(speech_wav):
    bad = Faults(status=500)
    turns, _ = await call_with(bad, Faults(), speech_wav)
    reply = turns[1]
    assert reply.reply_heard == "Backup here." and reply.error is None
    assert reply.vendors["llm"] == "openai/backup-model"
    assert len(bad.requests) == 2  # a retryable error before the first token is retried once
    assert [f.split(":")[0] for f in reply.failures] == [
        "llm openai/primary-model attempt 1",
        "llm openai/primary-model attempt 2",
    ]


async def test_a_stalled_first_token_times_out_and_falls_back(speech_wav):
    stalled = Faults(first_byte_delay_s=3)
    turns, _ = await call_with(stalled, Faults(), speech_wav)
    reply = turns[1]
    assert reply.reply_heard == "Backup here."
    assert ["no first result within 0.5 s" in failure for failure in reply.failures] == [True, True]


async def test_when_every_llm_fails_the_caller_hears_the_apology_and_it_is_recorded(speech_wav):
    turns, _ = await call_with(Faults(status=500), Faults(status=429), speech_wav)
    reply = turns[1]
    assert reply.reply_heard == "Sorry, trouble."
    assert "rate_limit" in reply.error
    assert len(reply.failures) == 4  # two attempts on each LLM
