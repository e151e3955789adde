"""The scripted responder: which rule answers, how the reply streams, end_call, usage."""

from __future__ import annotations

import asyncio

import pytest

from switchboard.core.messages import LLMEvent, Message, TextDelta, Tool, ToolCall, Usage
from switchboard.core.tools import END_CALL_TOOL
from switchboard.providers.scripted import ScriptedLLM, ScriptedLLMConfig, ScriptedRule

RULES = [
    ScriptedRule(match=r"\b(good ?bye|bye)\b", reply="Thanks for calling. Goodbye!", end_call=True,
                 phrases=["goodbye", "bye bye"]),
    ScriptedRule(match=r"\bopen", reply="We are open from noon until ten.", phrases=["when are you open"]),
    ScriptedRule(match=r"\btable\b", reply="For how many people?", phrases=["i want to book a table"]),
]
FALLBACK = "Sorry, I didn't catch that."


def llm(words_per_second: float = 0, rules: list[ScriptedRule] = RULES) -> ScriptedLLM:
    return ScriptedLLM(ScriptedLLMConfig(provider="scripted", rules=rules, fallback=FALLBACK,
                                         words_per_second=words_per_second))


async def events(model: ScriptedLLM, said: str, tools: list[Tool] | None = None) -> list[LLMEvent]:
    messages = [Message("system", "Be brief."), Message("assistant", "Hello, how can I help?"),
                Message("user", said)]
    return [event async for event in model.stream(messages, [END_CALL_TOOL] if tools is None else tools)]


def text_of(stream: list[LLMEvent]) -> str:
    return "".join(event.text for event in stream if isinstance(event, TextDelta))


async def test_first_matching_rule_answers_case_insensitively() -> None:
    said = "WHEN ARE YOU OPEN? I'd like a table"
    assert text_of(await events(llm(), said)) == "We are open from noon until ten."
    assert text_of(await events(llm(), "can I get a table tonight")) == "For how many people?"


async def test_reply_streams_word_by_word_and_joins_back_exactly() -> None:
    reply = "  We   are open\nfrom noon. "
    model = llm(rules=[ScriptedRule(match="open", reply=reply)])
    deltas = [e.text for e in await events(model, "are you open") if isinstance(e, TextDelta)]
    assert "".join(deltas) == reply
    assert deltas == ["  ", "We   ", "are ", "open\n", "from ", "noon. "]


async def test_only_the_last_user_message_is_matched() -> None:
    messages = [Message("user", "when are you open"), Message("assistant", "noon"), Message("user", "hmm")]
    stream = [event async for event in llm().stream(messages, [END_CALL_TOOL])]
    assert text_of(stream) == FALLBACK


async def test_no_match_gives_the_fallback() -> None:
    assert text_of(await events(llm(), "what is the meaning of life")) == FALLBACK


async def test_end_call_rule_asks_to_hang_up_with_the_reply_as_farewell() -> None:
    stream = await events(llm(), "ok, goodbye")
    calls = [event for event in stream if isinstance(event, ToolCall)]
    assert len(calls) == 1 and calls[0].name == "end_call" and calls[0].id
    assert calls[0].arguments == {"farewell": "Thanks for calling. Goodbye!"}
    assert text_of(stream) == ""  # the farewell is spoken once, by the call, from the tool call


async def test_end_call_rule_without_the_tool_just_says_the_reply() -> None:
    stream = await events(llm(), "goodbye", tools=[])
    assert text_of(stream) == "Thanks for calling. Goodbye!"
    assert not [event for event in stream if isinstance(event, ToolCall)]


async def test_usage_counts_words_and_comes_last() -> None:
    stream = await events(llm(), "when are you open")
    assert stream[-1] == Usage(input_tokens=2 + 5 + 4, output_tokens=7)
    assert sum(isinstance(event, Usage) for event in stream) == 1
    farewell = await events(llm(), "bye")
    assert farewell[-1] == Usage(input_tokens=2 + 5 + 1, output_tokens=4)


async def test_paced_words_sleep_between_words(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def record(delay: float) -> None:
        slept.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", record)
    await events(llm(words_per_second=4), "a table please")  # "For how many people?": 4 words
    assert slept == [0.25, 0.25, 0.25]
    slept.clear()
    await events(llm(words_per_second=0), "a table please")
    assert slept == [0, 0, 0]  # unpaced, but still a cancellation point between words


async def test_stream_can_be_cancelled_between_words() -> None:
    received: list[str] = []
    first_word = asyncio.Event()

    async def consume() -> None:
        async for event in llm(words_per_second=1).stream([Message("user", "open?")], []):
            if isinstance(event, TextDelta):
                received.append(event.text)
                first_word.set()

    task = asyncio.create_task(consume())
    await first_word.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert received == ["We "]


def test_bad_regex_names_the_rule_and_the_error() -> None:
    bad = ScriptedRule.model_construct(match="(unclosed", reply="x", end_call=False, phrases=[])
    with pytest.raises(ValueError, match=r"scripted rule 1: invalid regex '\(unclosed': missing \), "):
        llm(rules=[RULES[0], bad])


def test_phrases_are_every_rules_phrases_in_order() -> None:
    assert llm().phrases() == ["goodbye", "bye bye", "when are you open", "i want to book a table"]


def test_it_says_what_it_is() -> None:
    model = llm()
    assert (model.vendor, model.model) == ("scripted", "rules")


BOOK = Tool("book_table", "Book.", {"type": "object", "properties": {
    "party_size": {"type": "integer"}, "time": {"type": "string"}, "vip": {"type": "boolean"}}})
BOOKING_RULE = ScriptedRule(match=r"table for (?P<party>\d+)( at (?P<time>\d+))?", tool="book_table",
                            arguments={"party_size": "{party}", "time": "{time}:00", "vip": False},
                            reply="Booked {party_size} for {time}, reference {id}.", failed="No luck.")


async def test_a_tool_rule_calls_the_tool_with_typed_arguments_from_the_groups() -> None:
    model = llm(rules=[BOOKING_RULE])
    stream = await events(model, "A table for 4 at 7 please", tools=[END_CALL_TOOL, BOOK])
    (call,) = [e for e in stream if isinstance(e, ToolCall)]
    assert call.name == "book_table" and call.arguments == {"party_size": 4, "time": "7:00", "vip": False}
    assert text_of(stream) == ""
    partial = [e for e in await events(model, "a table for 2", tools=[BOOK]) if isinstance(e, ToolCall)]
    assert partial[0].arguments == {"party_size": 2, "vip": False}  # no time said: the argument is left out


async def test_a_tool_rule_replies_with_the_result_or_says_it_failed() -> None:
    model = llm(rules=[BOOKING_RULE])
    said = [Message("user", "a table for 4 at 7"),
            Message("assistant", "", tool_calls=[ToolCall("c1", "book_table", {"party_size": 4})])]
    result = Message("tool", '{"id": "B-7", "party_size": 4, "time": "7:00"}', tool_call_id="c1")
    ok = [e async for e in model.stream([*said, result], [BOOK])]
    assert text_of(ok) == "Booked 4 for 7:00, reference B-7."
    failed = [e async for e in model.stream([*said, Message("tool", "Error: timed out", tool_call_id="c1")],
                                            [BOOK])]
    assert text_of(failed) == "No luck."
    unoffered = await events(model, "a table for 4 at 7", tools=[END_CALL_TOOL])
    assert text_of(unoffered) == "No luck."  # the tool is not offered on this call
