"""HTTP tools (config/tools.py, pipeline/tools.py): their definitions, one call against a fake tool server,
and whole calls where the scripted LLM books a table through one."""

from __future__ import annotations

import asyncio
import json

import pytest

from switchboard.caller import CallerLine
from switchboard.config import ConfigError, parse_config
from switchboard.config.tools import ToolUseConfig
from switchboard.core.messages import Message, TextDelta, ToolCall, Transcript, Usage
from switchboard.core.metrics import TurnMetrics
from switchboard.core.tools import END_CALL_TOOL
from switchboard.pipeline.call import Providers
from switchboard.pipeline.tools import Filler, Pending, ToolBox, rounds
from switchboard.providers.scripted import ScriptedLLM
from switchboard.server import running
from tests import calls
from tests.fakes.instant import InstantSTT, InstantTTS
from tests.fakes.tool_server import ToolServer

pytestmark = pytest.mark.timescale()  # in-process calls on instant/fake providers: tests/timescale.py

SECRET = "s3cr3t-booking-key-0123"

TOOL = """
      - name: book_table
        description: Book a table at the restaurant.
        parameters:
          type: object
          properties:
            party_size: {{type: integer, minimum: 1, maximum: 20}}
            time: {{type: string}}
          required: [party_size, time]
        http:
          method: POST
          url: "{url}/bookings?source=phone&at={{time}}"
          headers: {{Authorization: "Bearer ${{BOOKING_KEY}}"}}
          body: {{party_size: "{{party_size}}", time: "{{time}}", note: "table for {{party_size}}"}}
          timeout_s: {timeout_s}
          result_field: {result_field}
"""

PIPELINE = """
pipelines:
  default:
    greeting: "Hi."
    apology: "Sorry, trouble."
    stt: {{provider: pocketsphinx}}
    llm:
      provider: scripted
      rules:
        - match: "table for (?P<party>\\\\d+) at (?P<time>\\\\d+)"
          tool: book_table
          arguments: {{party_size: "{{party}}", time: "{{time}}:00"}}
          reply: "Booked, your reference is {{id}}."
          failed: "Sorry, I could not book that. Please call back later."
    tts: {{provider: espeak}}
    tool_use: {{filler: "One moment, let me check.", filler_after_s: {filler_after_s}}}
    tools:
""" + TOOL


def config_text(url: str = "http://127.0.0.1:9", timeout_s: float = 2, result_field: str = "booking",
                filler_after_s: float = 1.0) -> str:
    return PIPELINE.format(url=url, timeout_s=timeout_s, result_field=result_field,
                           filler_after_s=filler_after_s)


@pytest.fixture(autouse=True)
def booking_key(monkeypatch):
    monkeypatch.setenv("BOOKING_KEY", SECRET)


@pytest.fixture
async def server():
    fake = ToolServer()
    async with running(fake.app()) as port:
        fake.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
        yield fake


class Lines(InstantSTT):
    """Hears `texts` in order, one per utterance."""

    def __init__(self, *texts: str) -> None:
        super().__init__()
        self.texts = list(texts)

    async def transcribe(self, pcm) -> Transcript:
        return Transcript(self.texts.pop(0) if self.texts else "")


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    return caught.value.problems


# --- the definition -----------------------------------------------------------------------------------


def test_a_secret_is_read_at_request_time_and_never_held_by_the_config() -> None:
    config = parse_config(config_text())
    (tool,) = config.pipelines["default"].tools
    assert tool.http.headers == {"Authorization": "Bearer ${BOOKING_KEY}"}
    assert SECRET not in config.model_dump_json()


def test_an_unset_variable_in_a_tool_is_a_start_up_error(monkeypatch) -> None:
    monkeypatch.delenv("BOOKING_KEY")
    (line,) = problems(config_text())
    assert line.startswith("pipelines.default.tools[0].http.headers.Authorization: environment variable "
                           "BOOKING_KEY is not set")


