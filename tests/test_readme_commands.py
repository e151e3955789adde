"""The README's quick-start commands are what CI runs, word for word: a green CI proves them."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", section, re.S)]


def ci_lines() -> list[str]:
    return [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]


def test_the_readme_has_a_demo_command_and_a_test_command():
    demo, tests = quick_start_commands()
    assert "\n" not in demo and demo.endswith("switchboard demo")
    assert "\n" not in tests and "python -m pytest" in tests


def test_ci_runs_the_readmes_commands_exactly_as_written():
    lines = ci_lines()
    for command in quick_start_commands():
        assert command in lines, f".ci/run must run the README's command as written: {command!r}"


def test_ci_installs_and_tests_by_no_other_path():
    readme = set(quick_start_commands())
    others = [line for line in ci_lines() if not line.startswith("#") and line not in readme
              and re.search(r"\bpip install\b|install\.sh|\bpytest\b", line)]
    assert others == [], f".ci/run installs or tests outside the README's commands: {others}"
