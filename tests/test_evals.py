"""`switchboard eval` (switchboard/evals/): the scenarios file, the checks on calls that pass and fail each
one, the store's eval tags, gates, and whole offline runs on the bundled pipeline."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest

from switchboard.config import BUNDLED_CONFIG, ConfigError, load_config
from switchboard.evals.checks import CallRecord, run_checks
from switchboard.evals.runner import Runner
from switchboard.evals.scenarios import BUNDLED_EVALS, Expect, load_evals, parse_evals
from switchboard.pipeline.call import Providers
from switchboard.providers import registry
from switchboard.providers.scripted import ScriptedLLM
from switchboard.report import evals as summaries
from switchboard.store import CallStore
from tests.fakes.instant import InstantSTT, InstantTTS

# --- the scenarios file ------------------------------------------------------------------------------------


def test_the_bundled_evals_file_loads():
    evals = load_evals(BUNDLED_EVALS)
    assert [s.name for s in evals.scenarios] == ["book-a-table", "hours-then-interrupts", "noisy-line"]
    assert evals.scenarios[0].expect.tools[0].matching == {"party_size": "^(four|4)$", "time": "(seven|7)"}


def test_a_broken_evals_file_names_each_key_and_the_fix():
    text = """
scenarios:
  - name: book
    scirpt: [{say: hi}]
  - name: book
    script: [{say: hi, interrupt: stop}]
    expect: {said: ['(unclosed'], max_turns: 0, tools: [{name: t, schema: {type: bogus}}]}
  - name: no lines
