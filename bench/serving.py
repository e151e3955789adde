"""Benchmarks' shared pieces: a real `switchboard serve` in a subprocess, and a /healthz probe."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx


@dataclass(frozen=True)
class Served:
    port: int
    pid: int

    def rss_mb(self) -> float:
        """The server process's resident memory now."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def server(config_text: str, name: str, folder: Path) -> AsyncIterator[Served]:
    """`switchboard serve` in a subprocess on 127.0.0.1 with `config_text` as its pipeline.yaml, its
    working directory (and call store) `folder`, its log `folder/<name>.log`."""
    config = folder / f"{name}.yaml"
    config.write_text(config_text)
    port = free_port()
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1"}
    log = (folder / f"{name}.log").open("w")
    process = subprocess.Popen(  # noqa: ASYNC220
        [Path(sys.executable).parent / "switchboard", "serve", "--config", config, "--insecure-dev"],
        env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=log)
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(600):
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError(f"the server did not start; see {folder}")
        yield Served(port, process.pid)
    finally:
        process.terminate()
        process.wait(10)
        log.close()


async def probe(port: int, until: asyncio.Event) -> list[float]:
    """/healthz answer times (ms), one request every 50 ms."""
    times = []
    async with httpx.AsyncClient(timeout=60) as client:
        while not until.is_set():
            started = time.perf_counter()
            await client.get(f"http://127.0.0.1:{port}/healthz")
            times.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.05)
    return times