def test_an_invalid_schema_a_url_without_scheme_and_a_secret_in_clear_are_named_with_the_fix() -> None:
    text = (config_text().replace("minimum: 1,", "minimum: one,")
            .replace('url: "http://127.0.0.1:9', 'url: "127.0.0.1:9')
            .replace("Bearer ${BOOKING_KEY}", "Bearer sk-live-abcdef0123456789"))
    schema, url, secret = problems(text)
    assert schema.startswith("pipelines.default.tools[0].parameters: not a valid JSON Schema: 'one' is not "
                             "of type 'number' (at properties/party_size/minimum)")
    assert url.startswith("pipelines.default.tools[0].http.url: must start with http:// or https://")
    assert secret.startswith("pipelines.default.tools[0].http.headers: header 'Authorization' holds a "
                             "secret written in clear")
    assert 'Authorization: "Bearer ${MY_API_KEY}"' in secret
    assert "sk-live" not in secret  # the secret itself is not repeated


def test_placeholders_must_be_parameters_and_names_unique_and_not_built_in() -> None:
    (line,) = problems(config_text().replace("note: \"table for {party_size}\"", "note: \"{people}\""))
    assert line == ("pipelines.default.tools[0]: http: {people} is not a parameter of this tool; "
                    "parameters: party_size, time (write {{ for a literal brace)")
    twice = config_text() + TOOL.format(url="http://x", timeout_s=1, result_field="booking")
    assert "'book_table' is used more than once" in problems(twice)[0]
    (builtin,) = problems(config_text().replace("name: book_table", "name: end_call"))
    assert "'end_call' is a built-in tool" in builtin


# --- one call of a tool ---------------------------------------------------------------------------------


def box(url: str, **options) -> ToolBox:
    text = config_text(url=url, **options)
    pipeline = parse_config(text).pipelines["default"]
    return ToolBox(pipeline.tools, pipeline.tool_use)


async def test_the_request_is_built_from_the_arguments_and_the_environment(server) -> None:
    outcome = await box(server.url).run(ToolCall("c1", "book_table", {"party_size": 4, "time": "19:30"}))
    assert outcome.status == "ok"
    booking = {"id": "B-1", "party_size": 4, "time": "19:30", "note": "table for 4"}
    assert json.loads(outcome.content) == booking
    (request,) = server.requests
    assert request["method"] == "POST" and request["path"] == "/bookings"
    assert request["query"] == {"source": "phone", "at": "19:30"}
    assert request["headers"]["authorization"] == f"Bearer {SECRET}"
    assert request["body"] == {"party_size": 4, "time": "19:30", "note": "table for 4"}  # 4 stays a number


async def test_invalid_arguments_and_unknown_tools_are_refused_without_a_request(server) -> None:
    tools = box(server.url)
    invalid = await tools.run(ToolCall("c1", "book_table", {"party_size": 0}))
    assert invalid.status == "invalid"
    assert "party_size: 0 is less than the minimum of 1" in invalid.content
    assert "'time' is a required property" in invalid.content
    unknown = await tools.run(ToolCall("c2", "cancel_booking", {}))
    assert unknown.status == "unknown" and "no tool named 'cancel_booking'" in unknown.content
    assert server.requests == []


@pytest.mark.parametrize(("mode", "status", "says"), [
    ("fail", "error", "answered HTTP 500: {\"error\":\"the kitchen is on fire\"}"),
    ("malformed", "error", "answer is not valid JSON"),
])
async def test_a_failing_or_malformed_answer_is_an_error_for_the_llm(server, mode, status, says) -> None:
    server.mode = mode
    outcome = await box(server.url).run(ToolCall("c1", "book_table", {"party_size": 2, "time": "8"}))
    assert outcome.status == status and outcome.content.startswith("Error: ") and says in outcome.content


async def test_a_slow_tool_times_out_and_its_request_is_closed(server) -> None:
    server.delay_s = 3
    outcome = await box(server.url, timeout_s=0.3).run(ToolCall("c1", "book_table",
                                                                {"party_size": 2, "time": "8"}))
    assert outcome.status == "timeout" and "timed out after 0.3 s" in outcome.content
    for _ in range(100):
        if server.disconnected:
            break
        await asyncio.sleep(0.02)
    assert server.disconnected == 1 and server.answered == 0


