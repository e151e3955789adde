"""Tools on `kind: realtime` pipelines (pipeline/realtime_tools.py): whole calls where the speech-to-speech
model calls an HTTP tool on a fake tool server on 127.0.0.1, and the result reaches the fake vendor in its
own wire format (OpenAI Realtime: a `function_call_output` item and `response.create`; Gemini Live: a
`toolResponse`); invalid arguments; end_call; a barge-in during a slow tool; the context webhook."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import numpy as np
import pytest

from switchboard.audio.wav import write_wav
from switchboard.caller import CallerLine
from switchboard.config import parse_config
from switchboard.report import build_report
from switchboard.server import running
from switchboard.store.calls import turn_row
from tests import calls
from tests.fakes import gemini_live_fake, openai_realtime_fake
from tests.fakes.tool_server import ToolServer
from tests.speech import quiet, speech_like

pytestmark = pytest.mark.timescale()  # in-process calls on instant/fake providers: tests/timescale.py

OPENAI_KEY, GEMINI_KEY = "sk-test-realtime-tools", "gemini-test-realtime-tools"
TOOLS = """
    tools:
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
          url: "{tools}/bookings"
          body: {{party_size: "{{party_size}}", time: "{{time}}"}}
          timeout_s: {timeout_s}
          result_field: booking
"""
BOOK = ("book_table", {"party_size": 4, "time": "19:00"})


@pytest.fixture
def speech_wav(tmp_path) -> str:
    path = tmp_path / "short.wav"
    write_wav(path, np.concatenate([quiet(0.05), speech_like(0.5), quiet(0.05, seed=1)]), 8000)
    return str(path)


@pytest.fixture
async def tool_server() -> AsyncIterator[ToolServer]:
    server = ToolServer()
    async with running(server.app()) as port:
        server.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
        yield server


@pytest.fixture
async def openai(monkeypatch) -> AsyncIterator[tuple[openai_realtime_fake.RealtimeScript, int]]:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    script = openai_realtime_fake.RealtimeScript(api_key=OPENAI_KEY, ms_per_char=20)
    async with running(openai_realtime_fake.make_app(script)) as port:
        yield script, port


@pytest.fixture
async def gemini(monkeypatch) -> AsyncIterator[tuple[gemini_live_fake.LiveScript, str]]:
    monkeypatch.setenv("GEMINI_API_KEY", GEMINI_KEY)
    script = gemini_live_fake.LiveScript(api_key=GEMINI_KEY, ms_per_char=20)
    async with gemini_live_fake.serving(script) as (port, cert):
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        yield script, f"https://127.0.0.1:{port}"


def pipeline(realtime: str, tools_url: str, timeout_s: float = 2, extra: str = "") -> str:
    return f"""
