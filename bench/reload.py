"""Benchmark: what a config reload costs with the bundled pipeline (Moonshine, scripted LLM, Piper).

Builds the app from the bundled pipeline.yaml (copied to a temporary file) the way `serve` does, times
the first build of its providers (the embedded models load), then times `Reloader.reload()` after a
change to the greeting (the pipeline's settings changed, its providers' did not: the registry hands
back the running Moonshine and Piper) and after a change to Piper's speed (a new Piper instance on the
model already loaded). It also checks that the recogniser and the voice are the very same objects
after the first reload.

    python -m bench.reload            # ≈ 1 min (mostly the first model load)
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from switchboard.config.loading import BUNDLED_CONFIG, load_config
from switchboard.ops.reload import Reloader
from switchboard.server import create_app


async def main() -> None:
    path = Path(tempfile.mkdtemp(prefix="switchboard-reload-")) / "pipeline.yaml"
    text = BUNDLED_CONFIG.read_text(encoding="utf-8")
    path.write_text(text, encoding="utf-8")
    started = time.perf_counter()
    app = create_app(load_config(path), config_path=path)
    host = app.state.host
    await host.warm()
    cold = time.perf_counter() - started
    stt, tts = host.pipelines["default"].stt[0].provider, host.pipelines["default"].tts[0].provider

    reloader = Reloader(host, path)
    path.write_text(_with_greeting(text, "Hello, this line was reloaded."), encoding="utf-8")
    started = time.perf_counter()
    result = await reloader.reload()
    greeting = time.perf_counter() - started
    assert result.error is None, result.error
    now = host.pipelines["default"]
    same = (now.stt[0].provider is stt, now.tts[0].provider is tts)

    path.write_text(_with_greeting(text, "Hello again.").replace("speed: 1.0", "speed: 1.1", 1),
                    encoding="utf-8")
    started = time.perf_counter()
    result = await reloader.reload()
    voice = time.perf_counter() - started
    assert result.error is None, result.error

    print(f"first build and warm-up (models load):   {cold * 1000:8.0f} ms")
    print(f"reload, greeting changed:                {greeting * 1000:8.0f} ms  "
          f"(same recogniser: {same[0]}, same voice: {same[1]})")
    print(f"reload, Piper's speed changed:           {voice * 1000:8.0f} ms")
    print(f"ratio first build / greeting reload:     {cold / greeting:8.1f}x")


def _with_greeting(text: str, greeting: str) -> str:
    """The bundled file with the default pipeline's greeting replaced (its first `greeting:` line)."""
    lines = text.splitlines(keepends=True)
    for index, line in enumerate(lines):
        if line.lstrip().startswith("greeting:"):
            indent = line[: len(line) - len(line.lstrip())]
            lines[index] = f'{indent}greeting: "{greeting}"\n'
            break
    return "".join(lines)


if __name__ == "__main__":
    asyncio.run(main())
