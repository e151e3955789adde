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


# --- the demo's tool call, fast: the bundled pipeline's rule and tool, instant recognition and voice -------


async def test_the_demo_booking_line_books_through_the_tool_and_speaks_the_reference(tmp_path: Path) -> None:
    """The demo's booking line on the bundled pipeline, with the demo's booking service: the scripted rule
    calls book_table, the booking arrives at the service, and its reference is spoken."""
    import numpy as np

    from switchboard.audio.wav import write_wav
    from switchboard.caller import CallerLine
    from switchboard.config import default_config_path, load_config
    from switchboard.demo import booking_service
    from switchboard.pipeline.call import Providers
    from switchboard.providers.scripted import ScriptedLLM
    from tests import calls
    from tests.fakes.instant import InstantSTT, InstantTTS
    from tests.speech import quiet, speech_like

    config = load_config(default_config_path())
    pipeline = config.pipeline()
    wav = tmp_path / "line.wav"
    write_wav(wav, np.concatenate([quiet(0.05), speech_like(0.5), quiet(0.05, seed=1)]), 8000)
    providers = Providers(InstantSTT("For four people at seven."), ScriptedLLM(pipeline.llm),
                          InstantTTS(ms_per_char=5))
    async with booking_service() as bookings:
        _, turns = await calls.place_call(config, [CallerLine(wav=str(wav))], providers, hangup_timeout_s=0.5,
                                          on_event=lambda e: None)
    (booking,) = bookings.made
    assert (booking["party_size"], booking["time"]) == ("four", "seven")
    booked = turns[1]
    assert booked.tools_used == ["book_table:ok"]
    assert booked.reply_heard.startswith("Booked: a table for four at seven. Your reference is 1042.")


def test_the_demo_verdict_needs_the_tool_call_and_its_result_spoken() -> None:
    from switchboard.caller import CallResult
    from switchboard.cli import DEMO_LINES, demo_went_as_scripted
    from switchboard.core.metrics import TurnMetrics

    def turn(index: int, heard: str, **facts) -> TurnMetrics:
        return TurnMetrics(call_id="CA1", index=index, kind="reply", transcript=f"line {index}",
                           reply_heard=heard, **facts)

    booking = {"reference": "1042", "summary": "a table for four at seven"}
    turns = [turn(n, "Sure.", interrupted=n == 0) for n in range(len(DEMO_LINES))]
    spoken = "Booked: a table for four at seven. Your reference is 1042."
    turns[2] = turn(2, spoken, tools_used=["book_table:ok"])
    result = CallResult(stream_sid="MZ1", call_sid="CA1", lines=[], hangup=True)
    assert demo_went_as_scripted(result, turns, [booking])
    assert not demo_went_as_scripted(result, turns, [])  # the booking never reached the service
    turns[2].tools_used = ["book_table:error"]
    assert not demo_went_as_scripted(result, turns, [booking])  # the tool call failed
    turns[2].tools_used, turns[2].reply_heard = ["book_table:ok"], "Booked."
    assert not demo_went_as_scripted(result, turns, [booking])  # its result was not spoken
    assert demo_went_as_scripted(result, turns, None)  # a --config without book_table is not asked to book
