"""Hedging stalled vendor requests (pipeline/hedging.py, pipeline/failover.py), on the OpenAI adapter and
its fakes: a request whose first result is late is asked again beside it (the next cloud provider in the
chain, else the same one), the first answer is used and the other cancelled; a healthy vendor sees one
request per stage; every hedge is on the turn, in the store, the report and /metrics."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import numpy as np
import pytest

from switchboard.caller import CallerLine, run_call
from switchboard.config import ConfigError, parse_config
from switchboard.core.metrics import TurnMetrics
from switchboard.core.settings import Timeouts
from switchboard.pipeline.hedging import FLOOR_S, MIN_SAMPLES, Hedging, partner
from switchboard.report import build_report
from switchboard.server import create_app, running
from switchboard.store import CallStore
from tests.calls import answered_then_quiet
from tests.fakes.common import Faults
from tests.fakes.openai_fake import OpenAIScript, make_app

pytestmark = pytest.mark.timescale()  # in-process calls on instant/fake providers: tests/timescale.py

CONFIG = """
pipelines:
  default:
    greeting: "Hi."
    stt: {{provider: openai, base_url: "{stt}"}}
    llm: {{provider: openai, model: primary-model, base_url: "{llm}"}}
    tts: {{provider: openai, base_url: "{tts}"}}
    fallback:
      llm: [{{provider: openai, model: backup-model, base_url: "{backup}"}}]
    hedging:
      hedge_after_ms: {{stt: {after}, llm: {after}, tts: {after}}}
"""


@pytest.fixture(autouse=True)
def openai_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


class Vendors:
    """One OpenAI fake per stage (and the backup LLM), each with its own faults and record."""

    def __init__(self, **faults: Faults) -> None:
        self.faults = {name: faults.get(name, Faults()) for name in ("stt", "llm", "tts", "backup")}
        self.scripts = {"stt": OpenAIScript(), "llm": OpenAIScript(reply="It is noon."),
                        "tts": OpenAIScript(ms_per_char=10), "backup": OpenAIScript(reply="Backup here.")}

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[dict[str, str]]:
        async with contextlib.AsyncExitStack() as stack:
            urls = {}
            for name, faults in self.faults.items():
                port = await stack.enter_async_context(running(make_app(faults, self.scripts[name])))
                urls[name] = f"http://127.0.0.1:{port}/v1"
            yield urls


async def one_call(vendors: Vendors, wav: str, tmp_path, config: str = CONFIG, after_ms: int = 1000
                   ) -> tuple[list[TurnMetrics], bytes, list[dict]]:
    """A call saying one line: its turns, the server's /metrics text, and the turns the store holds."""
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    turns: list[TurnMetrics] = []
    async with vendors.serving() as urls:
        text = config.format(after=after_ms, **urls)
        app = create_app(parse_config(text), on_turn=turns.append, store_url=url)
        async with running(app) as port:
            # the caller waits on the answer however the stalls delay it, then 2.5 s of quiet (a hedged
            # sentence may come that long after the one before it)
            await run_call(f"ws://127.0.0.1:{port}/media-stream", [CallerLine(wav=wav)],
                           script=answered_then_quiet, hangup_timeout_s=2.5, on_event=lambda event: None)
            await asyncio.wait_for(app.state.host.wait_idle(), 5)
            exposition = app.state.ops.metrics.exposition()
    store = CallStore(url)
    await store.open()
    try:
        stored = await store.query_turns()
    finally:
        await store.close()
    return turns, exposition, stored


def reply_of(turns: list[TurnMetrics]) -> TurnMetrics:
    (reply,) = [turn for turn in turns if turn.kind == "reply"]
    return reply


async def test_healthy_vendors_see_one_request_per_stage(speech_wav, tmp_path):
    vendors = Vendors()  # (hedging after 2 s: the SDK's first request on a loaded test machine is slow)
    turns, exposition, _ = await one_call(vendors, speech_wav, tmp_path, after_ms=2000)
    assert reply_of(turns).reply_heard == "It is noon."
    counts = {name: len(faults.requests) for name, faults in vendors.faults.items()}
    assert counts == {"stt": 1, "llm": 1, "tts": 2, "backup": 0}  # tts: the greeting and the reply
    assert [r["input"] for r in vendors.faults["tts"].requests] == ["Hi.", "It is noon."]
    assert all(not turn.hedges and not turn.failures for turn in turns)
    assert b"switchboard_hedges_total{" not in exposition


