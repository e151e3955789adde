"""Shadow LLMs: asked every user turn in the background, measured and stored, never heard; a shadow that
hangs or fails changes nothing about the live turn."""

import asyncio
import io
from collections.abc import AsyncIterator

import pytest

from switchboard.caller import CallerLine, run_call
from switchboard.config import parse_config, plain_config
from switchboard.core.errors import ProviderError
from switchboard.core.messages import LLMEvent, Message, TextDelta, Tool
from switchboard.core.metrics import ShadowResult
from switchboard.core.settings import Timeouts
from switchboard.core.tools import END_CALL_TOOL
from switchboard.pipeline.call import Providers
from switchboard.pipeline.shadow import CallShadows, ShadowLLM, ShadowRunner, ask
from switchboard.pipeline.variants import PipelineProviders
from switchboard.providers import registry
from switchboard.report import main_report
from switchboard.server import create_app, running
from switchboard.store import CallStore
from tests.fakes.common import Faults
from tests.fakes.instant import InstantLLM, InstantSTT, InstantTTS
from tests.fakes.openai_fake import OpenAIScript, make_app

pytestmark = pytest.mark.timescale()  # in-process calls on instant/fake providers: tests/timescale.py

CONFIG = """
pipelines:
  default:
    greeting: "Hi there."
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
"""

MESSAGES = [Message("system", "Be brief."), Message("user", "hello")]


class HangingLLM:
    """Never answers; counts the requests it got."""

    vendor, model = "hang", "forever"
    timeouts = None

    def __init__(self, words_first: int = 0) -> None:
        self.words_first = words_first
        self.requests: list[list[Message]] = []
        self.release = asyncio.Event()  # set: finish normally

    async def stream(self, messages: list[Message], tools: list[Tool]) -> AsyncIterator[LLMEvent]:
        self.requests.append(list(messages))
        for n in range(self.words_first):
            yield TextDelta(f"word{n} ")
        await self.release.wait()
        yield TextDelta("released")


class FailingLLM:
    vendor, model = "boom", "x"
    timeouts = None

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def stream(self, messages: list[Message], tools: list[Tool]) -> AsyncIterator[LLMEvent]:
        raise self.error
        yield TextDelta("unreachable")


def shadow(name: str, llm, first_token_s: float = 5.0, total_s: float = 30.0) -> ShadowLLM:
    return ShadowLLM(name, llm, Timeouts(first_token_s=first_token_s, total_s=total_s))


# --- one shadow request ------------------------------------------------------------------------------------


async def test_an_answer_is_measured_with_its_text_and_tokens():
    result = await ask(shadow("echo", InstantLLM("Fine, thanks.")), MESSAGES, [END_CALL_TOOL], "CA1", 3)
    assert (result.call_id, result.turn_index, result.name) == ("CA1", 3, "echo")
    assert result.vendor == "instant/echo"
    assert result.text == "Fine, thanks." and result.error is None
    assert (result.tokens_in, result.tokens_out) == (3, 2)
    assert 0 <= result.ttft_ms <= result.total_ms


async def test_the_end_call_tool_records_its_farewell_as_the_text():
    result = await ask(shadow("echo", InstantLLM()), [Message("user", "goodbye")], [END_CALL_TOOL], "CA1", 1)
    assert result.text == "Goodbye!" and result.ttft_ms is not None


async def test_a_shadow_with_no_first_token_times_out_on_its_own_limit():
    result = await ask(shadow("hang", HangingLLM(), first_token_s=0.05), MESSAGES, [], "CA1", 1)
    assert result.error == "hang: timeout: no first token within 0.05 s"
    assert (result.ttft_ms, result.total_ms, result.text) == (None, None, "")


async def test_a_shadow_that_stalls_mid_answer_keeps_what_it_said():
    result = await ask(shadow("hang", HangingLLM(words_first=2), total_s=0.1), MESSAGES, [], "CA1", 1)
    assert result.error == "hang: timeout: not done within 0.1 s"
    assert result.text == "word0 word1 " and result.ttft_ms is not None and result.total_ms is None