"""
    with pytest.raises(ConfigError) as caught:
        parse_evals(text, "evals.yaml")
    problems = caught.value.problems
    assert "scenarios[0].scirpt: unknown key; allowed keys: calls, expect, facts, goal, judged, " \
           "max_caller_turns, name, persona, script, speech; did you mean 'script'?" in problems
    assert any(p.startswith("scenarios[0]: no `script:` and no `caller:` LLM") for p in problems)
    assert any(p.startswith("scenarios[1].script[0]: a script line needs exactly one of say, interrupt, "
                            "backchannel or wav") and p.endswith("got say, interrupt") for p in problems)
    assert any(p.startswith("scenarios[1].expect.said: '(unclosed' is not a regular expression")
               for p in problems)
    assert "scenarios[1].expect.max_turns: must be between 1 and 1000, got 0" in problems
    assert any(p.startswith("scenarios[1].expect.tools[0].schema: schema: not a valid JSON Schema")
               for p in problems)
    assert any("'no lines' is not a plain name" in p for p in problems)


def test_duplicate_keys_and_names_are_refused():
    with pytest.raises(ConfigError, match="line 3"):
        parse_evals("scenarios:\n  - name: a\n    name: b\n    script: [{say: hi}]\n")
    with pytest.raises(ConfigError, match="two scenarios are named 'a'"):
        parse_evals("scenarios:\n  - {name: a, script: [{say: hi}]}\n  - {name: a, script: [{say: hi}]}\n")


# --- the checks --------------------------------------------------------------------------------------------


def turn(index, transcript="", heard="", kind="reply", **facts):
    return {"index": index, "kind": kind, "transcript": transcript, "reply_heard": heard, **facts}


GOOD_CALL = CallRecord(
    "CA1",
    [turn(0, heard="Hello, Luigi's.", kind="greeting"),
     turn(1, "for four people at seven", "Booked: a table for four at seven. Your reference is 1042.",
          tool_args=[{"name": "book_table", "status": "ok",
                      "arguments": {"party_size": "four", "time": "7"}}]),
     turn(2, "thank you goodbye", "Goodbye!", ended_call=True)],
    lines=[{"text": "for four people at seven", "spoken": True, "answered": True},
           {"text": "thank you goodbye", "spoken": True, "answered": True}],
    talk_over_s=0.2, hung_up=True)


def expect(**rules):
    return Expect.model_validate(rules)


CHECKS = [  # (rules, what a good call gives, what makes it fail)
    ({"tools": [{"name": "book_table", "arguments": {"party_size": "FOUR"}}]}, None,
     ("book_table", {"party_size": "three"}, "party_size was 'three', expected 'FOUR'")),
    ({"tools": [{"name": "book_table", "matching": {"time": "^(7|seven)$"}}]}, None,
     ("book_table", {"party_size": "four", "time": "8"}, "expected a match of /^(7|seven)$/")),
    ({"tools": [{"name": "book_table", "schema": {"type": "object", "required": ["party_size", "time"]}}]},
     None, ("book_table", {"party_size": "four"}, "'time' is a required property")),
    ({"tools": [{"name": "book_table"}]}, None, ("check_order", {}, "never called; called check_order")),
]


@pytest.mark.parametrize(("rules", "_good", "bad"), CHECKS)
def test_a_tool_check_passes_on_matching_arguments_and_says_why_others_fail(rules, _good, bad):
    [good] = run_checks(expect(no_unanswered_turn=False, **rules), GOOD_CALL)
    assert good.passed, good.detail
    name, arguments, reason = bad
    call = CallRecord("CA2", [turn(1, "x", "y", tool_args=[{"name": name, "status": "ok",
                                                               "arguments": arguments}])])
    [failed] = run_checks(expect(no_unanswered_turn=False, **rules), call)
    assert not failed.passed and reason in failed.detail


def test_the_call_checks_pass_on_a_good_call_and_fail_with_reasons():
    rules = expect(no_tools=["transfer_desk"], end_call=True, transferred=False, max_turns=2,
                   max_talk_over_s=0.5, said=[r"reference is \d+"], never_said=["sorry"])
    assert [(c.name, c.passed) for c in run_checks(rules, GOOD_CALL)] == [
        ("no tool transfer_desk", True), ("end_call true", True), ("transferred false", True),
        ("max_turns 2", True), ("no unanswered caller turn", True), ("max_talk_over_s 0.5", True),
        (r"said /reference is \d+/", True), ("never_said /sorry/", True)]

    bad = CallRecord(
        "CA3",
        [turn(1, "hello", "Sorry, I didn't catch that."), turn(2, "hello again", "", error="llm: timeout"),
         turn(3, "anyone", "Sorry, trouble.",
              tool_args=[{"name": "transfer_desk", "status": "ok", "arguments": {}}])],
        lines=[{"text": "hello", "spoken": True, "answered": True},
               {"text": "hello again", "spoken": True, "answered": False},
               {"text": "anyone", "spoken": True, "answered": True}],
        talk_over_s=1.25, hung_up=False, transferred_to="+15551234567")
    details = {c.name: (c.passed, c.detail) for c in run_checks(rules, bad)}
    assert details == {
        "no tool transfer_desk": (False, "called 1 time(s)"),
        "end_call true": (False, "the bot did not end the call"),
        "transferred false": (False, "transferred to +15551234567"),
        "max_turns 2": (False, "3 caller turn(s) answered"),
        "no unanswered caller turn": (False, "no reply to 'hello again'"),
        "max_talk_over_s 0.5": (False, "the bot and the caller spoke at once for 1.25 s"),
        r"said /reference is \d+/": (False, "never heard from the bot"),
        "never_said /sorry/": (False, "the bot said 'Sorry'"),
    }
    [to] = run_checks(expect(transferred="+15551234567", no_unanswered_turn=False), bad)
    assert to.passed and to.name == "transferred to +15551234567"


def test_an_apology_is_an_unanswered_turn_and_a_goodbye_before_the_hang_up_is_not():
    call = CallRecord("CA4", [turn(1, "hi", "Sorry, trouble.", error="stt: timeout")],
                      lines=[{"text": "hi", "spoken": True, "answered": True}])
    [check] = run_checks(expect(), call)
    assert not check.passed and check.detail == "the apology answered 'hi'"
    hung_up = CallRecord("CA5", [turn(1, "bye", "Goodbye!", ended_call=True)], hung_up=True,
                         lines=[{"text": "hi", "spoken": True, "answered": True},
                                {"text": "bye", "spoken": True, "answered": False}])
    [check] = run_checks(expect(), hung_up)
    assert check.passed, check.detail


# --- gates -------------------------------------------------------------------------------------------------


def test_gates_are_parsed_and_a_bad_one_says_how_to_write_it():
    assert summaries.parse_gates(["pass_rate>=0.9", " v2v_p50_ms <= 1500 "]) == [
        ("pass_rate", ">=", 0.9), ("v2v_p50_ms", "<=", 1500.0)]
    with pytest.raises(ValueError, match=re.escape('write FIGURE OP NUMBER, e.g. "pass_rate>=0.9"')):
        summaries.parse_gates(["passrate>0.9"])


# --- the store ---------------------------------------------------------------------------------------------


async def test_a_version_6_store_gets_the_eval_columns_and_table(tmp_path):
    path = tmp_path / "v6.db"
    store = CallStore(str(path))
    await store.open()
    await store.start_call("CA1", "default")
    await store.close()
    with sqlite3.connect(path) as db:  # make it what schema version 6 wrote: no column of a later version
        later = {"calls": {"eval_run", "eval_scenario", "config_version", "config_file"},
                 "turns": {"tool_args", "hedges"}}
        for table, columns in later.items():
            present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            for column in sorted(columns & present):
                db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        db.execute("DROP TABLE eval_results")
        db.execute("DELETE FROM schema_version")
        db.execute("INSERT INTO schema_version VALUES (6, '2026-12-01 00:00:00')")
    upgraded = CallStore(str(path))
    await upgraded.open()
    await upgraded.start_call("CA2", "default", eval_tags={"eval_run": "r1", "eval_scenario": "book"})
    await upgraded.add_eval_result({"run": "r1", "scenario": "book", "arm": "default", "call_id": "CA2",
                                    "passed": True, "checks": [], "scores": {}})
    [result] = await upgraded.query_eval_results("r1")
    assert (result["call_id"], result["passed"]) == ("CA2", True)
    assert await upgraded.eval_runs() == ["r1"]
    await upgraded.close()


# --- whole runs --------------------------------------------------------------------------------------------

FAILING = """
scenarios:
  - name: books
    calls: 1
    script:
      - say: "for four people at seven"
      - say: "thank you goodbye"
    expect:
      tools: [{name: book_table, matching: {party_size: '^(four|4)$', time: 'seven|7'}}]
      end_call: true
      said: ['reference is \\w+']
  - name: wants-the-impossible
    calls: 1
    script:
      - say: "where are you located"
      - say: "thank you goodbye"
    expect:
      tools: [{name: book_table}]
      transferred: true
      max_turns: 1
      said: ['we deliver']
      end_call: true