pipelines:
  default:
    kind: realtime
    greeting: "Hi there."
    apology: "Sorry, trouble."
    end_call_watchdog_s: 3
{extra}    realtime: {realtime}
""" + TOOLS.format(tools=tools_url, timeout_s=timeout_s)


def openai_pipeline(port: int, tools_url: str, **options) -> str:
    realtime = (f"{{provider: openai, base_url: 'http://127.0.0.1:{port}/v1', "
                "timeouts: {first_token_s: 3}, turn_detection: {type: server_vad, silence_duration_ms: 250}}")
    return pipeline(realtime, tools_url, **options)


def gemini_pipeline(base_url: str, tools_url: str, **options) -> str:
    return pipeline(f'{{provider: gemini, base_url: "{base_url}", silence_duration_ms: 250}}', tools_url,
                    **options)


async def call(yaml: str, lines: list[CallerLine], **options):
    options.setdefault("hangup_timeout_s", 0.8)
    return await calls.place_call(parse_config(yaml), lines, on_event=lambda e: None, **options)


async def test_openai_realtime_books_through_the_http_tool(openai, tool_server, speech_wav) -> None:
    script, port = openai
    script.replies = [BOOK, "Booked: {output}"]
    _, turns = await call(openai_pipeline(port, tool_server.url), [CallerLine(wav=speech_wav)])

    (request,) = tool_server.requests
    assert request["method"] == "POST" and request["body"] == {"party_size": 4, "time": "19:00"}
    offered = script.of_type("session.update")[0]["session"]["tools"]
    book = next(tool for tool in offered if tool["name"] == "book_table")
    assert book["type"] == "function" and book["parameters"]["required"] == ["party_size", "time"]
    assert {tool["name"] for tool in offered} == {"end_call", "book_table"}  # no transfer: not configured
    # the result went back as a function_call_output item for the model's call, then a response.create
    (output,) = script.tool_outputs
    assert json.loads(output["output"]) == {"id": "B-1", "party_size": 4, "time": "19:00"}
    events = [(e["type"], (e.get("item") or {}).get("type")) for e in script.received]
    at = events.index(("conversation.item.create", "function_call_output"))
    assert events[at + 1] == ("response.create", None)
    assert output["call_id"].startswith("call_")  # the id of the fake's function call (checked there)
    reply = turns[-1]
    assert reply.kind == "reply" and reply.transcript == "what time is it"  # one turn: call, result, words
    assert reply.reply_heard == f"Booked: {output['output']}"
    assert reply.tool_calls == 1 and reply.tools_used == ["book_table:ok"] and reply.tool_errors == 0
    assert reply.tool_ms > 0 and reply.error is None
    # stored and reported as a cascade's: switchboard report's tool column for the realtime model
    (row,) = build_report([turn_row(turn) for turn in turns]).rows
    assert row.vendor == "openai/gpt-realtime" and row.tool_calls_per_turn and row.tool_error_pct == 0


async def call_with_twilio_rest(yaml: str, twilio, monkeypatch, speech_wav: str, hangup_timeout_s: float):
    """One call on a server whose Twilio REST credentials point at `twilio` (a fake REST API), so that a
    transfer redirects the call there. With credentials set the media stream checks Twilio's signature,
    which the simulated caller doesn't make: the server runs with insecure_dev."""
    async with running(twilio.app()) as twilio_port:
        monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC" + "1" * 32)
        monkeypatch.setenv("TWILIO_AUTH_TOKEN", "rest-auth-token-realtime")
        monkeypatch.setenv("TWILIO_API_BASE", f"http://127.0.0.1:{twilio_port}")
        return await calls.place_call(parse_config(yaml), [CallerLine(wav=speech_wav)], insecure_dev=True,
                                      hangup_timeout_s=hangup_timeout_s, on_event=lambda e: None)


async def test_gemini_live_books_through_the_http_tool(gemini, tool_server, speech_wav) -> None:
    script, base_url = gemini
    script.replies = [BOOK, "Booked: {output}"]
    _, turns = await call(gemini_pipeline(base_url, tool_server.url), [CallerLine(wav=speech_wav)])

    (request,) = tool_server.requests
    assert request["body"] == {"party_size": 4, "time": "19:00"}
    declarations = script.setups[0]["tools"][0]["functionDeclarations"]
    assert [d["name"] for d in declarations] == ["end_call", "book_table"]
    assert declarations[1]["parametersJsonSchema"]["properties"]["party_size"]["type"] == "integer"
    (response,) = script.tool_responses
    (answer,) = response["functionResponses"]
    assert answer["id"] == "fc_1" and answer["name"] == "book_table"
    assert json.loads(answer["response"]["output"]) == {"id": "B-1", "party_size": 4, "time": "19:00"}
    reply = turns[-1]
    assert reply.reply_heard == f"Booked: {answer['response']['output']}"
    assert reply.tools_used == ["book_table:ok"] and reply.error is None


async def test_a_gemini_turn_complete_right_after_the_tool_call_does_not_end_the_reply(gemini, tool_server,
                                                                                      speech_wav) -> None:
    # some Live models end the calling turn at once; the round must go on and the result be spoken
    script, base_url = gemini
    script.turn_complete_after_tool_call = True
    tool_server.delay_s = 0.3
    script.replies = [BOOK, "Booked: {output}"]
    # the caller bears the tool's silence (0.3 s here, longer on a loaded machine: at 0.8 s of patience
    # it sometimes hung up before the result was sent)
    _, turns = await call(gemini_pipeline(base_url, tool_server.url), [CallerLine(wav=speech_wav)],
                          hangup_timeout_s=2)

    assert tool_server.answered == 1 and tool_server.disconnected == 0
    (response,) = script.tool_responses
    reply = turns[-1]
    assert reply.reply_heard == f"Booked: {response['functionResponses'][0]['response']['output']}"
    assert reply.tools_used == ["book_table:ok"]