async def test_a_stalled_tts_and_stt_are_hedged_with_the_same_vendor(speech_wav, tmp_path):
    # the first transcription and the reply's speech (the 2nd speech request) stall for 4 s
    vendors = Vendors(stt=Faults(stall_first=1, stall_s=4), tts=Faults(stall_every=2, stall_s=4))
    turns, exposition, stored = await one_call(vendors, speech_wav, tmp_path)
    reply = reply_of(turns)
    assert reply.reply_heard == "It is noon." and reply.error is None and not reply.failures, reply
    assert reply.hedges == ["stt openai/gpt-4o-mini-transcribe -> openai/gpt-4o-mini-transcribe: won",
                            "tts openai/gpt-4o-mini-tts -> openai/gpt-4o-mini-tts: won"]
    assert [r["input"] for r in vendors.faults["tts"].requests] == ["Hi.", "It is noon.", "It is noon."]
    assert len(vendors.faults["stt"].requests) == 2 and len(vendors.faults["llm"].requests) == 1
    assert ('switchboard_hedges_total{outcome="won",stage="tts",vendor="openai/gpt-4o-mini-tts"} 1.0'
            in exposition.decode())
    report = build_report(stored)
    assert report.hedges == {"stt openai/gpt-4o-mini-transcribe": {"hedged": 1, "won": 1},
                             "tts openai/gpt-4o-mini-tts": {"hedged": 1, "won": 1}}


async def test_a_stalled_llm_is_hedged_with_the_next_llm_in_the_chain(speech_wav, tmp_path):
    vendors = Vendors(llm=Faults(first_byte_delay_s=4))
    turns, _, _ = await one_call(vendors, speech_wav, tmp_path)
    reply = reply_of(turns)
    assert reply.reply_heard == "Backup here." and reply.vendors["llm"] == "openai/backup-model"
    assert reply.hedges == ["llm openai/primary-model -> openai/backup-model: won"]
    assert not reply.failures  # the stalled request was cancelled, not failed
    assert len(vendors.faults["llm"].requests) == len(vendors.faults["backup"].requests) == 1


async def test_a_hedge_that_fails_leaves_the_late_request_to_answer(speech_wav, tmp_path):
    # no fallback LLM: the hedge is the same vendor again (its one retry); it answers 500, and the first
    # request, stalled for 4 s (inside its 5 s first_token_s), answers after all
    config = CONFIG.replace("    fallback:\n      llm: [{{provider: openai, model: backup-model, "
                            "base_url: \"{backup}\"}}]\n", "")
    assert "fallback" not in config
    stalled_then_500 = Faults(stall_first=1, stall_s=4, fail_every=2)
    vendors = Vendors(llm=stalled_then_500)
    turns, _, _ = await one_call(vendors, speech_wav, tmp_path, config)
    reply = reply_of(turns)
    assert reply.reply_heard == "It is noon.", reply.failures
    assert [f.split(":")[0] for f in reply.failures] == ["llm openai/primary-model attempt 2"]
    assert reply.hedges == ["llm openai/primary-model -> openai/primary-model: lost"]
    assert len(stalled_then_500.requests) == 2


def test_hedging_waits_for_twice_the_providers_own_p95():
    class Cloud:
        timeouts = Timeouts()

    class Embedded:
        timeouts = None

    hedging, cloud = Hedging(), Cloud()
    for _ in range(MIN_SAMPLES - 1):
        hedging.record(cloud, 0.3)
    assert hedging.delay_s("tts", cloud) is None  # too few answers to know its usual time
    assert hedging.learning("tts", cloud)  # a request waiting meanwhile looks again
    hedging.record(cloud, 0.3)
    assert hedging.delay_s("tts", cloud) == pytest.approx(0.6) and not hedging.learning("tts", cloud)
    fast = Cloud()
    for _ in range(MIN_SAMPLES):
        hedging.record(fast, 0.01)
    assert hedging.delay_s("tts", fast) == FLOOR_S
    assert hedging.delay_s("tts", Embedded()) is None  # never a second run of our own engine
    text = CONFIG.format(stt="http://a", llm="http://a", tts="http://a", backup="http://a", after=400)
    configured = Hedging(parse_config(text).pipelines["default"].hedging)
    assert configured.delay_s("tts", Cloud()) == 0.4
    assert partner([Cloud(), Embedded()], 0) == 0 and partner([Cloud(), Cloud(), Embedded()], 0) == 1
    assert partner([Cloud(), Embedded()], 0, second=True) == 1  # a late hedge: the machine's own voice