"""


@pytest.fixture
def offline_providers():
    """The bundled pipeline's recogniser (Moonshine) and scripted responder, with a voice that costs
    nothing and speaks fast (the words the caller hears are the ones the store records)."""
    pipeline = load_config(BUNDLED_CONFIG).pipelines["default"]
    stt = registry.build("stt", pipeline.stt)
    return {"default": Providers(stt, ScriptedLLM(pipeline.llm), InstantTTS(ms_per_char=10))}


async def test_an_offline_run_checks_calls_that_pass_and_fail_and_keeps_them_out_of_live_figures(
        tmp_path, offline_providers, capsys):
    from switchboard.report import load

    config = load_config(BUNDLED_CONFIG)
    store = CallStore(str(tmp_path / "evals.db"))
    await store.open()
    runner = Runner(parse_evals(FAILING), config, ["default"], store, run="r-test", concurrency=2,
                    providers=offline_providers)
    results = await runner.run_all()
    rows = await store.query_eval_results("r-test")
    await store.close()

    by_scenario = {r.scenario: r for r in results}
    books = by_scenario["books"]
    assert books.passed, [c for c in books.checks if not c.passed]
    impossible = {c.name: c.passed for c in by_scenario["wants-the-impossible"].checks}
    assert impossible == {"tool book_table": False, "end_call true": True, "transferred true": False,
                          "max_turns 1": False, "no unanswered caller turn": True, "said /we deliver/": False}
    assert "default/books: pass" in capsys.readouterr().err  # progress

    assert {row["scenario"]: row["passed"] for row in rows} == {"books": True, "wants-the-impossible": False}
    booking = next(t for row in rows for t in row["turns"] if t["tool_args"])
    assert booking["tool_args"][0]["arguments"] == {"party_size": "four", "time": "seven"}

    summary = summaries.build_summary("r-test", rows)
    [arm] = summary.arms
    assert (arm.overall.passed, arm.overall.failed) == (1, 1)
    assert summaries.check_gates(summary, summaries.parse_gates(["pass_rate>=0.9"])) == [
        "default: pass_rate is 0.5, needs >= 0.9"]
    text = summaries.format_summary(summary)
    assert "pass: books" in text and "1/1 100% [21-100]" in text
    assert "default: 1 call(s) failed `transferred true`" in text

    live, _ = await load(str(tmp_path / "evals.db"))
    everything, _ = await load(str(tmp_path / "evals.db"), evals=True)
    assert live == [] and {t["call_id"] for t in everything} == {r.call_id for r in results}


def test_report_evals_prints_json_and_fails_its_gate(tmp_path, capsys):
    import asyncio

    from switchboard.cli import main

    async def fill() -> None:
        store = CallStore(str(tmp_path / "r.db"))
        await store.open()
        for n, passed in enumerate([True, True, False]):
            await store.add_eval_result({"run": "r2", "scenario": "s", "arm": "a", "call_id": f"CA{n}",
                                         "passed": passed, "checks": [], "scores": {"goal": 3 + n}})
        await store.close()

    asyncio.run(fill())
    db = str(tmp_path / "r.db")
    assert main(["report", "--evals", "latest", "--db", db, "--json", "--config", str(BUNDLED_CONFIG)]) == 0
    data = json.loads(capsys.readouterr().out)
    [arm] = data["arms"]
    assert arm["overall"]["passed"] == 2 and arm["scores"] == {"goal": 4.0}
    assert main(["report", "--evals", "r2", "--db", db, "--gate", "pass_rate>=0.9",
                 "--config", str(BUNDLED_CONFIG)]) == 1
    assert "gate failed: a: pass_rate is 0.667, needs >= 0.9" in capsys.readouterr().err
    assert main(["report", "--evals", "nope", "--db", db]) == 2


def test_a_split_pipeline_stands_for_its_arms_and_an_unknown_one_is_named():
    from switchboard.config import parse_config
    from switchboard.evals.runner import arms_of

    config = parse_config("""