async def test_invalid_arguments_get_the_error_back_and_no_request_is_made(openai, tool_server,
                                                                           speech_wav) -> None:
    script, port = openai
    script.replies = [("book_table", {"party_size": "lots"}), "Sorry, how many of you?"]
    _, turns = await call(openai_pipeline(port, tool_server.url), [CallerLine(wav=speech_wav)])

    assert tool_server.requests == []
    (output,) = script.tool_outputs
    assert output["output"].startswith("Error: the arguments do not match the tool's parameters")
    assert "'time' is a required property" in output["output"] and "party_size" in output["output"]
    reply = turns[-1]
    assert reply.reply_heard == "Sorry, how many of you?"  # the turn went on, in words
    assert reply.tool_invalid == 1 and reply.tools_used == ["book_table:invalid"]


async def test_an_unknown_tool_gets_its_error_back(openai, tool_server, speech_wav) -> None:
    script, port = openai
    script.replies = [("order_pizza", {}), "I can't do that."]
    _, turns = await call(openai_pipeline(port, tool_server.url), [CallerLine(wav=speech_wav)])
    (output,) = script.tool_outputs
    assert output["output"].startswith("Error: there is no tool named 'order_pizza'")
    assert turns[-1].reply_heard == "I can't do that." and turns[-1].tools_used == ["order_pizza:unknown"]


async def test_end_call_from_gemini_live_speaks_the_farewell_and_hangs_up(gemini, tool_server,
                                                                          speech_wav) -> None:
    script, base_url = gemini
    script.replies = [("end_call", {"farewell": "Goodbye now."})]
    result, turns = await call(gemini_pipeline(base_url, tool_server.url), [CallerLine(wav=speech_wav)],
                               hangup_timeout_s=3)
    last = turns[-1]
    assert last.ended_call and last.reply_heard == "Goodbye now."
    assert result.hangup and not result.stop_sent
    assert script.tool_responses[0]["functionResponses"][0]["name"] == "end_call"


async def test_a_barge_in_during_a_slow_tool_closes_its_request(openai, tool_server, speech_wav) -> None:
    script, port = openai
    tool_server.delay_s = 8
    preface = "One moment please, let me check the booking system for you right now, thank you."
    script.replies = [(*BOOK, preface), "Sure, go ahead."]
    script.transcripts = ["a table for four at seven", "actually wait"]
    lines = [CallerLine(wav=speech_wav), CallerLine(wav=speech_wav, barge_in=True)]
    result, turns = await call(openai_pipeline(port, tool_server.url, timeout_s=10), lines)

    for _ in range(100):
        if tool_server.disconnected:
            break
        await asyncio.sleep(0.02)
    assert tool_server.disconnected == 1 and tool_server.answered == 0  # the HTTP request was closed
    cut = turns[1]
    assert cut.interrupted and cut.tool_calls == 0 and cut.reply_heard != preface
    assert result.lines[1].clear_received
    # the model learns its call was cut (no response asked for it: the caller's words are answered)
    (output,) = script.tool_outputs
    assert output["output"].startswith("Cancelled:")
    assert turns[-1].reply_heard == "Sure, go ahead."


async def test_the_context_webhook_fills_the_realtime_instructions_and_greeting(openai, tool_server,
                                                                                speech_wav) -> None:
    script, port = openai
    tool_server.answer = {"name": "Ada"}
    extra = (f"    system_prompt: 'You are talking to {{name}}.'\n"
             f"    context_webhook: {{url: '{tool_server.url}/context', defaults: {{name: there}}}}\n")
    yaml = openai_pipeline(port, tool_server.url, extra=extra).replace('"Hi there."', '"Hi {name}."')
    _, turns = await call(yaml, [CallerLine(wav=speech_wav)])
    assert script.of_type("session.update")[0]["session"]["instructions"] == "You are talking to Ada."
    assert turns[0].reply_heard == "Hi Ada."
    (request,) = tool_server.requests
    assert request["path"] == "/context" and request["body"]["pipeline"] == "default"


