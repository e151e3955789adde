"""Benchmark: the malformed-frame campaign, kept so the next change can be checked the same way.

A real `switchboard serve` (subprocess, 127.0.0.1, the bundled offline pipeline) gets, from many
connections at once, on both carriers' routes (/media-stream for Twilio, /exotel): a valid start (some
with the callSid of another live connection, some with 10 kB or lone-surrogate caller numbers), then a mix
of malformed frames (not JSON, binary, JSON nested 5,000 deep, 1e400 and negative numbers, a 600 kB
frame, bad base64, unknown events, a stop without its stream id, a second start, a flood of digits) and
a close. Meanwhile one well-behaved caller asks the script a question, and a probe asks /healthz every
50 ms. Printed: frames sent, connections refused or ended by the server, whether the server stayed up,
the good caller's reply delay, /healthz answer times, GET /api/calls after the campaign, and the log the
campaign cost (bytes per malformed frame); then the server's memory before, during and after `--idle`
sockets that sent `start` and nothing more.

    python -m bench.fuzz                       # 200 connections × 40 frames, then 300 idle sockets
    python -m bench.fuzz --connections 1000 --frames 16
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import random
import statistics
import tempfile
import uuid
from pathlib import Path

import httpx
import numpy as np
import websockets

from bench.serving import Served, probe, server
from switchboard.caller import BotAudioStarted, CallerEvent, CallerLine, run_call
from switchboard.config import default_config_path

SILENCE = base64.b64encode(b"\xff" * 160).decode()


def malformed(rng: random.Random, sid: str, exotel: bool) -> str | bytes:
    """One frame from the campaign's mix."""
    media = "media"
    sid_key = "stream_sid" if exotel else "streamSid"
    choices = [
        lambda: "garbage{",
        lambda: bytes(rng.randrange(256) for _ in range(64)),
        lambda: '{"event":"media","media":' + "[" * 5000 + "]" * 5000 + "}",
        lambda: json.dumps({"event": media, sid_key: sid, "media": {"payload": SILENCE, "timestamp": 1.5}})
        .replace("1.5", "1e400"),  # a number JSON allows and a float can't hold
        lambda: json.dumps({"event": media, sid_key: sid, "media": {"payload": SILENCE, "timestamp": -5}}),
        lambda: json.dumps({"event": media, sid_key: sid, "media": {"payload": "%%%not base64"}}),
        lambda: "x" * (600 * 1024),
        lambda: json.dumps({"event": "nonsense", sid_key: sid}),
        lambda: json.dumps({"event": "stop"}),
        lambda: json.dumps({"event": "mark", sid_key: sid, "mark": {"name": "m" * 100_000}}),
        lambda: json.dumps({"event": "dtmf", sid_key: sid, "dtmf": {"digit": "\ud800", "duration": 1e308}}),
        lambda: json.dumps({"event": "dtmf", sid_key: sid, "dtmf": {"digit": rng.choice("0123456789")}}),
        lambda: json.dumps({"event": "start", sid_key: sid, "start": {"callSid": "again"}}),
        lambda: json.dumps({"event": media, sid_key: sid, "media": {"payload": SILENCE}}),  # a good one
    ]
    return rng.choice(choices)()


