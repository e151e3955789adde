"""The LLM judge and the LLM caller (switchboard/evals/judge.py, simulated.py) on the OpenAI fake: the judge's
good, malformed and missing JSON; a whole eval call played by an LLM that only hears the bot."""

from __future__ import annotations

import json
from typing import Any

import pytest

from switchboard.config import parse_config
from switchboard.evals.checks import CallRecord
from switchboard.evals.judge import judge_call
from switchboard.evals.runner import Runner
from switchboard.evals.scenarios import DEFAULT_JUDGE_PROMPT, parse_evals
from switchboard.server import running
from switchboard.store import CallStore
from tests.fakes.common import Faults
from tests.fakes.openai_fake import OpenAIScript, make_app

KEY = "sk-test-0123456789abcdef"
CRITERION = "The bot said when Luigi's opens."


@pytest.fixture(autouse=True)
def openai_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


@pytest.fixture
async def fake():
    script = OpenAIScript()
    async with running(make_app(Faults(), script)) as port:
        yield script, f"http://127.0.0.1:{port}/v1"


def good_verdict(met: bool = True) -> str:
    return json.dumps({
        "scores": {"goal": {"score": 5, "evidence": "bot: We open at noon"},
                   "faithful": {"score": 4, "evidence": "noon is in the prompt"},
                   "spoken_style": {"score": 5, "evidence": "one short sentence"},
                   "made_up": {"score": 1, "evidence": "a rubric item nobody asked for is left out"}},
        "criteria": {CRITERION: {"met": met, "evidence": "bot: We open at noon"},
                     "A criterion nobody asked for": {"met": False, "evidence": "left out"}}})


def is_judge(body: dict[str, Any]) -> bool:
    return body["messages"][0]["content"].startswith(DEFAULT_JUDGE_PROMPT)


def evals_file(base_url: str, script: str = "") -> str:
    return f"""
judge:
  llm: {{provider: openai, model: gpt-4o-mini, base_url: "{base_url}"}}
  price: {{input_per_1m: 1.0, output_per_1m: 2.0}}
caller:
  llm: {{provider: openai, model: gpt-4o-mini, base_url: "{base_url}"}}
  stt: {{provider: openai, model: whisper-1, base_url: "{base_url}"}}
scenarios:
  - name: asks-hours
    persona: A busy parent who asks one thing.
    goal: Learn when Luigi's opens today.
    facts: {{day: Tuesday}}
    max_caller_turns: 3
    {script}
    expect: {{said: ['noon'], no_unanswered_turn: false}}
    judged: ["{CRITERION}"]
"""


RECORD = CallRecord("CA1", [{"index": 1, "kind": "reply", "transcript": "when are you open",
                             "reply_heard": "We open at noon."}])


@pytest.mark.parametrize(("answers", "attempts", "verdict"), [
    ([good_verdict()], 1, True),
    (["```json\n" + good_verdict(met=False) + "\n```"], 1, False),  # fenced JSON is still JSON
    (["Sure! The bot did well.", good_verdict()], 2, True),  # malformed, then asked again
    (["", json.dumps({"scores": {}})], 2, "the answer does not match the schema at the top level: "
                                          "'criteria' is a required property"),  # missing, then incomplete
])
async def test_the_judge_parses_its_answer_retries_once_and_never_passes_a_bad_one(fake, answers, attempts,
                                                                                    verdict):
    script, base_url = fake
    asked: list[dict[str, Any]] = []

    def respond(body: dict[str, Any]) -> str:
        asked.append(body)
        return answers[len(asked) - 1]

    script.respond = respond
    evals = parse_evals(evals_file(base_url, "script: [{say: hi}]"))
    result = await judge_call(evals.judge, evals.scenarios[0], RECORD, "Luigi's opens at noon.")
    assert result is not None and result.attempts == attempts == len(asked)
    system = asked[0]["messages"][0]["content"]
    assert "Luigi's opens at noon." in system and CRITERION in system  # the system prompt, the criterion
    assert "bot: We open at noon." in asked[0]["messages"][1]["content"]  # the transcript
    if isinstance(verdict, bool):
        assert result.passed is verdict and result.unjudged is None
        assert result.scores == {"goal": 5, "faithful": 4, "spoken_style": 5}
    else:
        assert result.passed is None and result.unjudged == f"malformed answer twice: {verdict}"
        assert "cannot be used: the answer was empty" in asked[1]["messages"][-1]["content"]
    assert result.tokens_in > 0 and result.tokens_out > 0
    assert result.cost == pytest.approx((result.tokens_in * 1.0 + result.tokens_out * 2.0) / 1e6)