pipelines:
  default: {stt: {provider: pocketsphinx}, llm: {provider: scripted}, tts: {provider: espeak}}
  other: {stt: {provider: pocketsphinx}, llm: {provider: scripted}, tts: {provider: espeak}}
  ab:
    kind: split
    variants: [{name: a, pipeline: default}, {name: b, pipeline: other}]
""")
    assert arms_of(config, ["ab"]) == ["default", "other"]
    assert arms_of(config, ["other", "ab"]) == ["other", "default"]
    with pytest.raises(ConfigError, match="--pipeline: no pipeline 'nope' in the pipeline file; it has "
                                          "default, other, ab"):
        arms_of(config, ["nope"])


def test_how_the_caller_speaks_rate_noise_and_talk_over():
    import numpy as np

    from switchboard.caller import (
        CallerLine,
        LineResult,
        Segment,
        background_noise,
        prepare_audio,
        talk_over_s,
    )

    line = CallerLine(text="i would like to book a table for four")
    normal, fast = prepare_audio(line, "en-us", 1.0), prepare_audio(line, "en-us", 1.6)
    assert len(fast) < 0.8 * len(normal)  # a faster speaker's line is shorter
    noise = background_noise(-40.0)(0, 8000).astype(float)
    assert 20 * np.log10(np.sqrt((noise ** 2).mean()) / 32768) == pytest.approx(-40.0, abs=0.5)
    said = [LineResult(0, "a", False, started_s=1.0, ended_s=3.0), LineResult(1, "b", True)]  # b never spoken
    bot = [Segment(0, np.ones(12000, np.int16)), Segment(12000, np.ones(8000, np.int16)),  # 0-1.5-2.5 s
           Segment(40000, np.ones(8000, np.int16))]  # 5-6 s: after the line
    assert talk_over_s(said, bot, now=10.0) == 1.5  # 1.0-2.5 s
    assert talk_over_s(said, bot, now=2.0) == 1.0  # what had not played yet does not count


GOODBYE = """
scenarios:
  - name: says-goodbye
    script: [{say: "thank you goodbye"}]
    expect: {said: ['goodbye'], end_call: true, no_tools: [book_table]}
