"""The package's shape: which room may import which (docs/architecture.md), and what a wheel installs."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "switchboard"

# each room of the package -> the rooms it may import (itself included); the entry points at the top
# (server, host, cli, caller, check, demo) may import anything
MAY_IMPORT = {
    "core": {"core"},
    "audio": {"audio", "core"},
    "providers": {"providers", "core", "audio"},
    "telephony": {"telephony", "core", "audio"},
    "callers": {"callers", "core", "audio"},  # the simulated caller's carrier wires (caller/ uses them)
    "store": {"store", "core"},
    "config": {"config", "core", "providers", "telephony"},
    "pipeline": {"pipeline", "core", "audio", "config", "providers"},
    "report": {"report", "core", "config", "store"},
    "web": {"web", "core", "report", "store"},
    "ops": {"ops", "core", "audio", "config", "pipeline", "store", "web"},
    # evals places calls with the simulated caller on the server, so it sits right under the entry points
    "evals": {"evals", "caller", "server", "demo", "logs", "core", "audio", "config", "providers", "store",
              "report"},
}
ENTRY_POINTS = {"server", "host", "cli", "caller", "check", "demo", "logs", "__main__", "__init__"}


def imports_of(path: Path) -> set[str]:
    """Every `switchboard.*` module a file imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("switchboard")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("switchboard"):
            found.add(node.module)
            if node.module == "switchboard":  # `from switchboard import caller`
                found |= {f"switchboard.{alias.name}" for alias in node.names}
    return found


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_room_imports_only_the_rooms_below_it() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        home = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if home in ENTRY_POINTS:
            continue
        assert home in MAY_IMPORT, f"{path}: a new room; add it to MAY_IMPORT and docs/architecture.md"
        wrong += [f"{path.relative_to(REPO)} imports {module}" for module in sorted(imports_of(path))
                  if room(module) not in MAY_IMPORT[home]]
    assert wrong == []


def test_plug_ins_never_import_the_call_engine() -> None:
    for plugins in ("providers", "telephony"):
        for path in (PACKAGE / plugins).rglob("*.py"):
            engine = [module for module in imports_of(path) if module.startswith(
                ("switchboard.pipeline", "switchboard.server", "switchboard.host"))]
            assert engine == [], f"{path.relative_to(REPO)} imports the call engine: {engine}"


def test_loading_the_config_loads_no_vendor_sdk() -> None:
    """Vendor modules register their config without importing their SDK: a pipeline loads only the SDKs it
    uses (they cost ~3 s to import)."""
    code = ("import sys; from switchboard.config import BUNDLED_CONFIG, load_config;"
            "load_config(BUNDLED_CONFIG);"
            "sdks = {'openai', 'anthropic', 'google', 'cohere', 'huggingface_hub'};"
            "print(sorted({m.split('.')[0] for m in sys.modules} & sdks))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


@pytest.mark.skipif(not (REPO / "pyproject.toml").is_file(), reason="needs the source tree")
def test_the_wheel_installs_one_package_with_its_data(tmp_path: Path) -> None:
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path),
                            str(REPO)], capture_output=True, text=True)
    if built.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {built.stderr.strip()[-300:]}")
    [wheel] = tmp_path.glob("switchboard-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert {name for name in top if not name.endswith(".dist-info")} == {"switchboard"}
    assert "switchboard/pipeline.yaml" in names  # the bundled default config
    assert "switchboard/web/static/dashboard.js" in names
    assert not any(name.startswith("switchboard/tests") for name in names)


def test_secrets_an_upstream_echoes_never_reach_the_log():
    """An SDK error that quotes the key, Twilio's basic auth in base64, a bearer header: all masked, in
    the message and in the exception's traceback alike."""
    import base64
    import io
    import logging

    from switchboard.logs import Redactor

    environ = {"OPENAI_API_KEY": "sk-proj-abcdef123456", "TWILIO_ACCOUNT_SID": "AC0123456789",
               "TWILIO_AUTH_TOKEN": "tw-secret-token", "HOME": "/root", "PORT": "5050"}
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(Redactor(environ))
    log = logging.getLogger("test.redaction")
    log.addHandler(handler)
    basic = base64.b64encode(b"AC0123456789:tw-secret-token").decode()
    try:
        try:
            raise RuntimeError("401: Incorrect API key provided: sk-proj-abcdef123456")
        except RuntimeError:
            log.exception("call %s: openai said %s", "CA1", "key sk-proj-abcdef123456 is wrong")
        log.warning("twilio: request failed with headers {'Authorization': 'Basic %s'}", basic)
        log.warning("upstream echoed Authorization: Bearer some-opaque-token-value")
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    for secret in ("sk-proj-abcdef123456", "tw-secret-token", basic, "some-opaque-token-value"):
        assert secret not in text
    assert "call CA1: openai said key *** is wrong" in text and "Incorrect API key provided: ***" in text
    assert "Traceback" in text and "/root" not in text.replace("/root/", "")  # HOME is not a secret
