"""Benchmark: eval throughput on the embedded default, and the judge's tokens per call.

Runs the bundled evals.yaml (three scripted scenarios, `--calls` calls each) against the bundled
pipeline.yaml on its embedded engines (Moonshine, the scripted responder, Piper) through an in-process
server, once per `--concurrency`, with an LLM judge on the OpenAI fake (tests/fakes/openai_fake.py,
answering a fixed valid verdict), and prints per concurrency: calls, wall time, calls per minute, the
pass rate, the voice-to-voice p50 (how far the embedded engines fell behind), the judge's tokens per
call (in/out, as the fake counts them: words of the prompt and of its answer; a real tokenizer counts
roughly 1.3 tokens per English word), and each failing check with its reason and count.

    python -m bench.evals [--concurrency 1,4] [--calls 1]

Calls run at real time (the server paces its audio), so a three-line call lasts 15-25 s whatever the
machine; throughput grows with concurrency until the CPU (Moonshine and Piper) is the limit. Quote ratios
measured side by side in one run on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from switchboard.config import BUNDLED_CONFIG, load_config
from switchboard.evals.runner import Runner
from switchboard.evals.scenarios import BUNDLED_EVALS, DEFAULT_RUBRIC, Judge, load_evals
from switchboard.report.evals import build_summary
from switchboard.server import running
from switchboard.store import CallStore
from tests.fakes.common import Faults
from tests.fakes.openai_fake import OpenAIScript, make_app


def verdict(body: dict[str, Any]) -> str:
    """A valid answer naming every rubric item and criterion the judge was asked about."""
    criteria = [line[2:] for line in body["messages"][0]["content"].splitlines() if line.startswith("- ")
                and line[2:].split(":")[0] not in DEFAULT_RUBRIC]
    return json.dumps({"scores": {name: {"score": 4, "evidence": "-"} for name in DEFAULT_RUBRIC},
                       "criteria": {text: {"met": True, "evidence": "-"} for text in criteria}})


async def one_run(concurrency: int, calls: int, base_url: str, workdir: Path) -> dict[str, Any]:
    evals = load_evals(BUNDLED_EVALS)
    for scenario in evals.scenarios:
        scenario.calls = calls
    evals.judge = Judge.model_validate({"llm": {"provider": "openai", "model": "gpt-4o-mini",
                                                "base_url": base_url}})
    store = CallStore(str(workdir / f"bench-{concurrency}.db"))
    await store.open()
    runner = Runner(evals, load_config(BUNDLED_CONFIG), ["default"], store, run=f"bench-{concurrency}",
                    concurrency=concurrency)
    runner.progress = lambda _result: None  # type: ignore[assignment]
    started = time.monotonic()
    results = await runner.run_all()
    wall = time.monotonic() - started
    summary = build_summary(runner.run, await store.query_eval_results(runner.run))
    await store.close()
    judged = [r.judge for r in results if r.judge is not None]
    failed = Counter(f"{r.scenario}: {check.name} ({check.detail})" for r in results for check in r.checks
                     if not check.passed)
    return {"calls": len(results), "wall_s": wall, "per_min": 60 * len(results) / wall,
            "passed": sum(r.passed is True for r in results) / len(results),
            "v2v_p50_ms": summary.arms[0].v2v_p50_ms,
            "tokens_in": sum(j.tokens_in for j in judged) / max(1, len(judged)),
            "tokens_out": sum(j.tokens_out for j in judged) / max(1, len(judged)), "failed": failed}


async def main(concurrencies: list[int], calls: int) -> None:
    os.environ.setdefault("OPENAI_API_KEY", "sk-bench-fake")
    script = OpenAIScript()
    script.respond = verdict
    print(f"{'concurrency':>11}  {'calls':>5}  {'wall s':>7}  {'calls/min':>9}  {'passed':>6}  "
          f"{'v2v p50 ms':>10}  {'judge tokens in/out per call':>28}")
    async with running(make_app(Faults(), script)) as port:
        with tempfile.TemporaryDirectory() as tmp:
            for concurrency in concurrencies:
                row = await one_run(concurrency, calls, f"http://127.0.0.1:{port}/v1", Path(tmp))
                print(f"{concurrency:>11}  {row['calls']:>5.0f}  {row['wall_s']:>7.1f}  "
                      f"{row['per_min']:>9.2f}  {100 * row['passed']:>5.0f}%  "
                      f"{row['v2v_p50_ms'] or 0:>10.0f}  "
                      f"{row['tokens_in']:>18.0f} / {row['tokens_out']:.0f}", flush=True)
                for check, count in sorted(row["failed"].items()):
                    print(f"{'':>11}  failed ×{count}: {check}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,4", help="comma-separated (default 1,4)")
    parser.add_argument("--calls", type=int, default=1, help="calls per scenario (default 1)")
    args = parser.parse_args()
    asyncio.run(main([int(n) for n in args.concurrency.split(",")], args.calls))
