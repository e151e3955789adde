"""GET /metrics through the real app: a call's counts, latencies by vendor, a provider failure and the
fallback that served, the store's queue, the loop's lag, refusals; guarded by SWITCHBOARD_API_TOKEN;
summed over processes in multiprocess mode."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from switchboard.caller import CallerLine, run_call
from switchboard.config import parse_config
from switchboard.pipeline.call import Providers
from switchboard.server import create_app, running
from tests.fakes.instant import InstantLLM, InstantSTT, InstantTTS

REPO = Path(__file__).resolve().parent.parent
CONFIG = """
pipelines:
  default:
    greeting: "Hi."
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
"""


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a Prometheus exposition: (name, labels) -> value."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


async def test_a_call_shows_up_in_the_metrics(speech_wav: str, tmp_path: Path) -> None:
    backup = InstantSTT("goodbye")
    backup.model = "backup"
    providers = Providers(InstantSTT(fail=True), InstantLLM(), InstantTTS(ms_per_char=10),
                          fallback_stt=[backup])
    app = create_app(parse_config(CONFIG), providers={"default": providers},
                     store_url=str(tmp_path / "calls.db"))
    async with running(app) as port, httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        result = await run_call(f"ws://127.0.0.1:{port}/media-stream", [CallerLine(wav=speech_wav)],
                                hangup_timeout_s=3, on_event=lambda event: None)
        assert result.hangup  # "goodbye": the bot ended the call
        await app.state.host.wait_idle()
        answer = await http.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    found = samples(answer.text)
    assert value(found, "switchboard_calls_started_total", carrier="twilio", pipeline="default") == 1
    assert value(found, "switchboard_calls_ended_total", carrier="twilio", pipeline="default",
                 outcome="bot_hung_up") == 1
    assert value(found, "switchboard_calls_active") == 0
    assert value(found, "switchboard_turns_total", kind="greeting") == 1
    assert value(found, "switchboard_turns_total", kind="reply") == 1
    assert value(found, "switchboard_voice_to_voice_seconds_count", stt="instant/backup", llm="instant/echo",
                 tts="instant/tone") == 1
    assert value(found, "switchboard_stage_seconds_count", stage="stt", vendor="instant/backup") == 1
    assert value(found, "switchboard_stage_seconds_count", stage="tts", vendor="instant/tone") >= 1
    # the primary STT failed (twice: one retry), the backup served
    assert value(found, "switchboard_provider_failures_total", stage="stt", vendor="instant/fixed",
                 kind="server") == 2
    assert value(found, "switchboard_fallbacks_total", stage="stt", vendor="instant/backup") == 1
    assert value(found, "switchboard_barge_ins_total") == 0
    assert value(found, "switchboard_event_loop_lag_seconds_count") >= 1  # sampled every 0.25 s
    assert value(found, "switchboard_store_queue_depth") is not None
    assert value(found, "switchboard_store_dropped_writes_total") == 0


async def test_metrics_are_guarded_like_the_dashboard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_API_TOKEN", "s3cret-token")
    config = parse_config("max_concurrent_calls: 1\n" + CONFIG)
    app = create_app(config, providers={"default": Providers(InstantSTT(), InstantLLM(), InstantTTS())})
    app.state.ops.admission.draining = True
    async with running(app) as port, httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        await http.post("/incoming-call", data={"CallSid": "CA1"})  # refused: draining
        assert (await http.get("/metrics")).status_code == 401
        wrong = await http.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        answer = await http.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
    assert answer.status_code == 200
    assert value(samples(answer.text), "switchboard_admission_refusals_total", carrier="twilio",
                 where="webhook", reason="draining") == 1


WORKERS = """
import os, sys
from switchboard.ops.metrics import Metrics
metrics = Metrics()
child = os.fork()  # two processes (two workers), each takes a call; the parent reports
metrics.call_started("twilio", "default")
if child == 0:
    os._exit(0)
os.waitpid(child, 0)
Metrics.process_exited(child)  # a worker gone: its live gauges go, its counts stay
sys.stdout.write(metrics.exposition().decode())
"""


def test_multiprocess_mode_sums_every_process(tmp_path: Path) -> None:
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": ""}
    done = subprocess.run([sys.executable, "-c", WORKERS], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=60, check=True)
    found = samples(done.stdout)
    assert value(found, "switchboard_calls_started_total", carrier="twilio", pipeline="default") == 2
    assert value(found, "switchboard_calls_active") == 1