@pytest.mark.parametrize("mode", ["huge", "enormous"])  # 2 MB is parsed, 6 MB is not even read whole
async def test_a_huge_answer_is_cut_before_the_llm_sees_it(server, mode) -> None:
    server.mode = mode
    tools = box(server.url, result_field="rows")
    outcome = await tools.run(ToolCall("c1", "book_table", {"party_size": 2, "time": "8"}))
    assert outcome.status == "ok"
    assert len(outcome.content) < ToolUseConfig().max_result_chars + 100
    assert outcome.content.endswith("more characters)")


# --- whole calls -----------------------------------------------------------------------------------------


FAST = {"hangup_timeout_s": 1}


async def book(server: ToolServer, wav: str, **options) -> tuple:
    config = parse_config(config_text(url=server.url, **options))
    pipeline = config.pipelines["default"]
    stt = InstantSTT("A table for 4 at 7.")  # also at every pause: speculative turns wait to book
    tts = InstantTTS(ms_per_char=10)
    providers = Providers(stt, ScriptedLLM(pipeline.llm), tts)
    result, turns = await calls.place_call(config, [CallerLine(wav=wav)], providers, **FAST)
    return result, turns, tts


async def test_a_caller_books_a_table_through_the_http_tool(server, speech_wav) -> None:
    _, turns, tts = await book(server, speech_wav)
    (request,) = server.requests  # once, though turns were speculated at the caller's pauses
    assert request["body"] == {"party_size": 4, "time": "7:00", "note": "table for 4"}
    reply = turns[1]
    assert reply.reply_heard == "Booked, your reference is B-1."
    assert reply.tool_calls == 1 and reply.tool_errors == 0 and reply.tools_used == ["book_table:ok"]
    assert "One moment, let me check." not in tts.spoken  # it answered within the second


async def test_a_slow_tool_gets_the_filler_then_the_answer(server, speech_wav) -> None:
    server.delay_s = 0.6
    _, turns, tts = await book(server, speech_wav, filler_after_s=0.1)
    assert tts.spoken[1:] == ["One moment, let me check.", "Booked, your reference is B-1."]
    assert turns[1].reply_heard == "One moment, let me check. Booked, your reference is B-1."
    assert turns[1].tool_fillers == 1


@pytest.mark.parametrize("mode", ["fail", "malformed"])
async def test_a_failing_tool_still_gets_the_caller_an_answer(server, speech_wav, mode) -> None:
    server.mode = mode
    _, turns, _ = await book(server, speech_wav)
    assert turns[1].reply_heard == "Sorry, I could not book that. Please call back later."
    assert turns[1].tool_errors == 1 and turns[1].error is None


async def test_the_tool_exchange_stays_in_the_history_for_later_turns(server, speech_wav) -> None:
    config = parse_config(config_text(url=server.url))
    pipeline = config.pipelines["default"]
    seen: list[list[Message]] = []
    llm = ScriptedLLM(pipeline.llm)
    real = llm.stream

    def recording(messages, tools):
        seen.append(list(messages))
        return real(messages, tools)

    llm.stream = recording  # type: ignore[method-assign]
    stt = Lines("A table for 4 at 7.", "Thanks.")
    config.pipelines["default"].turn.speculate_after_ms = 0  # one transcript per line
    lines = [CallerLine(wav=speech_wav), CallerLine(wav=speech_wav)]
    await calls.place_call(config, lines, Providers(stt, llm, InstantTTS(ms_per_char=10)), **FAST)
    roles = [(m.role, bool(m.tool_calls)) for m in seen[-1]]
    assert roles[-5:] == [("user", False), ("assistant", True), ("tool", False), ("assistant", False),
                          ("user", False)]
    assert seen[-1][-4].tool_calls[0].arguments == {"party_size": 4, "time": "7:00"}



