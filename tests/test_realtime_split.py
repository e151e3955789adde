"""`kind: split`: A/B across pipeline kinds — each call drawn to a cascade or a realtime pipeline,
recorded under the split's name with the arm as its variant, and reported side by side."""

from __future__ import annotations

import asyncio
import random

import numpy as np
import pytest

from switchboard.audio.wav import write_wav
from switchboard.caller import CallerLine, run_call
from switchboard.config import ConfigError, parse_config
from switchboard.pipeline.build import build_providers
from switchboard.pipeline.call import Providers
from switchboard.pipeline.variants import draw_pipeline
from switchboard.report import build_report
from switchboard.server import create_app, running
from switchboard.store.calls import turn_row
from tests.fakes.instant import InstantLLM, InstantSTT, InstantTTS
from tests.fakes.openai_realtime_fake import RealtimeScript, make_app
from tests.speech import quiet, speech_like

pytestmark = pytest.mark.timescale()  # in-process calls on instant/fake providers: tests/timescale.py

SPLIT = """
pipelines:
  default:
    kind: split
    variants:
      - {{name: cascade, weight: 50, pipeline: claude}}
      - {{name: realtime, weight: 50, pipeline: rt}}
  claude:
    greeting: "Hi there."
    stt: {{provider: pocketsphinx}}
    llm: {{provider: scripted}}
    tts: {{provider: espeak}}
  rt:
    kind: realtime
    greeting: "Hi there."
    realtime: {{provider: openai, base_url: "http://127.0.0.1:{port}/v1"}}
"""


def test_a_split_must_draw_defined_pipelines() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(SPLIT.format(port=1).replace("pipeline: claude", "pipeline: claud"))
    assert caught.value.problems == [
        "pipeline.yaml: pipelines.default.variants[0].pipeline: 'claud' is not a pipeline; a split draws "
        "among: claude, rt"]


def test_the_draw_follows_the_weights() -> None:
    config = parse_config(SPLIT.format(port=1).replace("weight: 50, pipeline: rt", "weight: 150, "
                                                                                   "pipeline: rt"))
    rng = random.Random(3)
    drawn = [draw_pipeline(config.pipelines["default"], rng) for _ in range(4000)]
    assert set(drawn) == {("cascade", "claude"), ("realtime", "rt")}
    assert sum(arm == "realtime" for arm, _ in drawn) / len(drawn) == pytest.approx(0.75, abs=0.03)


async def test_calls_are_drawn_across_kinds_and_reported_side_by_side(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-split")
    line = tmp_path / "line.wav"
    write_wav(line, np.concatenate([quiet(0.05), speech_like(0.5), quiet(0.05, seed=1)]), 8000)
    script = RealtimeScript(ms_per_char=20)
    async with running(make_app(script)) as fake_port:
        config = parse_config(SPLIT.format(port=fake_port))
        seed = next(seed for seed in range(100)  # one call to each arm, in that order
                    if [draw_pipeline(config.pipelines["default"], rng)[0]
                        for rng in [random.Random(seed)] for _ in range(2)] == ["cascade", "realtime"])
        cascade = Providers(InstantSTT("what time is it"), InstantLLM("It is noon."),
                            InstantTTS(ms_per_char=20))
        providers = {"claude": cascade, "rt": build_providers(config.pipelines["rt"])}
        turns: list = []
        app = create_app(config, on_turn=turns.append, providers=providers, rng=random.Random(seed))
        async with running(app) as port:
            for _ in range(2):
                await run_call(f"ws://127.0.0.1:{port}/media-stream", [CallerLine(wav=str(line))],
                               hangup_timeout_s=1.0, on_event=lambda e: None)
                await asyncio.wait_for(app.state.host.wait_idle(), 5)

    by_variant = {turn.variant: turn for turn in turns if turn.kind == "reply"}
    assert by_variant["cascade"].vendors["llm"] == "instant/echo"
    assert by_variant["realtime"].vendors == {"llm": "openai/gpt-realtime"}
    assert all(turn.voice_to_voice_ms is not None for turn in by_variant.values())
    rows = {row.vendor for row in build_report([turn_row(turn) for turn in turns]).rows}
    assert rows == {"instant/echo", "openai/gpt-realtime"}
    assert script.sessions == 1  # only the realtime call opened a session