"""


async def test_a_running_server_is_evaluated_through_its_call_store(tmp_path):
    from switchboard.server import create_app, running

    db = str(tmp_path / "served.db")
    config = load_config(BUNDLED_CONFIG)
    # what this checks is the store's part, not recognition (the offline run above has Moonshine hear its
    # lines): the one line is heard as said, the bundled script answers it
    script = ScriptedLLM(config.pipelines["default"].llm)
    providers = {"default": Providers(InstantSTT("thank you goodbye"), script, InstantTTS(ms_per_char=10))}
    app = create_app(config, store_url=db, providers=providers)
    store = CallStore(db)
    await store.open()  # the database exists before the server starts, as with a server already running
    async with running(app) as port:
        runner = Runner(parse_evals(GOODBYE), config, ["default"], store, run="r-url",
                        url=f"ws://127.0.0.1:{port}/media-stream")
        [result] = await runner.run_all()
        [row] = await store.query_eval_results("r-url")
        calls = await store.query_calls()
        await store.close()
    assert result.passed, [c for c in result.checks if not c.passed]
    tags = [(c["id"], c["eval_run"], c["eval_scenario"]) for c in calls]
    assert tags == [(result.call_id, "r-url", "says-goodbye")]  # the server stored the call as an eval call
    assert [(t["kind"], t["transcript"]) for t in row["turns"]] == [("greeting", ""),
                                                                    ("reply", "thank you goodbye")]
    assert "Goodbye" in row["turns"][1]["reply_heard"]


def test_the_eval_command_refuses_a_broken_file_an_unknown_pipeline_and_a_bad_gate(tmp_path, capsys):
    from switchboard.cli import main

    broken = tmp_path / "evals.yaml"
    broken.write_text("scenarios:\n  - name: a\n    script: [{sya: hi}]\n", encoding="utf-8")
    assert main(["eval", str(broken), "--db", str(tmp_path / "x.db")]) == 2
    assert ("scenarios[0].script[0].sya: unknown key; allowed keys: backchannel, interrupt, say, wav; "
            "did you mean 'say'?") in capsys.readouterr().err
    assert main(["eval", str(BUNDLED_EVALS), "--pipeline", "nope", "--db", str(tmp_path / "x.db")]) == 2
    assert "no pipeline 'nope' in the pipeline file; it has default" in capsys.readouterr().err
    assert main(["eval", "--gate", "pass>1", "--db", str(tmp_path / "x.db")]) == 2
    assert "--gate 'pass>1': write FIGURE OP NUMBER" in capsys.readouterr().err