async def test_gemini_barge_in_during_a_slow_tool_closes_it_and_the_model_withdraws_the_call(
        gemini, tool_server, speech_wav) -> None:
    script, base_url = gemini
    tool_server.delay_s = 8
    preface = "One moment please, let me check the booking system for you right now, thank you."
    script.replies = [(*BOOK, preface), "Sure, go ahead."]
    script.transcripts = ["a table for four at seven", "actually wait"]
    lines = [CallerLine(wav=speech_wav), CallerLine(wav=speech_wav, barge_in=True)]
    result, turns = await call(gemini_pipeline(base_url, tool_server.url, timeout_s=10), lines)

    for _ in range(100):
        if tool_server.disconnected:
            break
        await asyncio.sleep(0.02)
    assert tool_server.disconnected == 1 and tool_server.answered == 0
    assert script.cancellations == [["fc_1"]]  # Gemini heard the caller too: toolCallCancellation
    assert script.tool_responses == []  # no result was sent for the withdrawn call
    cut = turns[1]
    assert cut.interrupted and cut.tool_calls == 0 and result.lines[1].clear_received
    assert turns[-1].reply_heard == "Sure, go ahead."


async def test_past_max_rounds_the_call_is_refused_in_words(openai, tool_server, speech_wav) -> None:
    script, port = openai
    script.replies = [BOOK, BOOK, "Done."]
    extra = "    tool_use: {max_rounds: 1}\n"
    _, turns = await call(openai_pipeline(port, tool_server.url, extra=extra), [CallerLine(wav=speech_wav)])
    assert len(tool_server.requests) == 1  # the second call was not run
    first, second = script.tool_outputs
    assert json.loads(first["output"])["id"] == "B-1"
    assert second["output"].startswith("Error: no more tool calls this turn (tool_use.max_rounds is 1)")
    assert turns[-1].reply_heard == "Done." and turns[-1].tools_used == ["book_table:ok"]


async def test_a_machine_gets_the_voicemail_message_through_the_model(openai, tool_server,
                                                                      speech_wav) -> None:
    script, port = openai
    extra = "    voicemail: {action: leave_message, message: \"Please call Luigi's back.\"}\n"
    params = {"answered_by": "machine_end_beep"}
    result, turns = await call(openai_pipeline(port, tool_server.url, extra=extra), [],
                               custom_parameters=params, hangup_timeout_s=3)
    assert [(turn.kind, turn.reply_heard, turn.ended_call) for turn in turns] == [
        ("voicemail", "Please call Luigi's back.", True)]  # no greeting
    asked = script.of_type("response.create")[0]["response"]["instructions"]
    assert asked.endswith("\"Please call Luigi's back.\"")
    assert result.hangup and not result.stop_sent


