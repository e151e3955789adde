"""The command line's entry points honour --config and refuse what they don't know."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

BROKEN = """\
pipelines:
  default:
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espek}
"""


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_server_py_and_serve_read_the_config_they_are_given(tmp_path: Path) -> None:
    other = tmp_path / "other.yaml"
    other.write_text(BROKEN)
    for command in ([str(REPO / "server.py")], ["-m", "switchboard", "serve"]):
        done = run(*command, "--config", str(other), cwd=tmp_path)
        assert done.returncode != 0
        assert f"{other}" in done.stderr and "tts: unknown provider 'espek'" in done.stderr


def test_unknown_arguments_are_an_error(tmp_path: Path) -> None:
    for command in ([str(REPO / "server.py")], ["-m", "switchboard", "serve"]):
        done = run(*command, "--confg", "x.yaml", cwd=tmp_path)
        assert done.returncode == 2
        assert "unrecognized arguments: --confg x.yaml" in done.stderr
