"""`switchboard eval --replay` (switchboard/evals/replay.py): a call recorded on one pipeline, its caller's
audio replayed into another, the two pipelines' answers paired turn by turn and judged in random order."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import numpy as np
import pytest

from switchboard.audio.wav import read_wav_channel
from switchboard.caller import CallerLine, run_call
from switchboard.config import parse_config
from switchboard.evals.replay import replay, utterances
from switchboard.evals.scenarios import parse_evals
from switchboard.pipeline.call import Providers
from switchboard.providers import registry
from switchboard.providers.scripted import ScriptedLLM
from switchboard.report.evals import build_summary, format_summary
from switchboard.server import create_app, running
from switchboard.store import CallStore
from tests.fakes.common import Faults
from tests.fakes.instant import InstantTTS
from tests.fakes.openai_fake import OpenAIScript, make_app

pytestmark = pytest.mark.timescale()  # in-process calls on instant/fake providers: tests/timescale.py

RULES = """
      rules:
        - {{match: 'bye', reply: "{prefix}Goodbye!", end_call: true}}
        - {{match: 'open|hours', reply: "{prefix}We open at noon."}}
        - {{match: 'where|located|address', reply: "{prefix}Twelve Market Street."}}
"""
PIPELINES = """
default_pipeline: original
pipelines:
  original:
    greeting: "Luigi's, hello."
    record: true
    recordings_dir: "{recordings}"
    stt: {{provider: moonshine}}
    llm:
      provider: scripted
{original_rules}
    tts: {{provider: espeak}}
  candidate:
    greeting: "Luigi's, hello."
    stt: {{provider: moonshine}}
    llm:
      provider: scripted
{candidate_rules}
    tts: {{provider: espeak}}
"""
LINES = ["where are you located", "thank you goodbye"]


def test_a_caller_track_is_cut_at_its_silences():
    rate = 8000
    tone = (np.sin(np.arange(rate) / rate * 2 * np.pi * 200) * 8000).astype(np.int16)
    hiss = np.random.default_rng(0).normal(0, 30, rate * 2).astype(np.int16)  # line noise between lines
    track = np.concatenate([hiss[:rate], tone, hiss[: rate // 5], tone[: rate // 2], hiss,
                            tone[: rate // 10]])
    cuts = utterances(track, rate)
    # a 0.2 s pause inside a line does not cut it; 0.1 s of sound is no utterance
    assert [(round(a / rate, 2), round(b / rate, 2)) for a, b in cuts] == [(1.0, 2.7)]


@pytest.fixture(autouse=True)
def openai_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789abcdef")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


async def test_a_recorded_call_replayed_into_another_pipeline_is_paired_turn_by_turn(tmp_path):
    config = parse_config(PIPELINES.format(recordings=tmp_path / "rec",
                                           original_rules=RULES.format(prefix=""),
                                           candidate_rules=RULES.format(prefix="Candidate: ")))
    stt = registry.build("stt", config.pipelines["original"].stt)
    providers = {name: Providers(stt, ScriptedLLM(config.pipelines[name].llm), InstantTTS(ms_per_char=10))
                 for name in ("original", "candidate")}
    db = str(tmp_path / "replay.db")

    app = create_app(config, store_url=db, providers=providers)  # the live call, recorded
    async with running(app) as port:
        live = await run_call(f"ws://127.0.0.1:{port}/media-stream", [CallerLine(text) for text in LINES],
                              custom_parameters={"pipeline": "original"}, on_event=lambda _e: None)
        await asyncio.wait_for(app.state.host.wait_idle(), 10)
    assert live.hangup
    caller_track, _ = read_wav_channel(tmp_path / "rec" / f"{live.call_sid}.wav", 0)
    assert len(utterances(caller_track)) == len(LINES)

    script, shown = OpenAIScript(), []

    def respond(body: dict[str, Any]) -> str:  # a judge that always prefers the candidate's answer
        asked = body["messages"][-1]["content"]
        a = re.search(r"Answer A: (.*)\n\nAnswer B:", asked, re.S).group(1)  # type: ignore[union-attr]
        shown.append("candidate first" if a.startswith("Candidate") else "original first")
        label = "A" if a.startswith("Candidate") else "B"
        return f'{{"preferred": "{label}", "reason": "it says it is the candidate"}}'

    script.respond = respond
    async with running(make_app(Faults(), script)) as fake_port:
        judge = parse_evals(f"""
judge: {{llm: {{provider: openai, model: gpt-4o-mini, base_url: "http://127.0.0.1:{fake_port}/v1"}}}}
scenarios: [{{name: unused, script: [{{say: hi}}]}}]
""").judge
        store = CallStore(db)
        await store.open()
        run = await replay(config, ["candidate"], store, since=None, from_pipeline="original", limit=5,
                           judge=judge, run="r-replay", seed=7, providers=providers)
        [row] = await store.query_eval_results(run)
        original = await store.get_call(live.call_sid)
        await store.close()

    assert row["kind"] == "replay" and row["arm"] == "candidate" and row["passed"] is True
    assert row["judge"]["original_call"] == live.call_sid
    pairs = row["judge"]["pairs"]
    originals = [t for t in original["turns"] if t["kind"] == "reply"]  # type: ignore[index]
    replayed = [t for t in row["turns"] if t["kind"] == "reply"]
    assert [p["turn"] for p in pairs] == [1, 2]
    for pair, before, after in zip(pairs, originals, replayed, strict=True):  # turn by turn
        assert pair["original"] == before["reply_heard"] and pair["candidate"] == after["reply_heard"]
        assert pair["caller"] == after["transcript"]
        assert pair["candidate"] == "Candidate: " + pair["original"]  # the same caller turn, both answers
        assert pair["preferred"] == "candidate"
    assert [p["order"] for p in pairs] == shown  # the order the judge saw, recorded
    assert row["judge"]["win_rate"] == 1.0
    summary = build_summary(run, [row])
    assert "judge prefers it to the original" in format_summary(summary)
    assert "later lines may no longer fit" in format_summary(summary)