@pytest.mark.parametrize("refused", [False, True])
async def test_transfer_call_from_a_realtime_model_redirects_the_call(openai, tool_server, speech_wav,
                                                                      monkeypatch, refused) -> None:
    import xml.etree.ElementTree as ET

    from tests.fakes.twilio_rest_fake import FakeTwilio

    script, port = openai
    script.replies = [("transfer_call", {"target": "+15551234567"})]
    twilio = FakeTwilio()
    if refused:
        twilio.status, twilio.error_code = 400, 21220
    extra = ("    transfer: {targets: [\"+15551234567\"], say: \"Putting you through.\", "
             "failed: \"Nobody is answering.\"}\n")
    result, turns = await call_with_twilio_rest(openai_pipeline(port, tool_server.url, extra=extra), twilio,
                                                monkeypatch, speech_wav, hangup_timeout_s=1.2)
    offered = {tool["name"] for tool in script.of_type("session.update")[0]["session"]["tools"]}
    assert offered == {"end_call", "transfer_call", "book_table"}
    asked = [event["response"]["instructions"] for event in script.of_type("response.create")
             if "response" in event]
    assert asked[-2 if refused else -1].endswith('"Putting you through."')
    (request,) = twilio.requests
    twiml = ET.fromstring(request.form["Twiml"])
    assert twiml.find("Dial/Number").text == "+15551234567"
    if refused:  # the model says so and the call goes on: the caller hangs up, not us
        said = [(turn.kind, turn.reply_heard, turn.transferred_to) for turn in turns[1:]]
        assert said == [("reply", "Putting you through.", None),
                        ("transfer_failed", "Nobody is answering.", None)]
        assert turns[1].failures == ["transfer to +15551234567 failed"] and not turns[1].ended_call
        assert result.stop_sent and not result.hangup
        return
    last = turns[-1]
    assert last.transferred_to == "+15551234567" and last.reply_heard == "Putting you through."
    assert result.hangup


async def test_transfer_call_from_gemini_live_redirects_the_call(gemini, tool_server, speech_wav,
                                                               monkeypatch) -> None:
    import xml.etree.ElementTree as ET

    from tests.fakes.twilio_rest_fake import FakeTwilio

    script, base_url = gemini
    script.replies = [("transfer_call", {"target": "+15551234567"})]
    twilio = FakeTwilio()
    extra = "    transfer: {targets: [\"+15551234567\"], say: \"Putting you through.\"}\n"
    result, turns = await call_with_twilio_rest(gemini_pipeline(base_url, tool_server.url, extra=extra),
                                                twilio, monkeypatch, speech_wav, hangup_timeout_s=3)
    declared = [d["name"] for d in script.setups[0]["tools"][0]["functionDeclarations"]]
    assert declared == ["end_call", "transfer_call", "book_table"]
    (request,) = twilio.requests
    assert ET.fromstring(request.form["Twiml"]).find("Dial/Number").text == "+15551234567"
    assert script.tool_responses[0]["functionResponses"][0]["name"] == "transfer_call"
    last = turns[-1]
    assert last.transferred_to == "+15551234567" and last.reply_heard == "Putting you through."
    assert result.hangup


async def test_a_reopened_session_is_told_what_the_tools_did(openai, tool_server, speech_wav) -> None:
    """The socket drops while the model speaks a tool's result: the new session gets the call and its
    result replayed as function_call / function_call_output items, and the reply is asked for again."""
    script, port = openai
    script.replies = [BOOK, "Booked: {output}, and that is all there is to say about it.", "Again: {output}"]
    script.drop_after_deltas = 5  # the greeting takes 2 deltas; the tool's answer drops after 3
    # the caller waits out the reopening (a socket opened and the history replayed: on a loaded machine
    # more than the usual 0.8 s of quiet)
    _, turns = await call(openai_pipeline(port, tool_server.url), [CallerLine(wav=speech_wav)],
                          hangup_timeout_s=3)

    assert script.sessions == 2 and len(tool_server.requests) == 1  # the booking was not made twice
    created = [event["item"] for event in script.of_type("conversation.item.create")]
    (call_id,) = {item["call_id"] for item in created if item["type"] == "function_call"}
    first, replayed = script.tool_outputs
    assert replayed["call_id"] == first["call_id"] == call_id and replayed["output"] == first["output"]
    assert turns[-1].reply_heard == f"Again: {first['output']}"


async def test_a_slow_tool_gets_the_filler_said_outside_the_conversation(openai, tool_server,
                                                                         speech_wav) -> None:
    script, port = openai
    tool_server.delay_s = 0.8
    script.replies = [BOOK, "Booked: {output}"]
    extra = "    tool_use: {filler: \"One moment, let me check.\", filler_after_s: 0.1}\n"
    _, turns = await call(openai_pipeline(port, tool_server.url, extra=extra), [CallerLine(wav=speech_wav)])

    creates = [event.get("response") or {} for event in script.of_type("response.create")]
    aside = [response for response in creates if response.get("conversation") == "none"]
    assert len(aside) == 1 and aside[0]["instructions"].endswith('"One moment, let me check."')
    assert aside[0]["tool_choice"] == "none"  # a filler must never call a tool itself
    assert script.errors_sent == []  # the results' response.create waited for the filler's to be done
    (output,) = script.tool_outputs
    reply = turns[-1]
    assert reply.reply_heard == f"One moment, let me check. Booked: {output['output']}"
    assert reply.tool_fillers == 1 and reply.tools_used == ["book_table:ok"]


