"""A/B variants: the draw by weight, one variant per call for the whole call, recorded and reported."""

import asyncio
import io
import json
import math
import random
from collections import Counter

import pytest

from switchboard.caller import CallerLine, run_call
from switchboard.config import parse_config
from switchboard.pipeline.build import build_providers, expected_phrases
from switchboard.pipeline.call import Providers
from switchboard.pipeline.variants import Arm, PipelineProviders
from switchboard.report import main_report
from switchboard.server import create_app, running
from switchboard.store import CallStore
from tests.fakes.instant import InstantLLM, InstantSTT, InstantTTS

pytestmark = pytest.mark.timescale()  # in-process calls on instant/fake providers: tests/timescale.py

CONFIG = """
pipelines:
  default:
    greeting: "Hi there."
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
"""


def llm(name: str, reply: str) -> InstantLLM:
    instance = InstantLLM(reply)
    instance.model = name  # "instant/<name>" in the turn's vendors, so report rows tell the arms apart
    return instance


def arms(**weights: float) -> list[Arm]:
    return [Arm(name, weight, llm(name, f"{name} here.")) for name, weight in weights.items()]


def test_calls_are_drawn_in_proportion_to_the_weights():
    pipeline = PipelineProviders(stt=[Arm(None, 1.0, InstantSTT())], llm=arms(gpt=3, claude=1),
                                 tts=[Arm(None, 1.0, InstantTTS())])
    rng = random.Random(20250301)
    n = 2000
    drawn = Counter(pipeline.pick(rng)[0] for _ in range(n))
    assert set(drawn) == {"gpt", "claude"}
    expected, sd = n * 3 / 4, math.sqrt(n * 3 / 4 * 1 / 4)  # binomial: 1500 ± 19.4
    assert abs(drawn["gpt"] - expected) < 4 * sd


def test_each_varying_stage_is_drawn_independently_and_named_in_stage_order():
    tts_arms = [Arm("alloy", 1.0, InstantTTS()), Arm("echo", 1.0, InstantTTS())]
    pipeline = PipelineProviders(stt=[Arm(None, 1.0, InstantSTT())], llm=arms(gpt=1, claude=1), tts=tts_arms)
    rng = random.Random(7)
    picks = [pipeline.pick(rng) for _ in range(400)]
    assert {variant for variant, _ in picks} == {"gpt+alloy", "gpt+echo", "claude+alloy", "claude+echo"}
    for variant, providers in picks:  # the providers are the ones the name says
        llm_name, tts_name = variant.split("+")
        assert providers.llm.model == llm_name
        assert providers.tts is tts_arms[["alloy", "echo"].index(tts_name)].provider


def test_a_pipeline_without_variants_draws_nothing():
    providers = Providers(InstantSTT(), InstantLLM(), InstantTTS(), fallback_llm=[InstantLLM()])
    variant, picked = PipelineProviders.of(providers).pick(random.Random(1))
    assert variant is None
    assert (picked.stt, picked.llm, picked.tts, picked.fallback_llm) == (
        providers.stt, providers.llm, providers.tts, providers.fallback_llm)