def start_frame(rng: random.Random, sid: str, call_sid: str, exotel: bool) -> str:
    caller = rng.choice(["+15550001111", "\ud800" * 10, "9" * 10_000])
    if exotel:
        return json.dumps({"event": "start", "stream_sid": sid, "start": {
            "stream_sid": sid, "call_sid": call_sid, "from": caller, "to": "+15550002222",
            "media_format": {"encoding": "audio/x-raw", "sample_rate": "8000"}}})
    return json.dumps({"event": "start", "streamSid": sid, "start": {
        "streamSid": sid, "callSid": call_sid, "customParameters": {"from": caller, "to": "+15550002222"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})


async def attacker(port: int, index: int, frames: int, call_sids: list[str], counts: dict[str, int]) -> None:
    rng = random.Random(index)
    exotel = index % 2 == 1
    url = f"ws://127.0.0.1:{port}{'/exotel' if exotel else '/media-stream'}"
    sid = f"MZ{uuid.uuid4().hex}"
    call_sid = rng.choice(call_sids) if call_sids and rng.random() < 0.1 else f"CA{uuid.uuid4().hex}"
    call_sids.append(call_sid)
    try:
        async with websockets.connect(url, max_size=None, open_timeout=30) as ws:
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            await ws.send(start_frame(rng, sid, call_sid, exotel))
            for _ in range(frames):
                await ws.send(malformed(rng, sid, exotel))
                counts["frames"] += 1
                await asyncio.sleep(0.005)
        counts["completed"] += 1
    except websockets.ConnectionClosed:
        counts["closed_by_server"] += 1
    except (OSError, TimeoutError):
        counts["refused"] += 1


async def idle_sockets(served: Served, count: int) -> tuple[float, float, float]:
    """Open `count` sockets that send `start` and then nothing; the server's RSS before, while they are
    open, and after they have closed (3 s later)."""
    before = served.rss_mb()
    async with contextlib.AsyncExitStack() as stack:
        for n in range(count):
            ws = await stack.enter_async_context(websockets.connect(
                f"ws://127.0.0.1:{served.port}/media-stream", open_timeout=30))
            await ws.send(start_frame(random.Random(n), f"MZidle{n}", f"CAidle{uuid.uuid4().hex}", False))
        await asyncio.sleep(2)
        during = served.rss_mb()
    await asyncio.sleep(3)
    return before, during, served.rss_mb()


async def campaign(connections: int, frames: int, concurrency: int, idle: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-fuzz-"))
    async with server(default_config_path().read_text(), "fuzz", folder) as served:
        port = served.port
        log = folder / "fuzz.log"
        log_before = log.stat().st_size
        done = asyncio.Event()
        probing = asyncio.create_task(probe(port, done))
        delays: list[float] = []

        def good_event(event: CallerEvent) -> None:
            if isinstance(event, BotAudioStarted) and event.delay_after_caller_ms is not None:
                delays.append(event.delay_after_caller_ms)

        good = asyncio.create_task(run_call(
            f"ws://127.0.0.1:{port}/media-stream", [CallerLine("what are your opening hours")],
            on_event=good_event, hangup_timeout_s=3, reply_timeout_s=60))
        counts = {"frames": 0, "completed": 0, "closed_by_server": 0, "refused": 0}
        call_sids: list[str] = []
        gate = asyncio.Semaphore(concurrency)

        async def one(index: int) -> None:
            async with gate:
                await attacker(port, index, frames, call_sids, counts)

        await asyncio.gather(*(one(i) for i in range(connections)))
        await good
        done.set()
        healthz = await probing
        async with httpx.AsyncClient(timeout=30) as client:
            health = await client.get(f"http://127.0.0.1:{port}/healthz")
            calls = await client.get(f"http://127.0.0.1:{port}/api/calls")
        log_bytes = log.stat().st_size - log_before
        memory = await idle_sockets(served, idle) if idle else None
    lines = log.read_text(errors="replace").splitlines()
    print(f"{connections} connections × {frames} frames ({concurrency} at once), half Twilio, half Exotel")
    print(f"  malformed frames sent         {counts['frames']}")
    print(f"  connections                   {counts['completed']} completed, {counts['closed_by_server']} "
          f"closed by the server, {counts['refused']} refused")
    print(f"  server after the campaign     /healthz {health.status_code} {health.json()}, "
          f"/api/calls {calls.status_code}")
    print(f"  the good caller's reply       {delays[0]:.0f} ms after it stopped talking" if delays
          else "  the good caller's reply       NONE")
    print(f"  /healthz while under attack   p50 {statistics.median(healthz):.0f} ms, "
          f"p99 {np.percentile(healthz, 99):.0f} ms, max {max(healthz):.0f} ms ({len(healthz)} probes)")
    print(f"  log written                   {log_bytes / 1e6:.2f} MB, "
          f"{log_bytes / max(counts['frames'], 1):.0f} bytes per malformed frame, "
          f"{sum('Traceback' in line for line in lines)} tracebacks")
    if memory:
        print(f"  {idle} idle sockets (start, then nothing): server RSS {memory[0]:.0f} MB before, "
              f"{memory[1]:.0f} MB while open, {memory[2]:.0f} MB after they closed")
    print(f"  the server's log              {log}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--idle", type=int, default=300, help="idle sockets opened after the campaign")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(campaign(args.connections, args.frames, args.concurrency, args.idle))