@pytest.mark.parametrize(("error", "recorded"), [
    (ProviderError("boom", "rate_limit", "429 slow down", retryable=True), "boom: rate_limit: 429 slow down"),
    (RuntimeError("adapter bug"), "boom: internal: RuntimeError: adapter bug"),
])
async def test_errors_are_recorded_not_raised(error, recorded):
    result = await ask(shadow("boom", FailingLLM(error)), MESSAGES, [], "CA1", 1)
    assert result.error == recorded and result.ttft_ms is None


# --- the runner's limit ------------------------------------------------------------------------------------


async def test_past_the_limit_shadow_requests_are_dropped_and_counted(caplog):
    results: list[ShadowResult] = []
    runner = ShadowRunner(max_concurrent=2, on_result=results.append)
    hang = HangingLLM()
    call = CallShadows(runner, [shadow("a", hang), shadow("b", hang), shadow("c", hang)], "CA1")
    call.start(1, MESSAGES, [])
    await asyncio.sleep(0)
    assert (runner.in_flight, runner.started, runner.dropped) == (2, 2, 1)
    assert call.summary() == {"started": 2, "dropped": 1}
    assert any("shadow c dropped" in r.getMessage() and "shadow_max_concurrent" in r.getMessage()
               for r in caplog.records)

    hang.release.set()  # the two in flight finish: room again
    await asyncio.wait_for(runner.drained(), 5)
    assert sorted((r.name, r.text) for r in results) == [("a", "released"), ("b", "released")]
    call.start(2, MESSAGES, [])
    assert call.summary() == {"started": 4, "dropped": 2} and runner.dropped == 2
    await runner.aclose()


async def test_shutdown_cancels_what_is_in_flight_without_recording_it():
    results: list[ShadowResult] = []
    runner = ShadowRunner(on_result=results.append)
    runner.start(shadow("hang", HangingLLM()), MESSAGES, [], "CA1", 1)
    await asyncio.sleep(0)
    await runner.aclose()
    assert runner.in_flight == 0 and results == []


# --- on a live call ---------------------------------------------------------------------------------------