async def test_gemini_has_no_filler_and_the_tool_still_answers(gemini, tool_server, speech_wav) -> None:
    script, base_url = gemini
    tool_server.delay_s = 0.5
    script.replies = [BOOK, "Booked: {output}"]
    extra = "    tool_use: {filler_after_s: 0.1}\n"
    yaml = gemini_pipeline(base_url, tool_server.url, extra=extra)
    _, turns = await call(yaml, [CallerLine(wav=speech_wav)], hangup_timeout_s=2)  # silence meanwhile
    (response,) = script.tool_responses
    assert turns[-1].reply_heard == f"Booked: {response['functionResponses'][0]['response']['output']}"
    assert turns[-1].tool_fillers == 0


async def test_the_time_limit_reached_during_a_tool_round_waits_for_the_result_then_says_goodbye(
        openai, tool_server, speech_wav) -> None:
    script, port = openai
    tool_server.delay_s = 2.5  # the limit comes while the booking is being made
    script.replies = [BOOK, "Booked: {output}"]
    extra = "    max_call_duration_s: 3.2\n    tool_use: {filler: ''}\n"
    result, turns = await call(openai_pipeline(port, tool_server.url, timeout_s=5, extra=extra),
                               [CallerLine(wav=speech_wav)], hangup_timeout_s=8)

    assert tool_server.answered == 1 and len(script.tool_outputs) == 1  # the result reached the model
    reply = next(t for t in turns if t.kind == "reply")
    assert reply.reply_heard.startswith("Booked:") and reply.tools_used == ["book_table:ok"]
    goodbye = turns[-1]
    assert goodbye.kind == "time_limit" and goodbye.ended_call
    assert result.hangup


async def test_a_refused_filler_does_not_hold_the_tool_result_back(openai, tool_server, speech_wav) -> None:
    script, port = openai
    tool_server.delay_s = 0.8
    script.replies = [BOOK, "Booked: {output}"]
    script.error_on_response = {3}  # responses: the greeting, the one calling the tool, the filler
    extra = "    tool_use: {filler: \"One moment, let me check.\", filler_after_s: 0.1}\n"
    _, turns = await call(openai_pipeline(port, tool_server.url, extra=extra), [CallerLine(wav=speech_wav)],
                          hangup_timeout_s=3)  # silence meanwhile

    (output,) = script.tool_outputs
    reply = turns[-1]
    assert reply.reply_heard == f"Booked: {output['output']}" and reply.tools_used == ["book_table:ok"]
    assert any("rate_limit_exceeded" in failure for failure in reply.failures)  # the refusal is recorded


async def test_a_reopened_gemini_session_is_told_what_the_tools_did(gemini, tool_server, speech_wav) -> None:
    """Gemini Live takes no function parts in a replay: the round comes back as a note of what the call
    returned, so the model does not book again."""
    script, base_url = gemini
    script.replies = [BOOK, "Booked: {output}, and that is all there is to say about it.", "Again."]
    script.drop_after_chunks = 5  # the greeting takes 2 chunks; the tool's answer drops after 3
    await call(gemini_pipeline(base_url, tool_server.url), [CallerLine(wav=speech_wav)], hangup_timeout_s=3)

    assert script.sessions == 2 and len(tool_server.requests) == 1
    (response,) = script.tool_responses
    replayed = [part["text"] for message in script.received if "clientContent" in message
                for turn in message["clientContent"].get("turns") or [] for part in turn.get("parts") or []
                if "text" in part]
    output = response["functionResponses"][0]["response"]["output"]
    assert any(text.startswith("(Already done") and "book_table" in text and output in text
               for text in replayed)
