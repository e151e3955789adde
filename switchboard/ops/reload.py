"""Changing pipeline.yaml without a restart: SIGHUP, `POST /api/config/reload`, `serve --watch`.

`Reloader.reload()` reads and validates the file. If it is valid, the pipelines whose settings changed
are built (providers through the registry, which hands back the running instance for identical
settings: no model is loaded again for Moonshine or Piper), their new recognisers warmed and new MCP
servers listed, and only then does the host switch: calls that start afterwards use the new pipelines,
calls in progress keep the ones they started with (they hold their own config and providers). If it is
not valid (or a provider can't be built), nothing changes and the error, naming the key and the fix, is
logged and returned.

Only `pipelines:` is reloaded. The other top-level keys (numbers, default_pipeline, database_url, the
carriers' sections, limits) are wired into the server at start-up: a change to them is reported as
needing a restart and the running values stay (a reload that removes a pipeline they still route to is
refused). Every call records the short hash of its pipeline's effective settings and of the file.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from switchboard.audio import smart_turn
from switchboard.config import Config, ConfigError, PipelineConfig
from switchboard.config.loading import load_versioned, pipeline_version
from switchboard.config.schema import SplitPipelineConfig
from switchboard.core.errors import StartupError
from switchboard.pipeline.build import build_providers, build_tools, mcp_clients
from switchboard.web import Auth

log = logging.getLogger("switchboard.ops")

WATCH_EVERY_S = 1.0  # `serve --watch`: how often the file's modification time is looked at


class Host(Protocol):
    """What the reload needs of the server's `CallHost`."""

    config: Config
    pipelines: dict[str, Any]  # name -> PipelineProviders / RealtimeProviders
    versions: dict[str, str]  # name -> pipeline_version
    config_file: str  # the file's short hash
    mcp: Any  # McpClients | None

    def warm_lines(self) -> None: ...


@dataclass
class Reloaded:
    """What a reload did: `error` (nothing changed), or the pipelines changed and keys needing a restart."""

    error: str | None = None
    changed: list[str] = field(default_factory=list)  # pipelines added or changed
    removed: list[str] = field(default_factory=list)
    restart_needed: list[str] = field(default_factory=list)  # top-level keys not reloaded
    config_file: str = ""

    def json(self) -> dict[str, Any]:
        if self.error is not None:
            return {"reloaded": False, "error": self.error}
        return {"reloaded": True, "changed": self.changed, "removed": self.removed,
                "restart_needed": self.restart_needed, "config_file": self.config_file}


def versions(config: Config) -> dict[str, str]:
    return {name: pipeline_version(pipeline) for name, pipeline in config.pipelines.items()}


