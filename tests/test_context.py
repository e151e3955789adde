"""Per-call context: the context webhook's answer fills the greeting and system prompt; a timeout, an error
or garbage leaves the defaults, and the failure is recorded."""

from __future__ import annotations

import asyncio

import pytest

from switchboard.caller import CallerLine, run_call
from switchboard.config import ConfigError, parse_config
from switchboard.core.messages import Message
from switchboard.pipeline.call import Providers
from switchboard.server import create_app, running
from switchboard.store import CallStore
from tests import calls
from tests.fakes.instant import InstantLLM, InstantSTT, InstantTTS
from tests.fakes.tool_server import ToolServer

pytestmark = pytest.mark.timescale()  # in-process calls on instant/fake providers: tests/timescale.py

SECRET = "ctx-secret-4242"
CONFIG = """
pipelines:
  default:
    greeting: "Hello {{caller_name}}, welcome back to Luigi's."
    system_prompt: "You take orders. The caller's open order: {{open_order}}."
    stt: {{provider: pocketsphinx}}
    llm: {{provider: scripted}}
    tts: {{provider: espeak}}
    context_webhook:
      url: "{url}/context"
      headers: {{X-Api-Key: "${{CONTEXT_KEY}}"}}
      timeout_s: 0.5
      defaults: {{caller_name: "there", open_order: "none"}}
"""


@pytest.fixture(autouse=True)
def context_key(monkeypatch):
    monkeypatch.setenv("CONTEXT_KEY", SECRET)


@pytest.fixture
async def webhook():
    fake = ToolServer(answer={"caller_name": "Maria", "open_order": "two margheritas", "vip": True,
                              "nested": {"ignored": 1}})
    async with running(fake.app()) as port:
        fake.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
        yield fake


async def call(webhook: ToolServer, wav: str, tmp_path):
    """One call; what was spoken, what the LLM was asked, and the call as the store holds it."""
    config = parse_config(CONFIG.format(url=webhook.url))
    llm, tts = InstantLLM("Sure."), InstantTTS(ms_per_char=10)
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    app = create_app(config, providers={"default": Providers(InstantSTT("my order"), llm, tts)},
                     insecure_dev=True, store_url=url)
    async with running(app) as port:
        result = await run_call(f"ws://127.0.0.1:{port}/media-stream", [CallerLine(wav=wav)],
                                hangup_timeout_s=1, on_event=lambda e: None)
        await asyncio.wait_for(app.state.host.wait_idle(), 5)
    store = CallStore(url)
    await store.open()
    try:
        stored = await store.get_call(result.call_sid)
    finally:
        await store.close()
    assert stored is not None
    return tts, llm, stored


async def test_the_answer_fills_the_greeting_and_the_system_prompt(webhook, speech_wav, tmp_path, caplog):
    with caplog.at_level("DEBUG"):
        tts, llm, stored = await call(webhook, speech_wav, tmp_path)
    assert SECRET not in caplog.text
    assert tts.spoken[0] == "Hello Maria, welcome back to Luigi's."
    system: Message = llm.requests[0][0]
    assert system.content == "You take orders. The caller's open order: two margheritas."
    (request,) = webhook.requests
    assert request["method"] == "POST" and request["path"] == "/context"
    assert request["headers"]["x-api-key"] == SECRET
    body = request["body"]
    assert set(body) == {"call_id", "from", "to", "pipeline", "carrier"}
    assert body["pipeline"] == "default" and body["carrier"] == "twilio" and body["call_id"].startswith("CA")
    assert "context_error" not in stored["summary"] and stored["turns"][0]["failures"] == []


@pytest.mark.parametrize(("mode", "error"), [
    ("slow", "timed out after 0.5 s"),
    ("fail", "HTTP 500"),
    ("garbage", "the answer is JSON list, not an object"),
    ("malformed", "the answer is not JSON"),
])
async def test_a_failing_webhook_leaves_the_defaults_and_is_recorded(webhook, speech_wav, tmp_path, mode,
                                                                    error):
    if mode == "slow":
        webhook.delay_s = 3
    else:
        webhook.mode = mode
    tts, llm, stored = await call(webhook, speech_wav, tmp_path)
    assert tts.spoken[0] == "Hello there, welcome back to Luigi's."
    assert llm.requests[0][0].content == "You take orders. The caller's open order: none."
    assert stored["summary"]["context_error"] == error
    assert stored["turns"][0]["failures"] == [f"context_webhook: {error}"]


def test_every_placeholder_needs_a_default() -> None:
    text = CONFIG.format(url="http://127.0.0.1:9").replace('open_order: "none"', "")
    with pytest.raises(ConfigError) as caught:
        parse_config(text.replace("caller_name: \"there\", ", "caller_name: \"there\""))
    assert caught.value.problems == [
        "pipelines.default: context_webhook.defaults: system_prompt uses {open_order} with no default; add "
        "them, e.g. defaults: {open_order: ...} (said when the webhook fails or leaves them out)"]


async def test_without_a_webhook_braces_are_left_alone(speech_wav) -> None:
    config = parse_config(CONFIG.format(url="http://x").split("    context_webhook:")[0])
    tts = InstantTTS(ms_per_char=10)
    await calls.place_call(config, [], Providers(InstantSTT(""), InstantLLM(), tts), hangup_timeout_s=0.5)
    assert tts.spoken[0] == "Hello {caller_name}, welcome back to Luigi's."


async def test_an_unexpected_failure_of_the_webhook_leaves_the_defaults(monkeypatch) -> None:
    from switchboard.pipeline import context as context_module

    async def broken(webhook, info):  # not an HTTP error: e.g. httpx.InvalidURL, a bug in a transport
        raise RuntimeError("something nobody expected")

    monkeypatch.setattr(context_module, "_ask", broken)
    context = context_module.CallContext(parse_config(CONFIG.format(url="http://127.0.0.1:9")).pipelines["default"])
    context.start({"call_id": "CA1"})
    await context.ready()  # does not raise: the call goes on
    assert context.greeting == "Hello there, welcome back to Luigi's."
    assert context.error == "RuntimeError: something nobody expected"
