"""Benchmark: what a tool call costs a turn besides the tool's own latency.

One `ToolBox.run` (arguments checked against the JSON Schema, templates filled, `${VAR}` read, a new
httpx client, the POST, the answer read, parsed and cut) against a fake booking API on 127.0.0.1 that
answers at once, so the figure is Switchboard's overhead plus a loopback round trip. Also the schema
check alone, and a call refused for invalid arguments (no request). Prints p50 / p95 in ms.

Run from the repository root:  python -m bench.tools [--calls 300]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from switchboard.config import parse_config
from switchboard.core.messages import ToolCall
from switchboard.pipeline.tools import ToolBox
from switchboard.server import running
from tests.fakes.tool_server import ToolServer

CONFIG = """
pipelines:
  default:
    stt: {{provider: pocketsphinx}}
    llm: {{provider: scripted}}
    tts: {{provider: espeak}}
    tools:
      - name: book_table
        description: Book a table.
        parameters:
          type: object
          properties:
            party_size: {{type: integer, minimum: 1, maximum: 20}}
            time: {{type: string, pattern: "^[0-2]?[0-9]:[0-5][0-9]$"}}
            name: {{type: string, maxLength: 80}}
          required: [party_size, time]
        http:
          url: "{url}/bookings"
          headers: {{Authorization: "Bearer ${{BENCH_BOOKING_KEY}}"}}
          body: {{party_size: "{{party_size}}", time: "{{time}}", name: "{{name}}"}}
          result_field: booking
"""


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered):7.3f} ms   p95 {p95:7.3f} ms   (n={len(ordered)})"


async def timed(box: ToolBox, call: ToolCall, n: int, status: str) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        outcome = await box.run(call)
        samples.append((time.perf_counter() - started) * 1000)
        assert outcome.status == status, outcome
    return samples


async def main(calls: int) -> None:
    os.environ.setdefault("BENCH_BOOKING_KEY", "bench-key")
    server = ToolServer()
    async with running(server.app()) as port:
        pipeline = parse_config(CONFIG.format(url=f"http://127.0.0.1:{port}")).pipelines["default"]
        box = ToolBox(pipeline.tools, pipeline.tool_use)
        good = ToolCall("c1", "book_table", {"party_size": 4, "time": "19:30", "name": "Patel"})
        bad = ToolCall("c2", "book_table", {"party_size": 40, "time": "half past seven"})
        await timed(box, good, 10, "ok")  # warm up
        ok = await timed(box, good, calls, "ok")
        invalid = await timed(box, bad, calls, "invalid")
    print(f"tool call, loopback HTTP, answer at once: {percentiles(ok)}")
    print(f"tool call refused (invalid arguments):    {percentiles(invalid)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    asyncio.run(main(parser.parse_args().calls))