def test_every_variant_is_built_at_start_up_from_the_config(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fake")
    config = parse_config("""
pipelines:
  default:
    stt: {provider: pocketsphinx, pool_size: 1}
    llm:
      variants:
        - {name: polite, weight: 3, provider: scripted, rules: [{match: hi, reply: Hello., phrases: [hi]}]}
        - {name: terse, provider: scripted, rules: [{match: bye, reply: Bye., phrases: [bye now]}]}
        - {name: gpt, weight: 0.5, provider: openai, model: gpt-4o-mini}
    tts:
      variants:
        - {name: fast, provider: espeak, rate: 220}
        - {name: slow, provider: espeak, rate: 140}
    shadow:
      - {name: same-gpt, provider: openai, model: gpt-4o-mini}
""")
    built = build_providers(config.pipeline())
    assert [(arm.name, arm.weight) for arm in built.llm] == [("polite", 3.0), ("terse", 1.0), ("gpt", 0.5)]
    assert [arm.name for arm in built.tts] == ["fast", "slow"] and [a.name for a in built.stt] == [None]
    assert [(shadow.name, shadow.vendor) for shadow in built.shadows] == [("same-gpt", "openai/gpt-4o-mini")]
    # the same settings as a live variant, yet its own adapter: its connections never queue a live turn's
    assert built.shadows[0].llm is not built.llm[2].provider
    assert build_providers(config.pipeline()).llm[2].provider is built.llm[2].provider  # live ones share
    # the embedded STT learns what callers say to every scripted variant
    assert expected_phrases(config.pipeline()) == ["hi", "bye now"]
    variant, _ = built.pick(random.Random(3))
    assert variant.split("+")[0] in {"polite", "terse", "gpt"} and variant.split("+")[1] in {"fast", "slow"}


async def test_a_call_keeps_its_variant_for_every_turn_and_the_store_and_report_say_which(
        tmp_path, speech_wav):
    pipeline = PipelineProviders(stt=[Arm(None, 1.0, InstantSTT("hello"))],
                                 llm=arms(alpha=1, beta=1), tts=[Arm(None, 1.0, InstantTTS(ms_per_char=20))])
    # a seed whose first two calls draw different variants, so both arms are on the line
    seed = next(s for s in range(100)
                if {pipeline.pick(random.Random(s))[0], _second_pick(pipeline, s)} == {"alpha", "beta"})
    db = str(tmp_path / "calls.db")
    turns = []
    app = create_app(parse_config(CONFIG), on_turn=turns.append, providers={"default": pipeline},
                     store_url=db, rng=random.Random(seed))
    lines = [CallerLine(wav=speech_wav), CallerLine(wav=speech_wav)]
    async with running(app) as port:
        results = await asyncio.gather(*(
            run_call(f"ws://127.0.0.1:{port}/media-stream", lines, hangup_timeout_s=1.5,
                     on_event=lambda event: None) for _ in range(2)))
    store = CallStore(db)
    await store.open()
    try:
        calls = {call["id"]: call for call in await store.query_calls()}
        stored_turns = await store.query_turns()
        alpha_calls = [call["id"] for call in await store.query_calls(variant="alpha")]
    finally:
        await store.close()

    assert sorted(call["variant"] for call in calls.values()) == ["alpha", "beta"]
    for result in results:
        variant = calls[result.call_sid]["variant"]
        replies = [t for t in turns if t.call_id == result.call_sid and t.kind == "reply"]
        assert len(replies) == 2  # both lines answered, by the call's own variant every time
        assert {t.reply_heard for t in replies} == {f"{variant} here."}
        assert {t.variant for t in replies} == {variant}
        assert {t["llm_vendor"] for t in stored_turns
                if t["call_id"] == result.call_sid and t["kind"] == "reply"} == {f"instant/{variant}"}
    assert alpha_calls == [call_id for call_id, call in calls.items() if call["variant"] == "alpha"]

    out = io.StringIO()
    assert await asyncio.to_thread(main_report, ["--db", db, "--variant", "beta", "--json"], None, out) == 0
    assert [row["vendor"] for row in json.loads(out.getvalue())["rows"]] == ["instant/beta"]


def _second_pick(pipeline: PipelineProviders, seed: int) -> str | None:
    rng = random.Random(seed)
    pipeline.pick(rng)
    return pipeline.pick(rng)[0]


async def test_the_report_matches_a_variant_by_any_of_its_stage_names(tmp_path):
    from datetime import UTC, datetime

    from switchboard.core.metrics import TurnMetrics

    db = str(tmp_path / "calls.db")
    store = CallStore(db)
    await store.open()
    calls = [("c1", "gpt+alloy", "openai/gpt"), ("c2", "gpt+echo", "openai/gpt-b"),
             ("c3", "claude+alloy", "anthropic/claude"), ("c4", None, "x/none"),
             ("c5", "GPT+alloy", "openai/upper"), ("c6", "gpt-4o+alloy", "openai/4o")]
    for call_id, variant, vendor in calls:
        await store.start_call(call_id, "default", started_at=datetime(2025, 3, 1, tzinfo=UTC),
                               variant=variant)
        turn = TurnMetrics(call_id, 1, stt_done=1.0, llm_first_token=1.2, speech_end=0.5)
        turn.vendors = {"llm": vendor}
        await store.add_turn(turn)
    by = {}
    for wanted in ("gpt", "alloy", "gpt+alloy", "echo", "claude+echo"):
        by[wanted] = sorted(t["call_id"] for t in await store.query_turns(variant=wanted))
    await store.close()
    assert by == {"gpt": ["c1", "c2"], "alloy": ["c1", "c3", "c5", "c6"], "gpt+alloy": ["c1"],
                  "echo": ["c2"], "claude+echo": []}