def test_a_hedge_after_the_timeout_is_a_config_error():
    text = CONFIG.format(stt="http://a", llm="http://a", tts="http://a", backup="http://a", after=400)
    with pytest.raises(ConfigError) as caught:
        parse_config(text.replace("tts: 400}", "tts: 6000}"))
    assert ("hedging.hedge_after_ms.tts is 6000 ms, not before tts provider 'openai''s "
            "timeouts.first_token_s (5 s)") in str(caught.value)
    assert "set it below 5000" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        parse_config(text.replace("tts: 400}", "tss: 400}"))
    assert "hedge_after_ms.tss" in str(caught.value)


async def test_a_request_waiting_before_its_vendor_has_figures_is_hedged_once_they_come():
    """A cold process's first burst: the stalled request started before its vendor's p95 was known looks
    again every 250 ms, and is hedged once 20 answers are in (here recorded while it waits)."""
    from switchboard.pipeline import failover

    class StallingOnce:
        vendor, model, sample_rate = "cloud", "voice", 8000
        timeouts = Timeouts(first_token_s=30)

        def __init__(self) -> None:
            self.requests = 0

        async def stream(self, text: str) -> AsyncIterator[np.ndarray]:
            self.requests += 1
            if self.requests == 1:
                await asyncio.sleep(30)  # the stall; cancelled when the hedge answers
            yield np.zeros(80, dtype=np.int16)

    tts, hedging, metrics = StallingOnce(), Hedging(), TurnMetrics(call_id="c", index=0)

    async def answers_come_in() -> None:
        await asyncio.sleep(0.1)
        for _ in range(MIN_SAMPLES):
            hedging.record(tts, 0.05)

    filler = asyncio.create_task(answers_come_in())
    pieces = [pcm async for _, pcm in failover.synthesize([tts], "Hi.", metrics, hedging)]
    await filler
    assert len(pieces) == 1 and tts.requests == 2
    assert metrics.hedges == ["tts cloud/voice -> cloud/voice: won"] and not metrics.failures


async def test_a_hedge_that_stalls_too_is_hedged_once_more_and_no_further():
    """Under a stalling vendor the hedge itself stalls now and then (bench/calls.py's fault mix: 3 of 56
    hedged turns then waited out the whole first-result timeout). A late hedge gets one more beside it;
    beyond `MAX_HEDGES` nothing more is sent, whatever stalls."""
    from switchboard.pipeline import failover
    from switchboard.pipeline.hedging import MAX_HEDGES

    class Stalling:
        vendor, model, sample_rate = "cloud", "voice", 8000
        timeouts = Timeouts(first_token_s=30)

        def __init__(self, answering: set[int]) -> None:
            self.requests, self.answering = 0, answering

        async def stream(self, text: str) -> AsyncIterator[np.ndarray]:
            self.requests += 1
            if self.requests not in self.answering:
                await asyncio.sleep(30)  # the stall; cancelled when another request answers
            yield np.zeros(80, dtype=np.int16)

    def warmed(tts: Stalling) -> Hedging:
        hedging = Hedging()
        for _ in range(MIN_SAMPLES):
            hedging.record(tts, 0.05)  # its usual time: late after FLOOR_S
        return hedging

    tts, metrics = Stalling(answering={3}), TurnMetrics(call_id="c", index=0)
    pieces = [pcm async for _, pcm in failover.synthesize([tts], "Hi.", metrics, warmed(tts))]
    assert len(pieces) == 1 and tts.requests == 3 and not metrics.failures
    assert metrics.hedges == ["tts cloud/voice -> cloud/voice: lost", "tts cloud/voice -> cloud/voice: won"]

    class Embedded:
        vendor, model, sample_rate, timeouts = "embedded", "piper", 8000, None

        async def stream(self, text: str) -> AsyncIterator[np.ndarray]:
            yield np.ones(80, dtype=np.int16)

    stalled, metrics = Stalling(answering=set()), TurnMetrics(call_id="c", index=2)
    pieces = [pcm async for _, pcm in failover.synthesize([stalled, Embedded()], "Hi.", metrics,
                                                          warmed(stalled))]
    assert stalled.requests == 2 and pieces[0][0] == 1 and metrics.vendors["tts"] == "embedded/piper"
    assert metrics.hedges == ["tts cloud/voice -> cloud/voice: lost",
                              "tts cloud/voice -> embedded/piper: won"]

    never = Stalling(answering=set())
    never.timeouts = Timeouts(first_token_s=1.0)
    metrics = TurnMetrics(call_id="c", index=1)
    with pytest.raises(Exception, match="no first result"):
        async for _ in failover.synthesize([never], "Hi.", metrics, warmed(never)):
            pass
    assert MAX_HEDGES == 2 and never.requests == 1 + MAX_HEDGES  # the hedges stand in for the retry
    assert metrics.hedges == ["tts cloud/voice -> cloud/voice: failed"] * 2