async def test_a_barge_in_cancels_the_tool_round_and_closes_its_request(server, speech_wav) -> None:
    server.delay_s = 8
    config = parse_config(config_text(url=server.url, timeout_s=10, filler_after_s=0.05))
    pipeline = config.pipelines["default"]
    providers = Providers(InstantSTT("A table for 4 at 7."), ScriptedLLM(pipeline.llm), InstantTTS())
    lines = [CallerLine(wav=speech_wav), CallerLine(wav=speech_wav, barge_in=True)]
    result, turns = await calls.place_call(config, lines, providers, **FAST)
    assert result.lines[1].clear_received  # the filler was cut
    assert turns[1].interrupted and turns[1].reply_heard != "Booked, your reference is B-1."
    for _ in range(100):
        if server.disconnected:
            break
        await asyncio.sleep(0.02)
    assert server.disconnected >= 1 and server.answered == 0


# --- rounds --------------------------------------------------------------------------------------------


class Stubborn:
    """An LLM that calls book_table with `arguments` while it is offered, then says what it got."""

    vendor, model, timeouts = "stub", "stubborn", None

    def __init__(self, arguments: dict) -> None:
        self.arguments = arguments
        self.requests: list[tuple[list[Message], list[str]]] = []

    async def stream(self, messages, tools):
        self.requests.append((list(messages), [t.name for t in tools]))
        if any(t.name == "book_table" for t in tools):
            yield ToolCall(f"c{len(self.requests)}", "book_table", self.arguments)
        else:
            yield TextDelta("I could not book it.")
        yield Usage(10, 2)


async def collect_rounds(llm, tools: ToolBox) -> tuple[list, list[Message], TurnMetrics]:
    metrics, exchanges = TurnMetrics("call", 1), []

    async def go() -> None:
        return None

    events = [e async for _, e in rounds([llm], [Message("user", "book")], [END_CALL_TOOL], tools, metrics,
                                         exchanges, go)]
    return events, exchanges, metrics


async def test_invalid_arguments_go_back_to_the_llm_and_the_rounds_are_bounded(server) -> None:
    llm = Stubborn({"party_size": "four"})
    events, exchanges, metrics = await collect_rounds(llm, box(server.url))
    assert server.requests == []
    assert [names for _, names in llm.requests] == [["end_call", "book_table"]] * 3 + [["end_call"]]
    last_messages = llm.requests[-1][0]
    assert last_messages[-1].role == "tool" and "'four' is not of type 'integer'" in last_messages[-1].content
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["I could not book it."]
    assert events[-1] == Usage(40, 8)  # summed over the four requests
    assert metrics.tool_calls == 3 and metrics.tool_invalid == 3 and len(exchanges) == 6


async def test_a_valid_call_runs_once_and_its_result_is_the_tool_message(server) -> None:
    class Once(Stubborn):
        async def stream(self, messages, tools):
            if messages[-1].role == "tool":
                self.requests.append((list(messages), []))
                yield TextDelta("Booked.")
                return
            async for event in super().stream(messages, tools):
                yield event

    llm = Once({"party_size": 2, "time": "20:00"})
    events, exchanges, metrics = await collect_rounds(llm, box(server.url))
    assert len(server.requests) == 1 and metrics.tools_used == ["book_table:ok"]
    call, result = exchanges
    assert call.role == "assistant" and call.tool_calls[0].arguments == {"party_size": 2, "time": "20:00"}
    assert result.role == "tool" and result.tool_call_id == "c1" and json.loads(result.content)["id"] == "B-1"
    assert any(isinstance(e, Pending) for e in events) and not any(isinstance(e, Filler) for e in events)


async def test_no_secret_reaches_the_log(server, monkeypatch, caplog) -> None:
    text = config_text(url=server.url).replace("source=phone", "key=${BOOKING_KEY}")
    pipeline = parse_config(text).pipelines["default"]
    with caplog.at_level("DEBUG"):
        outcome = await ToolBox(pipeline.tools, pipeline.tool_use).run(
            ToolCall("c1", "book_table", {"party_size": 2, "time": "8"}))
    assert outcome.status == "ok" and server.requests[0]["query"]["key"] == SECRET  # it was sent
    assert "book_table (c1): ok" in caplog.text
    assert SECRET not in caplog.text


