"""`switchboard serve --workers N`: N server processes on one listening socket, one deployment.

The parent binds the socket, starts N worker processes (multiprocessing "spawn": each imports and builds
its own app), and only supervises: SIGTERM and SIGINT are passed on to every worker (each drains its own
calls, ops/drain.py), SIGHUP too (each reloads pipeline.yaml, ops/reload.py), a worker that dies unasked
is replaced, and the parent exits once every worker has (0 when all of them exited 0). Workers share
state only through the call store, so N > 1 needs a PostgreSQL `database_url` (`check_workers`);
Prometheus metrics are summed over the workers through PROMETHEUS_MULTIPROC_DIR (a fresh temporary
directory unless it is set, then emptied at start).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from switchboard.config import Config
from switchboard.core.errors import StartupError
from switchboard.ops.metrics import MULTIPROC_ENV, Metrics

log = logging.getLogger("switchboard.ops")

STARTUP_FAILURE = 3  # a worker's exit code when it could not start serving (as uvicorn's)
RESTART_PAUSE_S = 1.0  # between a worker dying unasked and its replacement (a crash loop stays slow)

WorkerTarget = Callable[[socket.socket], None]  # runs one server on the socket; module-level (pickled)


def check_workers(config: Config, workers: int) -> None:
    """Refuse `--workers N` (N > 1) when the processes could not share one call store."""
    if workers < 1:
        raise StartupError(f"--workers {workers}: must be at least 1")
    url = config.database_url
    if workers > 1 and url and not url.startswith(("postgresql://", "postgresql+asyncpg://", "postgres://")):
        raise StartupError(
            f"--workers {workers} needs a call store every process can share, but database_url is {url!r} "
            "(SQLite: one process only). Set database_url: postgresql://user:password@host/db in "
            "pipeline.yaml (docs/deploy.md), or serve with --workers 1.")
    if workers > 1 and not url:
        log.warning("--workers %d with database_url off: nothing is recorded, and each worker's dashboard "
                    "shows only its own calls", workers)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def metrics_dir() -> Path:
    """PROMETHEUS_MULTIPROC_DIR for the workers: the one set (emptied), or a fresh one."""
    given = os.environ.get(MULTIPROC_ENV)
    path = Path(given) if given else Path(tempfile.mkdtemp(prefix="switchboard-metrics-"))
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):  # counts left by an earlier run would be added to ours
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(path)  # the workers inherit it
    return path


class Supervisor:
    def __init__(self, workers: int, target: WorkerTarget, sock: socket.socket) -> None:
        self.count, self.target, self.sock = workers, target, sock
        self.spawn = multiprocessing.get_context("spawn")
        self.processes: list[multiprocessing.process.BaseProcess] = []
        self.stopping: int | None = None  # the signal we were asked to stop with

    def _start_one(self) -> multiprocessing.process.BaseProcess:
        process = self.spawn.Process(target=self.target, args=(self.sock,), name="switchboard-worker")
        process.start()
        log.info("worker %d started", process.pid)
        return process

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self.stopping = sig
        for process in self.processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, sig)  # each worker drains its own calls

    def _on_sighup(self, sig: int, frame: FrameType | None) -> None:
        log.warning("SIGHUP: every worker reloads the configuration")
        for process in self.processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGHUP)  # each reloads its own (ops/reload.py)

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGHUP, self._on_sighup)
        self.processes = [self._start_one() for _ in range(self.count)]
        if self.stopping is not None:  # asked to stop while they were starting: tell them all
            self._on_signal(self.stopping, None)
        codes: dict[int, int] = {}
        while len(codes) < len(self.processes):
            time.sleep(0.2)
            for index, process in enumerate(self.processes):
                if process.is_alive() or index in codes or process.exitcode is None:
                    continue
                Metrics.process_exited(process.pid or 0)
                if self.stopping is None and process.exitcode == STARTUP_FAILURE:
                    log.error("worker %d could not start serving: stopping", process.pid)
                    self._on_signal(signal.SIGTERM, None)  # the others would fail the same way
                if self.stopping is None:
                    log.error("worker %d died (exit code %s): starting another", process.pid,
                              process.exitcode)
                    time.sleep(RESTART_PAUSE_S)
                    self.processes[index] = self._start_one()
                    continue
                codes[index] = process.exitcode
                log.info("worker %d exited (%s)", process.pid, process.exitcode)
        return 0 if all(code == 0 for code in codes.values()) else 1


def run_workers(workers: int, host: str, port: int, target: WorkerTarget) -> int:
    """Serve on host:port with `workers` processes each running `target(socket)`; returns the exit code."""
    try:
        sock = bind(host, port)
    except OSError as exc:
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    created = MULTIPROC_ENV not in os.environ
    directory = metrics_dir()
    log.info("serving on %s:%d with %d workers (metrics summed in %s)", host, port, workers, directory)
    try:
        return Supervisor(workers, target, sock).run()
    finally:
        sock.close()
        if created:
            shutil.rmtree(directory, ignore_errors=True)