async def test_a_judge_that_cannot_be_reached_leaves_the_call_unjudged():
    evals = parse_evals(evals_file("http://127.0.0.1:9/v1", "script: [{say: hi}]"))
    evals.judge.llm.timeouts.total_s = 2  # type: ignore[union-attr]
    result = await judge_call(evals.judge, evals.scenarios[0], RECORD, "")
    assert result is not None and result.passed is None and result.unjudged.startswith("the judge failed")


PIPELINE = """
pipelines:
  default:
    greeting: "Hello, Luigi's."
    system_prompt: "You are Luigi's front desk. Luigi's opens at noon."
    turn: {{speculate_after_ms: 0}}
    stt: {{provider: moonshine}}
    llm: {{provider: openai, model: gpt-4o-mini, base_url: "{base_url}"}}
    tts: {{provider: openai, model: tts-1, voice: alloy, base_url: "{base_url}"}}
"""


async def test_an_llm_caller_hears_the_bot_through_its_recogniser_and_the_judge_scores_the_call(
        fake, tmp_path):
    script, base_url = fake
    bot_said: list[str] = ["Hello, Luigi's."]
    caller_requests: list[list[dict[str, Any]]] = []

    def respond(body: dict[str, Any]) -> str:
        messages = body["messages"]
        if is_judge(body):
            return good_verdict()
        if messages[0]["content"].startswith("You are a person phoning"):  # the LLM caller
            caller_requests.append(messages)
            said = sum(m["role"] == "assistant" for m in messages)
            return ["When do you open today?", "Thank you, goodbye.", "[hang up]"][min(said, 2)]
        users = sum(m["role"] == "user" for m in messages)  # the bot, on OpenAI
        bot_said.append("We open at noon today." if users == 1 else "Goodbye!")
        return bot_said[-1]

    script.respond = respond
    script.transcribe = lambda pcm: bot_said[-1]  # the caller-side recogniser hears the bot's last words
    store = CallStore(str(tmp_path / "llm.db"))
    await store.open()
    runner = Runner(parse_evals(evals_file(base_url)), parse_config(PIPELINE.format(base_url=base_url)),
                    ["default"], store, run="r-llm")
    [result] = await runner.run_all()
    [row] = await store.query_eval_results("r-llm")
    await store.close()

    # the caller LLM got what its recogniser heard, never the bot's text by another way
    heard = [m["content"] for m in caller_requests[-1] if m["role"] == "user"]
    assert heard == ["Hello, Luigi's.", "We open at noon today.", "Goodbye!"], row["turns"]
    assert len(script.uploads) == 3 and all(u["sample_rate"] == 16000 for u in script.uploads)
    # the bot heard the caller's two lines (Moonshine on the caller's voice) and answered them
    replies = [t for t in row["turns"] if t["kind"] == "reply"]
    assert [t["reply_heard"] for t in replies] == ["We open at noon today.", "Goodbye!"]
    assert "open" in replies[0]["transcript"].lower()
    assert result.passed is True and row["passed"] is True
    assert row["scores"] == {"goal": 5, "faithful": 4, "spoken_style": 5}
    assert row["judge"]["criteria"] == {CRITERION: True}
    assert row["judge_tokens_in"] > 0 and row["judge_cost"] > 0