class Reloader:
    """Reloads `path` into `host`, one reload at a time."""

    def __init__(self, host: Host, path: str | Path) -> None:
        self.host, self.path = host, Path(path)
        self._lock = asyncio.Lock()
        self._watching: asyncio.Task | None = None
        self.reloads = 0  # applied

    async def reload(self) -> Reloaded:
        async with self._lock:
            try:
                result = await self._reload()
            except (ConfigError, StartupError) as exc:
                result = Reloaded(error=str(exc))
            except Exception as exc:  # a provider that fails to build in another way: keep running
                log.exception("config reload failed")
                result = Reloaded(error=f"{type(exc).__name__}: {exc}")
        if result.error is not None:
            log.error("config reload of %s refused; the running configuration stays:\n%s", self.path,
                      result.error)
        else:
            log.warning("config reloaded from %s (file %s): changed %s; removed %s%s", self.path,
                        result.config_file, ", ".join(result.changed) or "none",
                        ", ".join(result.removed) or "none",
                        f"; needs a restart to apply: {', '.join(result.restart_needed)}"
                        if result.restart_needed else "")
        return result

    async def _reload(self) -> Reloaded:
        host = self.host
        new, file_hash = await asyncio.to_thread(load_versioned, self.path)
        config, restart_needed = _merge(host.config, new)
        new_versions = versions(config)
        changed = [name for name, version in new_versions.items() if host.versions.get(name) != version]
        removed = [name for name in host.versions if name not in new_versions]
        mcp = host.mcp if host.mcp is not None else mcp_clients(config.pipelines.values())
        pipelines = {name: each for name, each in host.pipelines.items()
                     if name in config.pipelines and name not in changed}
        for name in changed:
            pipeline = config.pipelines[name]
            if isinstance(pipeline, SplitPipelineConfig):  # a split only draws the others
                continue
            built = await asyncio.to_thread(build_providers, pipeline)  # models load off the loop
            built.tools = build_tools(pipeline, mcp)
            pipelines[name] = built
        await _warm(config, [pipelines[name] for name in changed if name in pipelines])
        if mcp is not None:
            try:
                await mcp.start()  # the servers new in this file; a running one is not asked again
                clashes = [line for name in changed if name in pipelines and pipelines[name].tools is not None
                           for line in pipelines[name].tools.clashes()]
                if clashes:
                    raise StartupError("; ".join(dict.fromkeys(clashes)))
            except BaseException:
                if mcp is not host.mcp:  # made for this reload: its sessions go with it
                    await mcp.aclose()
                raise
        # the switch: no await from here on, so no call starts halfway through it
        host.config, host.pipelines, host.mcp = config, pipelines, mcp
        host.versions, host.config_file = new_versions, file_hash
        host.warm_lines()
        self.reloads += 1
        return Reloaded(changed=changed, removed=removed, restart_needed=restart_needed,
                        config_file=file_hash)

    def on_sighup(self, loop: asyncio.AbstractEventLoop) -> None:
        """Reload on SIGHUP (the supervisor of `--workers N` passes it to every worker)."""
        loop.add_signal_handler(signal.SIGHUP, self._start_reload)

    def _start_reload(self) -> None:
        log.warning("SIGHUP: reloading %s", self.path)
        task = asyncio.get_running_loop().create_task(self.reload(), name="config-reload")
        task.add_done_callback(lambda done: done.exception() if not done.cancelled() else None)

    def watch(self, every_s: float = WATCH_EVERY_S) -> None:
        """`serve --watch`: reload whenever the file's modification time (or size) changes."""
        self._watching = asyncio.get_running_loop().create_task(self._watch(every_s), name="config-watch")

    async def _watch(self, every_s: float) -> None:
        seen = _stamp(self.path)
        while True:
            await asyncio.sleep(every_s)
            stamp = _stamp(self.path)
            if stamp != seen and stamp is not None:
                seen = stamp
                log.warning("%s changed: reloading", self.path)
                await self.reload()

    def route(self, auth: Auth) -> Route:
        """`POST /api/config/reload`: the API token (bearer or the dashboard's login); off without one
        (SIGHUP still works). 200 with what changed, or 422 with the error and nothing changed."""

        async def reload(request: Request) -> Response:
            if auth.open:
                return JSONResponse({"error": f"the reload API is off: set {auth.env_name} on the server and "
                                              "send it as 'Authorization: Bearer <token>' (or send SIGHUP)"},
                                    status_code=403)
            if not auth.allows(request):
                return auth.denied(request, page=False)
            result = await self.reload()
            return JSONResponse(result.json(), status_code=200 if result.error is None else 422)

        return Route("/api/config/reload", reload, methods=["POST"])

    async def aclose(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
            await asyncio.gather(self._watching, return_exceptions=True)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None  # being replaced: look again next time
    return stat.st_mtime_ns, stat.st_size


def _merge(running: Config, new: Config) -> tuple[Config, list[str]]:
    """The running configuration with the new file's pipelines, and the other keys that changed (they
    keep their running values until a restart). Raises ConfigError when the running routing would
    point at a pipeline the new file no longer has."""
    restart_needed = [key for key in type(running).model_fields if key != "pipelines"
                      and getattr(running, key) != getattr(new, key)]
    merged = running.model_copy(update={"pipelines": new.pipelines})
    routed = {running.default_pipeline: "default_pipeline",
              **{pipeline: f"numbers.{number}" for number, pipeline in running.numbers.items()}}
    gone = [f"{where} routes calls to {name!r}" for name, where in routed.items()
            if name not in new.pipelines]
    if gone:
        raise ConfigError(f"pipelines: the new file lacks a pipeline the running routing needs "
                          f"({'; '.join(gone)}; default_pipeline and numbers: change only at a restart): "
                          "keep the pipeline, or restart the server to apply the new routing")
    return merged, restart_needed


async def _warm(config: Config, pipelines: list[Any]) -> None:
    """New recognisers' decoders and the end-of-turn model, before any call can use them."""
    for stt in dict.fromkeys(stt for each in pipelines for stt in each.all_stt()):
        await stt.warm()
    if any(isinstance(p, PipelineConfig) and p.kind == "cascade" and p.turn.audio_model == "smart-turn-v3"
           for p in config.pipelines.values()):
        await asyncio.to_thread(smart_turn.warm)