async def test_shadows_never_touch_the_live_turn_and_their_results_are_stored(
        tmp_path, speech_wav, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fake")
    script = OpenAIScript(reply="Shadow says hi.")
    db = str(tmp_path / "calls.db")
    lines = [CallerLine(wav=speech_wav)]

    def live() -> Providers:
        return Providers(InstantSTT("hello"), InstantLLM("Hello there, I am live."),
                         InstantTTS(ms_per_char=20))

    faults = Faults()
    async with running(make_app(faults, script)) as fake_port:
        [cfg] = parse_config(CONFIG.replace("    tts: {provider: espeak}\n", f"""\
    tts: {{provider: espeak}}
    shadow:
      - {{name: fake-gpt, provider: openai, model: gpt-4o-mini, base_url: "http://127.0.0.1:{fake_port}/v1"}}
""")).pipeline().shadow
        hang = HangingLLM()
        with_shadows = PipelineProviders.of(live())
        with_shadows.shadows = [
            shadow("fake-gpt", registry.build("llm", plain_config(cfg), shared=False)),
            shadow("hang", hang, first_token_s=3),
            shadow("boom", FailingLLM(ProviderError("boom", "server", "injected shadow failure"))),
        ]
        results: list[ShadowResult] = []
        turns, pending_at_turn_end = [], []

        def on_turn(metrics):
            turns.append(metrics)
            if metrics.kind == "reply":  # the live turn is over: where is the hanging shadow?
                pending_at_turn_end.append((len(hang.requests), {r.name for r in results
                                                                 if r.turn_index == metrics.index}))

        app = create_app(parse_config(CONFIG), on_turn=on_turn, providers={"default": with_shadows},
                         store_url=db, on_shadow=results.append)
        baseline_turns = []
        baseline = create_app(parse_config(CONFIG), on_turn=baseline_turns.append,
                              providers={"default": live()})
        async with running(app) as port, running(baseline) as baseline_port:
            call, _ = await asyncio.gather(*(
                run_call(f"ws://127.0.0.1:{p}/media-stream", lines, hangup_timeout_s=1.5,
                         on_event=lambda event: None) for p in (port, baseline_port)))
            await asyncio.wait_for(app.state.shadows.drained(), 10)  # "hang" ends on its first_token_s

    # The live turns: the same replies as a call without shadows, each done while "hang" was still asking.
    replies = [t for t in turns if t.kind == "reply"]
    assert [t.reply_heard for t in replies] == [t.reply_heard for t in baseline_turns if t.kind == "reply"]
    assert [t.reply_heard for t in replies] == ["Hello there, I am live."]
    assert all(t.error is None and t.failures == [] and t.voice_to_voice_ms > 0 for t in replies)
    [(hang_asked, answered)] = pending_at_turn_end
    assert hang_asked == 1 and "hang" not in answered  # asked before the live turn ended, not answered
    # Every shadow got the live LLM's request: the same system prompt and history.
    assert hang.requests == with_shadows.llm[0].provider.requests
    assert [[m["content"] for m in request["messages"]] for request in faults.requests] == [
        [m.content for m in request] for request in hang.requests]

    store = CallStore(db)
    await store.open()
    try:
        rows = await store.query_shadows()
        [call_row] = await store.query_calls()
    finally:
        await store.close()
    assert call_row["summary"]["shadows"] == {"started": 3, "dropped": 0}
    by_name = {(row["name"], row["turn_index"]): row for row in rows}
    assert sorted(by_name) == [(name, t.index) for name in ("boom", "fake-gpt", "hang") for t in replies]
    for turn in replies:
        gpt = by_name["fake-gpt", turn.index]
        assert (gpt["call_id"], gpt["vendor"], gpt["text"], gpt["error"]) == (
            call.call_sid, "openai/gpt-4o-mini", "Shadow says hi.", None)
        assert 0 < gpt["ttft_ms"] <= gpt["total_ms"] and gpt["tokens_in"] > 0 and gpt["tokens_out"] == 3
        assert by_name["hang", turn.index]["error"] == "hang: timeout: no first token within 3 s"
        assert by_name["boom", turn.index]["error"] == "boom: server: injected shadow failure"

    table = io.StringIO()
    assert await asyncio.to_thread(main_report, ["--db", db], None, table) == 0
    shadow_rows = [line for line in table.getvalue().splitlines() if line.startswith("shadow")]
    assert [line.split()[1] for line in shadow_rows] == ["boom/x", "hang/forever", "openai/gpt-4o-mini"]


class ToolCaller:
    """Asks for the given tool calls, then says a word."""

    vendor, model = "tools", "caller"
    timeouts = None

    def __init__(self, *calls) -> None:
        self.calls = calls

    async def stream(self, messages: list[Message], tools: list[Tool]) -> AsyncIterator[LLMEvent]:
        from switchboard.core.messages import ToolCall

        for n, (name, arguments) in enumerate(self.calls):
            yield ToolCall(f"c{n}", name, arguments)
        yield TextDelta("ok")


async def test_a_shadows_tool_calls_are_counted_and_checked_against_the_schemas():
    book = Tool("book_table", "Book.", {"type": "object", "properties": {"party_size": {"type": "integer"}},
                                        "required": ["party_size"]})
    llm = ToolCaller(("book_table", {"party_size": 2}), ("book_table", {"party_size": "two"}),
                     ("cancel", {}), ("end_call", {"farewell": "Bye."}))
    result = await ask(shadow("tools", llm), MESSAGES, [END_CALL_TOOL, book], "CA1", 1)
    assert (result.tool_calls, result.tool_invalid) == (3, 2)  # a bad argument, an unknown tool
    assert result.text == "Bye.ok"


async def test_shadow_tool_figures_are_stored_and_reported(tmp_path):
    from switchboard.report import build_report

    url = f"sqlite:///{tmp_path / 'calls.db'}"
    store = CallStore(url)
    await store.open()
    for n in range(4):
        await store.add_shadow(ShadowResult("CA1", n, "gem", "gemini/flash", ttft_ms=100.0, total_ms=200.0,
                                            tool_calls=1, tool_invalid=1 if n == 0 else 0))
    shadows = await store.query_shadows()
    await store.close()
    assert [(s["tool_calls"], s["tool_invalid"]) for s in shadows] == [(1, 1), (1, 0), (1, 0), (1, 0)]
    (row,) = build_report([], shadows).rows
    assert (row.tool_calls_per_turn, row.tool_invalid_pct, row.tool_error_pct) == (1.0, 25.0, None)