class Hallucinating(Stubborn):
    """Calls a tool nobody declared; words once it has an error back, or never (`mute`)."""

    def __init__(self, mute: bool = False) -> None:
        super().__init__({})
        self.mute = mute

    async def stream(self, messages, tools):
        self.requests.append((list(messages), [t.name for t in tools]))
        if messages[-1].role == "tool" and not self.mute:
            yield TextDelta("Sorry, I can't check the weather.")
        else:
            yield ToolCall(f"w{len(self.requests)}", "weather", {"city": "Rome"})


async def test_an_unknown_tool_gets_its_error_back_and_the_turn_goes_on() -> None:
    llm = Hallucinating()
    events, exchanges, metrics = await collect_rounds(llm, ToolBox([], ToolUseConfig()))
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Sorry, I can't check the weather."]
    assert "no tool named 'weather'" in exchanges[1].content and metrics.tools_used == ["weather:unknown"]


async def test_an_llm_that_only_ever_calls_tools_fails_the_turn_instead_of_silence() -> None:
    from switchboard.core.errors import ProviderError

    with pytest.raises(ProviderError, match="still calling tools"):
        await collect_rounds(Hallucinating(mute=True), ToolBox([], ToolUseConfig(max_rounds=2)))


# --- arguments sent by default ------------------------------------------------------------------------


def plain_tool(url: str, http: str, required: str = "[party_size]") -> ToolBox:
    text = f"""
pipelines:
  default:
    stt: {{provider: pocketsphinx}}
    llm: {{provider: scripted}}
    tts: {{provider: espeak}}
    tools:
      - name: find_table
        description: Find a table.
        parameters:
          type: object
          properties: {{party_size: {{type: integer}}, time: {{type: string}}, vip: {{type: boolean}},
                        days: {{type: array, items: {{type: string}}}}}}
          required: {required}
        http: {{url: "{url}/tables", {http}}}
"""
    pipeline = parse_config(text).pipelines["default"]
    return ToolBox(pipeline.tools, pipeline.tool_use)


ARGUMENTS = {"party_size": 4, "time": "19:30", "vip": True, "days": ["fri", "sat"]}


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
async def test_without_a_body_the_arguments_are_the_json_body(server, method) -> None:
    outcome = await plain_tool(server.url, f"method: {method}").run(ToolCall("c1", "find_table", ARGUMENTS))
    assert outcome.status == "ok"
    (request,) = server.requests
    assert request["method"] == method and request["body"] == ARGUMENTS and request["query"] == {}


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_without_a_body_get_and_delete_send_the_arguments_as_query_parameters(server, method) -> None:
    tools = plain_tool(server.url + "/{party_size}", f"method: {method}, query: {{when: '{{time}}'}}")
    outcome = await tools.run(ToolCall("c1", "find_table", ARGUMENTS))
    assert outcome.status == "ok"
    (request,) = server.requests
    assert request["method"] == method and request["path"] == "/4/tables" and request["body"] is None
    # those a template placed are not repeated; a list repeats its key (the fake keeps the last)
    assert request["query"] == {"when": "19:30", "vip": "true", "days": "sat"}
    assert "days=fri&days=sat" in request["raw_query"]


@pytest.mark.parametrize("body", ["null", "''", "{}"])
async def test_a_null_or_empty_body_sends_nothing_and_warns_at_start_up(server, body, caplog) -> None:
    with caplog.at_level("WARNING", logger="switchboard.config"):
        tools = plain_tool(server.url, f"method: POST, body: {body}")
    assert ("pipelines.default.tools[0]: tool 'find_table': its request carries none of its arguments, "
            "though party_size is required") in caplog.text
    outcome = await tools.run(ToolCall("c1", "find_table", ARGUMENTS))
    assert outcome.status == "ok" and server.requests[0]["body"] is None


def test_no_warning_when_the_arguments_are_sent_or_none_is_required(caplog) -> None:
    with caplog.at_level("WARNING", logger="switchboard.config"):
        plain_tool("http://127.0.0.1:9", "method: POST")
        plain_tool("http://127.0.0.1:9", "body: null", required="[]")
        plain_tool("http://127.0.0.1:9", "body: {n: '{party_size}'}")
    assert "carries none of its arguments" not in caplog.text
